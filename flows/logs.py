"""The logs flow: ``python -m bytewax.run flows.logs``."""

from events.registry import LOGS
from flows.pipeline import flow_from_environment

__all__ = ["flow"]

flow = flow_from_environment(LOGS)
