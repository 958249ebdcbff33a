"""The orders flow: ``python -m bytewax.run flows.orders``."""

from events.registry import ORDERS
from flows.pipeline import flow_from_environment

__all__ = ["flow"]

flow = flow_from_environment(ORDERS)
