"""The clicks flow: ``python -m bytewax.run flows.clicks``."""

from events.registry import CLICKS
from flows.pipeline import flow_from_environment

__all__ = ["flow"]

flow = flow_from_environment(CLICKS)
