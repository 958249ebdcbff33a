"""The foundation every layer stands on: errors, clock, logging, metrics, memory, faults.

Nothing here imports another package of the project.
"""
