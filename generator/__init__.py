"""Deterministic synthetic ``orders``, ``clicks`` and ``logs`` events, and a Kafka producer.

Generation is pure: the same arguments give the same records, byte for byte,
on every machine (no wall clock, no global random state). Each record is one
Kafka message: its key is the ``order_id``,
``session_id`` or ``service`` and its value an orjson-encoded JSON object, or,
for the malformed share, bytes that the flow must dead-letter.

The workflow per order: ``OrderPlaced``, ``StockReserved``, then either
``PaymentAuthorized``, ``StockDecreased``, ``PurchaseOrderSubmitted`` and one
``CustomerNotified`` per channel (email, then SMS), or ``PaymentFailed``,
``CustomerNotified`` (email), ``FinanceAlerted`` and ``StockReleased``. The
events of up to 16 concurrent orders are interleaved; each order's events keep
their workflow order and ``occurred_at`` never goes backwards.

:func:`generate_stream_records` adds the clicks and logs of the same shop,
derived from the orders so that they join on ``customer_id``/``user_id``,
``sku`` and ``order_id``: every ``OrderPlaced`` follows a click session of its
customer that put its SKUs in the cart and started checkout, and every
``PaymentFailed`` comes with a burst of ``ERROR`` lines from ``payments``.

One module per concern: :mod:`.records` (the record, the summary, the mix of
valid, duplicate and malformed records), :mod:`.malformed` (the kinds of bad
input), :mod:`.orders`, :mod:`.clicks`, :mod:`.log_lines` (the three streams),
:mod:`.timeline` (what clicks and logs are derived from), :mod:`.streams`
(all three together), :mod:`.producer` and :mod:`.progress` (producing to Kafka).
"""

from generator.log_lines import LOG_SERVICES
from generator.malformed import DEFAULT_MALFORMED_CLASSES, STREAM_MALFORMED_CLASSES
from generator.orders import DEFAULT_START, generate_order_records
from generator.producer import (
    PRODUCER_DEFAULTS,
    ProduceReport,
    ProduceTimeoutError,
    produce_records,
)
from generator.records import (
    GeneratedRecord,
    GenerationSummary,
    RecordKind,
    summarize,
)
from generator.streams import (
    generate_click_records,
    generate_log_records,
    generate_stream_records,
)

__all__ = [
    "DEFAULT_MALFORMED_CLASSES",
    "DEFAULT_START",
    "LOG_SERVICES",
    "PRODUCER_DEFAULTS",
    "STREAM_MALFORMED_CLASSES",
    "GeneratedRecord",
    "GenerationSummary",
    "ProduceReport",
    "ProduceTimeoutError",
    "RecordKind",
    "generate_click_records",
    "generate_log_records",
    "generate_order_records",
    "generate_stream_records",
    "produce_records",
    "summarize",
]
