"""Handlers of events: EventBridge-style rules that route each event to its targets."""

from __future__ import annotations

from handlers.rules import Explanation, Match, Rule, RuleError, RuleSet, load_event, parse_event

__all__ = ["Explanation", "Match", "Rule", "RuleError", "RuleSet", "load_event", "parse_event"]
