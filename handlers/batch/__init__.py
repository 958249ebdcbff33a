"""Batch handlers: a processor called once per committed batch, with that batch's rows.

What Kinesis-to-Lambda with a batch window, or Firehose delivering to an HTTP
endpoint, does: the flow announces each committed batch (see
``sinks.batch_announcements``), and a batch worker per ``[batch_handlers.<name>]``
table of the handlers file reads the announcement, reads exactly that batch's
rows from the lake and calls the handler, idempotently by batch id.
"""
