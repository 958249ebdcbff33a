"""Event rules: EventBridge-style patterns, compiled once, matched on event dicts.

A rule is a name, a pattern and the targets an event goes to when the pattern
matches it. The pattern language is Amazon EventBridge's, as its user guide
describes it ("Amazon EventBridge event patterns", "Content filtering in
Amazon EventBridge event patterns", "Arrays in Amazon EventBridge event
patterns", "Matching null values and empty strings"):

* A pattern is a JSON object with the structure of the events it matches.
  Every field it names must match (AND); fields it does not name are ignored.
* A leaf is a non-empty list of match values; the field matches if any of them
  does (OR). A match value is an exact value (string, number, ``true``,
  ``false``, ``null``) or an object with one operator: ``prefix`` and
  ``suffix`` (a string, or ``{"equals-ignore-case": string}``),
  ``equals-ignore-case``, ``wildcard`` (``*`` only, ``\\*`` and ``\\\\``
  escape), ``anything-but`` (a string or number, a list of only strings or
  only numbers, or ``{"prefix" | "suffix" | "equals-ignore-case" |
  "wildcard": string or list of strings}``), ``numeric`` (``["=", x]`` or up
  to two bounds, lower then upper: ``[">", 0, "<=", 5]``), ``exists`` and
  ``cidr``.
* ``"$or": [pattern, pattern, ...]`` (two or more) at any level matches if any
  branch matches the same object.
* Arrays in the event: a leaf matches if any element matches; a nested
  pattern on an array of objects must match one element as a whole, so two
  fields never match in two different elements (EventBridge's array-consistent
  matching).
* ``null`` and ``""`` are different values; ``[null]`` matches only ``null``.

Where the user guide is silent or says otherwise, AWS's behaviour (what its
TestEventPattern API answers) is the reference; tests/unit/test_rules_conformance.py
holds those answers. Where neither says, or a Python dict cannot carry what
JSON text does, this module decides as follows:

* Numbers are IEEE 754 doubles, as in EventBridge. Exact values and
  ``anything-but`` compare numbers by value: ``[300]`` matches ``300.0`` and
  ``3e2`` (the guide says they differ; AWS matches them). A number a double
  cannot hold as written (more than 17 significant digits) matches only its
  own literal, so :func:`parse_event` parses floats as
  :class:`~decimal.Decimal`, which keeps it. Strings stay strings: ``["300"]``
  does not match the number 300.
* A number of a pattern beyond a double's range (``1e309``, ``2.0e422``) or
  so small that it reads as 0 (``1e-325``) is refused at load, as AWS does; so
  is an operand of ``numeric`` or ``anything-but`` that a double cannot hold
  as written (``0.30000000000000001``). ``numeric`` then compares exactly.
* EventBridge's ``numeric`` only reads JSON numbers, and so do we by default.
  Our money is a decimal string (``"1569.01"``): with ``decimal_strings`` on,
  ``numeric`` also reads strings that are plain decimal literals
  (``-?digits[.digits]``, ASCII). Exact values and ``anything-but`` never
  change: ``["20.00"]`` is a string match.
* A field whose value is an object, an empty array or an array of objects
  only is not a leaf: it does not exist for ``exists`` (the guide's
  ``c-count`` example) and matches no other condition.
* ``anything-but`` needs the field: an absent field matches only
  ``{"exists": false}``. ``null`` is a value, so ``anything-but`` matches it.
* ``equals-ignore-case`` compares :meth:`str.lower` of both sides.
* Field names are joined with ``"."``, as EventBridge does: the pattern
  ``{"detail": {"state.status": ["running"]}}`` is ``{"detail": {"state":
  {"status": ["running"]}}}``, and an event key ``"state.status"`` is the same
  field as ``"state": {"status": ...}``. An event that has both holds two
  values for the field (either may match). A pattern that names one path twice
  (dotted and nested) uses the later one, as for a repeated key.
* ``"$or"`` is always the operator, never a field name. An operator name
  (``numeric``, ``prefix``, ``=``, ...) as a field name inside ``$or`` is
  refused, as AWS does: ``{"$or": [{"numeric": [">", 0]}, ...]}`` under a
  field is a condition without its field and would never match. Elsewhere an
  object made only of operator names (``{"price": {"numeric": [...]}}``) is
  refused for the same reason; a field really named like an operator is
  written with its parent, ``"price.numeric"``.
* A ``wildcard`` value holds at most five ``*`` (escaped ``\\*`` do not
  count), besides AWS's rule against consecutive ``**``. AWS refuses rules
  whose wildcards make its matcher "too complex" (for example
  ``*:*:*:*:*:event-bus/*``) without publishing the limit; ours is a fixed
  count. Our wildcard test runs in linear time whatever the value, so the
  limit is for portability to EventBridge, not speed.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson

from foundation.errors import ConfigError, TerminalError

__all__ = [
    "Explanation",
    "Match",
    "Rule",
    "RuleError",
    "RuleSet",
    "load_event",
    "parse_event",
]


class RuleError(ConfigError):
    """A rule, or the file holding it, is malformed; the message names the rule and the reason."""


# --- loading -------------------------------------------------------------------------------

_RULE_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FILE_KEYS: Final = ("decimal_strings", "rules")
_RULE_KEYS: Final = ("name", "description", "targets", "pattern")


def parse_event(text: str | bytes) -> dict[str, Any]:
    """Parse one event (a JSON object), floats as :class:`~decimal.Decimal`.

    Decimal keeps the literal of a number (``300.0`` is not ``3.0e2``), which
    exact matching compares, as EventBridge does.

    Raises:
        TerminalError: The text is not JSON, or not a JSON object.
    """
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except ValueError as exc:
        message = f"not valid JSON: {exc}"
        raise TerminalError(message) from None
    if not isinstance(value, dict):
        message = f"an event is a JSON object, got {_type_name(value)}"
        raise TerminalError(message)
    return value


def load_event(path: Path | str) -> dict[str, Any]:
    """Read one event from a JSON file with :func:`parse_event`.

    Raises:
        TerminalError: The file cannot be read or holds no JSON object; the
            message starts with the path.
    """
    try:
        data = Path(path).read_bytes()
        return parse_event(data)
    except OSError as exc:
        message = f"{path}: cannot read the event: {exc.strerror or exc}"
        raise TerminalError(message) from None
    except TerminalError as exc:
        message = f"{path}: {exc}"
        raise TerminalError(message) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# --- the rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    """Whether a rule matched an event, and why.

    On a match, ``reasons`` has one line per condition that held (which field,
    which value, which condition); otherwise it has the first condition that
    failed.
    """

    matched: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Rule:
    """An event pattern and the targets of the events it matches.

    The pattern is validated and compiled once, here; matching never parses
    it again. Rules compare by identity.

    Attributes:
        name: 1 to 64 of ``A-Z a-z 0-9 . _ -`` (EventBridge's rule names).
        pattern: The EventBridge-style pattern (a deep copy is kept).
        targets: Names of the targets (topics, handlers), at least one, no repeats.
        description: Free text for people.
        decimal_strings: Let ``numeric`` also read decimal strings such as
            ``"1569.01"`` (see the module docstring).

    Raises:
        RuleError: On a bad name, bad targets or a malformed pattern; the
            message is ``rule 'NAME': pattern.PATH: REASON``.
    """

    name: str
    pattern: Mapping[str, Any]
    targets: tuple[str, ...]
    description: str = ""
    decimal_strings: bool = False
    _matcher: _Object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _RULE_NAME.fullmatch(self.name):
            message = f"rule {self.name!r}: a name is 1 to 64 letters, digits, '.', '_' or '-'"
            raise RuleError(message)
        label = f"rule {self.name!r}"
        targets = self.targets
        if (
            isinstance(targets, str)
            or not isinstance(targets, Sequence)
            or not targets
            or not all(isinstance(t, str) and t.strip() for t in targets)
        ):
            message = f"{label}: targets must be a non-empty list of non-empty names"
            raise RuleError(message)
        repeated = sorted({t for t in targets if list(targets).count(t) > 1})
        if repeated:
            message = f"{label}: target {repeated[0]!r} is listed twice"
            raise RuleError(message)
        if not isinstance(self.description, str):
            message = f"{label}: description must be a string"
            raise RuleError(message)
        if not isinstance(self.decimal_strings, bool):
            message = f"{label}: decimal_strings must be true or false"
            raise RuleError(message)
        try:
            matcher = _Compiler(self.decimal_strings).pattern(self.pattern)
        except _Malformed as exc:
            message = f"{label}: {exc.path}: {exc.reason}"
            raise RuleError(message) from None
        object.__setattr__(self, "targets", tuple(targets))
        object.__setattr__(self, "pattern", copy.deepcopy(self.pattern))
        object.__setattr__(self, "_matcher", matcher)

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether the pattern matches ``event`` (a decoded JSON object). Never raises."""
        return self._matcher.test(_as_event(event))

    def explain(self, event: Mapping[str, Any]) -> Explanation:
        """Whether the pattern matches ``event``, with the reasons. Never raises."""
        matched, reasons = self._matcher.explain(_as_event(event), "")
        return Explanation(matched, tuple(reasons))


@dataclass(frozen=True)
class Match:
    """A rule that matched an event, and why (one line per condition that held)."""

    rule: Rule
    reasons: tuple[str, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets of the rule."""
        return self.rule.targets


class RuleSet:
    """Rules with unique names, in file order; matches an event against all of them.

    Raises:
        RuleError: Two rules share a name.
    """

    __slots__ = ("_by_value", "_guarded", "_index_key", "_probes", "_rules", "_tests", "_unindexed")

    def __init__(self, rules: Iterable[Rule]) -> None:
        listed = tuple(rules)
        seen: set[str] = set()
        for rule in listed:
            if rule.name in seen:
                message = f"rule {rule.name!r} is defined twice"
                raise RuleError(message)
            seen.add(rule.name)
        self._rules = listed
        # Dotted keys of the event that any rule reads (see _Object): looked up once
        # per event here rather than once per rule.
        self._probes = tuple(sorted({p for rule in listed for p in rule._matcher.probes}))
        self._tests = tuple((rule, rule._matcher.plain_test) for rule in listed)
        # For matching_rules_json: each rule's top-level fields and its guard (a
        # field with only exact strings, checked before the rule's own test).
        self._guarded = tuple(
            (rule, test, *_guard_of(rule._matcher), _top_level_keys(rule._matcher))
            for rule, test in self._tests
        )
        # Indexed by the field most guards name (event_type, typically): one
        # lookup picks the few rules an event's value there can satisfy.
        guard_keys = [entry[2] for entry in self._guarded if entry[3] is not None]
        self._index_key = max(set(guard_keys), key=guard_keys.count) if guard_keys else ""
        self._unindexed = tuple(
            entry for entry in self._guarded if entry[3] is None or entry[2] != self._index_key
        )
        values = {
            value
            for entry in self._guarded
            if entry[2] == self._index_key
            for value in entry[3] or ()
        }
        self._by_value = {
            value: tuple(
                entry
                for entry in self._guarded
                if entry in self._unindexed or value in (entry[3] or ())
            )
            for value in values
        }

    @classmethod
    def load(cls, path: Path | str) -> RuleSet:
        """Load and compile the rules of a ``.toml`` or ``.json`` file.

        The file has an optional ``decimal_strings`` (bool, for every rule) and
        a non-empty ``rules`` list of tables with ``name``, ``targets``,
        ``pattern`` and an optional ``description``. In TOML, ``pattern`` is a
        table or a string of JSON (TOML has no ``null``); in JSON, an object.

        Raises:
            RuleError: The file cannot be read or parsed, has unknown keys, or
                holds a malformed rule; the message starts with the path, then
                names the rule and the reason.
        """
        source = Path(path)
        suffix = source.suffix.lower()
        if suffix not in (".toml", ".json"):
            message = f"{source}: rules files are .toml or .json, got {source.name!r}"
            raise RuleError(message)
        try:
            data = source.read_bytes()
        except OSError as exc:
            message = f"{source}: cannot read the rules: {exc.strerror or exc}"
            raise RuleError(message) from None
        try:
            if suffix == ".toml":
                # Decimal keeps a number's literal, so a refusal can name it (1e309, not inf).
                document: Any = tomllib.loads(data.decode("utf-8"), parse_float=Decimal)
            else:
                document = json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            message = f"{source}: not valid {suffix[1:].upper()}: {exc}"
            raise RuleError(message) from None
        try:
            return cls.from_document(document)
        except RuleError as exc:
            message = f"{source}: {exc}"
            raise RuleError(message) from None

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RuleSet:
        """Compile the rules of a parsed rules file (see :meth:`load` for its shape).

        Raises:
            RuleError: Unknown keys, no rules or a malformed rule.
        """
        if not isinstance(document, Mapping):
            message = f"a rules file is a table of settings and rules, got {_type_name(document)}"
            raise RuleError(message)
        unknown = sorted(set(document) - set(_FILE_KEYS))
        if unknown:
            message = f"unknown top-level key {unknown[0]!r}; expected {', '.join(_FILE_KEYS)}"
            raise RuleError(message)
        decimal_strings = document.get("decimal_strings", False)
        if not isinstance(decimal_strings, bool):
            message = "decimal_strings must be true or false"
            raise RuleError(message)
        entries = document.get("rules")
        if not isinstance(entries, list) or not entries:
            message = "no rules: add at least one [[rules]] table with name, targets and pattern"
            raise RuleError(message)
        return cls(_rule_from_entry(entry, n, decimal_strings) for n, entry in enumerate(entries))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in file order."""
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules)

    def matching_rules(self, event: Mapping[str, Any]) -> list[Rule]:
        """The rules whose pattern matches ``event``, in file order, without reasons (fast)."""
        event = _view(_as_event(event), self._probes)
        return [rule for rule, test in self._tests if test(event)]

    def matching_rules_json(self, value: bytes) -> list[Rule]:
        """``matching_rules(parse_event(value))``, several times faster on a stream of events.

        The value is parsed by orjson. A rule whose pattern has a top-level
        field of exact strings only (``"event_type": ["OrderPlaced"]``) is
        skipped at once when the event's value there is another string; the
        others are tested on orjson's event, which equals :func:`parse_event`'s
        as long as the fields they read hold no float. A float there, a dotted
        key a rule could read, or a value orjson refuses sends the event down
        the slow path, so the answer is always the slow path's.

        Raises:
            TerminalError: As :func:`parse_event`: not JSON, or not an object.
        """
        try:
            event = orjson.loads(value)
        except orjson.JSONDecodeError:
            event = None  # parse_event says why, or reads what orjson refuses (huge ints)
        if type(event) is not dict or any(probe in event for probe in self._probes):
            return self.matching_rules(parse_event(value))
        held = event.get(self._index_key)
        if type(held) is str:
            candidates = self._by_value.get(held, self._unindexed)
        elif type(held) is list:
            candidates = self._guarded
        else:
            candidates = self._unindexed
        found: list[Rule] = []
        for rule, test, guard_key, allowed, keys in candidates:
            if allowed is not None:
                held = event.get(guard_key)
                if type(held) is str:
                    if held not in allowed:
                        continue
                elif type(held) is not list:
                    continue  # absent, null, a number or an object: no exact string matches
            if any(_holds_float(event.get(key)) for key in keys):
                # orjson reads 300.0 as a float; parse_event keeps its literal (Decimal).
                return self.matching_rules(parse_event(value))
            if test(event):
                found.append(rule)
        return found

    def targets(self, event: Mapping[str, Any]) -> list[str]:
        """The targets of every matching rule, each once, in file order."""
        found: dict[str, None] = {}
        for rule in self.matching_rules(event):
            found.update(dict.fromkeys(rule.targets))
        return list(found)

    def match(self, event: Mapping[str, Any]) -> list[Match]:
        """The matching rules with the reasons they match, in file order. Never raises."""
        return [Match(rule, rule.explain(event).reasons) for rule in self.matching_rules(event)]

    def explain(self, event: Mapping[str, Any]) -> list[tuple[Rule, Explanation]]:
        """Every rule with whether it matches ``event`` and why (or why not)."""
        return [(rule, rule.explain(event)) for rule in self._rules]

    def report(self, event: Mapping[str, Any], *, misses: bool = False) -> str:
        """A plain-text report of which rules match and why, for ``streambatch rules test``.

        Args:
            event: The decoded event.
            misses: Also list the rules that do not match, with the first
                condition that failed.
        """
        verdicts = self.explain(event)
        hits = [(rule, why) for rule, why in verdicts if why.matched]
        lines = [f"{len(hits)} of {len(verdicts)} rules match"]
        for rule, why in hits:
            lines.append(f"  {rule.name} -> {', '.join(rule.targets)}")
            lines.extend(f"      {reason}" for reason in why.reasons)
        if misses:
            for rule, why in verdicts:
                if not why.matched:
                    lines.append(f"  {rule.name}: no match")
                    lines.extend(f"      {reason}" for reason in why.reasons)
        return "\n".join(lines)


def _guard_of(matcher: _Object) -> tuple[str, frozenset[str] | None]:
    """The first top-level field of exact strings only, and its strings (None if none)."""
    for part in matcher.parts:
        if isinstance(part, _Field) and part.strings is not None:
            return part.key, part.strings
    return "", None


def _top_level_keys(matcher: _Object) -> tuple[str, ...]:
    """The event's top-level fields a pattern reads."""
    return tuple(sorted({path[0] for path in matcher.paths}))


def _holds_float(value: Any) -> bool:
    """Whether a float is anywhere inside ``value`` (lists and objects are searched)."""
    kind = type(value)
    if kind is float:
        return True
    if kind is list:
        return any(_holds_float(item) for item in value)
    if kind is dict:
        return any(_holds_float(item) for item in value.values())
    return False


def _as_event(event: Any) -> Mapping[str, Any]:
    # An event that is not an object has no fields (and matching never raises).
    if type(event) is dict or isinstance(event, Mapping):
        return event
    return _EMPTY


def _rule_from_entry(entry: Any, index: int, decimal_strings: bool) -> Rule:
    if not isinstance(entry, Mapping):
        message = f"rule #{index + 1}: must be a table, got {_type_name(entry)}"
        raise RuleError(message)
    name = entry.get("name")
    label = f"rule {name!r}" if isinstance(name, str) else f"rule #{index + 1}"
    if not isinstance(name, str):
        message = f"{label}: needs a name (a string)"
        raise RuleError(message)
    unknown = sorted(set(entry) - set(_RULE_KEYS))
    if unknown:
        message = f"{label}: unknown key {unknown[0]!r}; expected {', '.join(_RULE_KEYS)}"
        raise RuleError(message)
    if "pattern" not in entry:
        message = f"{label}: needs a pattern"
        raise RuleError(message)
    if "targets" not in entry:
        message = f"{label}: needs targets (a list of target names)"
        raise RuleError(message)
    pattern = entry["pattern"]
    if isinstance(pattern, str):
        try:
            pattern = json.loads(pattern, parse_float=Decimal, parse_constant=_refuse_constant)
        except ValueError as exc:
            message = f"{label}: pattern: not valid JSON: {exc}"
            raise RuleError(message) from None
    targets = entry["targets"]
    return Rule(
        name=name,
        pattern=pattern,
        targets=tuple(targets) if isinstance(targets, list) else targets,
        description=entry.get("description", ""),
        decimal_strings=decimal_strings,
    )


# --- compiled matchers ---------------------------------------------------------------------
#
# A pattern compiles to a tree of small slotted objects: _Object (all parts
# must hold), _Field (a leaf list), _Nested (a nested object) and _Or. Each has
# test(obj) -> bool for the hot path and explain(obj, prefix) -> (bool,
# reasons) for people. Leaf conditions are closures built once.

_MISSING: Final = object()
_UNMATCHABLE: Final = object()
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_NULL_KEY: Final = ("null",)
_DECIMAL_LITERAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_NUMERIC_OPERATORS: Final = ("=", "<", "<=", ">", ">=")
_OPERATORS: Final = (
    "anything-but",
    "cidr",
    "equals-ignore-case",
    "exists",
    "numeric",
    "prefix",
    "suffix",
    "wildcard",
)
_ANYTHING_BUT_OPERATORS: Final = ("equals-ignore-case", "prefix", "suffix", "wildcard")
# EventBridge refuses these as field names inside "$or".
_RESERVED_IN_OR: Final = frozenset((*_OPERATORS, *_NUMERIC_OPERATORS))
# More '*' than this in one wildcard value is refused as too complex (see the module docstring).
_MAX_WILDCARDS: Final = 5

_ValueTest = Callable[[Any], bool]
_ObjectTest = Callable[[Mapping[str, Any]], bool]


def _exact_key(value: Any) -> Any:
    """The identity of a scalar for exact matching: strings as is, numbers by value.

    A number that a double holds exactly as written (``300``, ``300.0``,
    ``3e2``, ``0.1``) is keyed by its value, so all of those are equal, as in
    EventBridge; one that a double cannot hold (more than 17 significant
    digits) is keyed by its text. Python's numbers hash by value across
    ``int`` and ``Decimal``, which makes the key usable in a set.
    """
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return _NULL_KEY
    if kind is bool:
        return ("bool", value)
    if kind is int or kind is Decimal:
        return _number_key(value)
    if kind is float:
        return ("number", Decimal(repr(value))) if math.isfinite(value) else _UNMATCHABLE
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _number_key(int(value))
    if isinstance(value, float):
        return _exact_key(float(value))
    if isinstance(value, Decimal):
        return _number_key(value)
    return _UNMATCHABLE


_EXACT_INT: Final = 2**53


def _number_key(number: int | Decimal) -> Any:
    if type(number) is int and -_EXACT_INT <= number <= _EXACT_INT:
        return ("number", number)
    if _as_double(number) is not None:
        return ("number", number)
    if isinstance(number, Decimal) and not number.is_finite():
        return _UNMATCHABLE
    return ("text", str(number))


def _as_double(number: int | Decimal) -> float | None:
    """The double that holds ``number`` exactly as written, or None.

    "Exactly as written" is the test EventBridge's matcher applies: the
    shortest decimal form of the double equals the number (``0.1`` passes,
    ``0.30000000000000001`` and ``1e-325`` do not).
    """
    try:
        double = float(number)
    except OverflowError:
        return None
    if not math.isfinite(double) or Decimal(repr(double)) != number:
        return None
    return double


def _leaf_values(raw: Any) -> Sequence[Any]:
    """The scalar values of a field: () when absent or not a leaf; arrays flattened."""
    if type(raw) is str:
        return (raw,)
    if raw is _MISSING or isinstance(raw, Mapping):
        return ()
    if isinstance(raw, list | tuple):
        return [value for _, value in _walk_array(raw) if not isinstance(value, Mapping)]
    return (raw,)


def _walk_array(array: Sequence[Any]) -> Iterator[tuple[str, Any]]:
    """Elements of a (nested) array in order, with their index path; arrays are entered."""
    stack: list[tuple[str, Sequence[Any], int]] = [("", array, 0)]
    while stack:
        prefix, items, start = stack.pop()
        for position in range(start, len(items)):
            item = items[position]
            index = f"{prefix}[{position}]"
            if isinstance(item, list | tuple):
                stack.append((prefix, items, position + 1))
                stack.append((index, item, 0))
                break
            yield index, item


def _to_number(value: Any, decimal_strings: bool) -> Decimal | None:
    """The exact value of a JSON number (and of a decimal string if allowed), else None."""
    kind = type(value)
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value)) if math.isfinite(value) else None
    if kind is Decimal:
        return value if value.is_finite() else None
    if kind is str:
        if decimal_strings and _DECIMAL_LITERAL.fullmatch(value):
            return Decimal(value)
        return None
    if kind is bool or value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(repr(float(value)))
    return None


@dataclass(frozen=True)
class _Condition:
    text: str
    test: _ValueTest


class _Field:
    """A leaf list: the field matches if any condition holds for any of its values."""

    __slots__ = ("conditions", "if_absent", "key", "strings", "test")
    test: _ObjectTest

    def __init__(
        self,
        key: str,
        conditions: Sequence[_Condition],
        exact: frozenset[Any],
        tests: Sequence[_ValueTest],
        if_absent: bool,
        if_present: bool,
        strings: frozenset[str] | None = None,
    ) -> None:
        self.key = key
        self.conditions = tuple(conditions)
        self.if_absent = if_absent
        # Set when every match value is an exact string: a string value outside
        # it, or a value that is neither a string nor an array, cannot match.
        self.strings = strings
        self.test = _field_test(key, exact, tuple(tests), if_absent, if_present)

    def explain(self, obj: Mapping[str, Any], prefix: str) -> tuple[bool, list[str]]:
        name = prefix + self.key
        raw = obj.get(self.key, _MISSING)
        values = _leaf_values(raw)
        if not values:
            state = _absence(raw)
            if self.if_absent:
                return True, [f'{name} is {state}: matches {{"exists": false}}']
            return False, [f"{name} is {state}: needs {self._wanted()}"]
        for condition in self.conditions:
            for value in values:
                if condition.test(value):
                    return True, [f"{name} = {_show_value(value)}: matches {condition.text}"]
        shown = _show_value(values[0]) if len(values) == 1 else _show_values(values)
        return False, [f"{name} = {shown}: matches none of {self._wanted()}"]

    def _wanted(self) -> str:
        return "[" + ", ".join(c.text for c in self.conditions) + "]"


def _field_test(
    key: str,
    exact: frozenset[Any],
    tests: tuple[_ValueTest, ...],
    if_absent: bool,
    if_present: bool,
) -> _ObjectTest:
    missing = _MISSING

    def test(obj: Mapping[str, Any]) -> bool:
        raw = obj.get(key, missing)
        # Fast path: most fields are strings, whose exact key is the string itself.
        if type(raw) is str:
            if if_present or raw in exact:
                return True
            for value_test in tests:  # noqa: SIM110 - a loop beats any() over a generator
                if value_test(raw):
                    return True
            return False
        values = _leaf_values(raw)
        if not values:
            return if_absent
        if if_present:
            return True
        if exact:
            for value in values:
                if _exact_key(value) in exact:
                    return True
        for value_test in tests:
            for value in values:
                if value_test(value):
                    return True
        return False

    return test


class _Nested:
    """A nested object: matches the object, or one element of an array of objects."""

    __slots__ = ("inner", "key", "test")
    test: _ObjectTest

    def __init__(self, key: str, inner: _Object) -> None:
        self.key = key
        self.inner = inner
        self.test = _nested_test(key, inner.test)

    def explain(self, obj: Mapping[str, Any], prefix: str) -> tuple[bool, list[str]]:
        name = prefix + self.key
        raw = obj.get(self.key, _MISSING)
        if isinstance(raw, Mapping):
            return self.inner.explain(raw, name + ".")
        if isinstance(raw, list | tuple):
            first_failure: list[str] = []
            for index, element in _walk_array(raw):
                if isinstance(element, Mapping):
                    matched, reasons = self.inner.explain(element, f"{name}{index}.")
                    if matched:
                        return True, reasons
                    first_failure = first_failure or reasons
            if first_failure:
                return False, [f"no element of {name} matches as a whole; {first_failure[0]}"]
        return self.inner.explain(_EMPTY, name + ".")


def _nested_test(key: str, inner: _ObjectTest) -> _ObjectTest:
    missing = _MISSING
    # Constant: what the inner pattern says of an object with no fields.
    if_absent = inner(_EMPTY)

    def test(obj: Mapping[str, Any]) -> bool:
        raw = obj.get(key, missing)
        kind = type(raw)
        if kind is dict:
            return inner(raw)
        if kind is list:
            seen = False
            for element in raw:
                if type(element) is dict:
                    seen = True
                    if inner(element):
                        return True
                elif isinstance(element, Mapping | list | tuple):
                    return _nested_in_array(raw, inner, if_absent)
            return False if seen else if_absent
        if isinstance(raw, Mapping):
            return inner(raw)
        if isinstance(raw, list | tuple):
            return _nested_in_array(raw, inner, if_absent)
        return if_absent

    return test


def _nested_in_array(array: Sequence[Any], inner: _ObjectTest, if_absent: bool) -> bool:
    """The general case of an array under a nested pattern: nested arrays, other mappings."""
    seen = False
    for _, element in _walk_array(array):
        if isinstance(element, Mapping):
            seen = True
            if inner(element):
                return True
    return False if seen else if_absent


class _Or:
    """``$or``: any branch matches the same object."""

    __slots__ = ("branches", "test")
    test: _ObjectTest

    def __init__(self, branches: Sequence[_Object]) -> None:
        self.branches = tuple(branches)
        self.test = _any_test(tuple(branch.test for branch in self.branches))

    def explain(self, obj: Mapping[str, Any], prefix: str) -> tuple[bool, list[str]]:
        failures: list[str] = []
        count = len(self.branches)
        for number, branch in enumerate(self.branches, start=1):
            matched, reasons = branch.explain(obj, prefix)
            if matched:
                return True, [f"{prefix}$or branch {number} of {count}: {r}" for r in reasons]
            failures.append(reasons[0])
        return False, [f"{prefix}$or: no branch matches ({'; '.join(failures)})"]


class _Object:
    """A pattern object: every part (field, nested object, ``$or``) must match.

    ``probes`` are the dotted names (``"state.status"``) under which an event
    object could hold one of the pattern's paths; an object that has one is
    read through :func:`_unflatten` first, so that ``{"state.status": x}`` and
    ``{"state": {"status": x}}`` are the same field, as in EventBridge. Events
    without such keys pay one dictionary lookup per probe.
    """

    __slots__ = ("parts", "paths", "plain_test", "probes", "test")
    test: _ObjectTest
    plain_test: _ObjectTest

    def __init__(self, parts: Sequence[_Field | _Nested | _Or]) -> None:
        self.parts = tuple(parts)
        paths: set[tuple[str, ...]] = set()
        for part in self.parts:
            paths.update(_part_paths(part))
        self.paths = frozenset(paths)
        self.probes = tuple(
            sorted({".".join(path[:end]) for path in paths for end in range(2, len(path) + 1)})
        )
        # plain_test skips the probes: RuleSet checks the top-level ones once per event.
        self.plain_test = _all_test(tuple(part.test for part in self.parts))
        self.test = _with_probes(self.plain_test, self.probes) if self.probes else self.plain_test

    def explain(self, obj: Mapping[str, Any], prefix: str) -> tuple[bool, list[str]]:
        obj = _view(obj, self.probes)
        held: list[str] = []
        for part in self.parts:
            matched, reasons = part.explain(obj, prefix)
            if not matched:
                return False, reasons
            held.extend(reasons)
        return True, held


def _part_paths(part: _Field | _Nested | _Or) -> Iterator[tuple[str, ...]]:
    """The field paths a part reads, relative to its object."""
    if isinstance(part, _Field):
        yield (part.key,)
    elif isinstance(part, _Nested):
        yield (part.key,)
        for path in part.inner.paths:
            yield (part.key, *path)
    else:
        for branch in part.branches:
            yield from branch.paths


def _all_test(tests: tuple[_ObjectTest, ...]) -> _ObjectTest:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda obj: first(obj) and second(obj)

    def test(obj: Mapping[str, Any]) -> bool:
        # A plain loop: all() over a generator is slower on the hot path.
        for part in tests:  # noqa: SIM110
            if not part(obj):
                return False
        return True

    return test


def _with_probes(inner: _ObjectTest, probes: tuple[str, ...]) -> _ObjectTest:
    if len(probes) == 1:
        (probe,) = probes
        return lambda obj: inner(_unflatten(obj) if probe in obj else obj)

    def test(obj: Mapping[str, Any]) -> bool:
        for probe in probes:
            if probe in obj:
                return inner(_unflatten(obj))
        return inner(obj)

    return test


def _view(obj: Mapping[str, Any], probes: Sequence[str]) -> Mapping[str, Any]:
    """``obj``, or its :func:`_unflatten` copy if it has one of ``probes`` as a key."""
    for probe in probes:
        if probe in obj:
            return _unflatten(obj)
    return obj


def _unflatten(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with every dotted key split into nested objects.

    EventBridge joins field names with ``"."``, so ``{"a.b": 1}`` and
    ``{"a": {"b": 1}}`` hold the same field ``a.b``; when both are there, the
    field has both values (as if it were an array of them). An object merged
    into an array of objects joins each of its objects. The event is not changed.
    """
    view = dict(obj)
    for key in obj:
        if isinstance(key, str) and "." in key:
            value = view.pop(key)
            head, *rest = key.split(".")
            for segment in reversed(rest):
                value = {segment: value}
            view[head] = _merge(view.get(head, _MISSING), value)
    return view


def _merge(existing: Any, new: Any) -> Any:
    if existing is _MISSING:
        return new
    if isinstance(existing, Mapping) and isinstance(new, Mapping):
        merged = dict(existing)
        for key, value in new.items():
            merged[key] = _merge(merged.get(key, _MISSING), value)
        return merged
    if isinstance(existing, Mapping) and isinstance(new, list | tuple):
        existing, new = new, existing
    if (
        isinstance(existing, list | tuple)
        and isinstance(new, Mapping)
        and any(isinstance(element, Mapping) for element in existing)
    ):
        return [
            _merge(element, new) if isinstance(element, Mapping) else element
            for element in existing
        ]
    left = list(existing) if isinstance(existing, list | tuple) else [existing]
    right = list(new) if isinstance(new, list | tuple) else [new]
    return left + right


def _any_test(tests: tuple[_ObjectTest, ...]) -> _ObjectTest:
    def test(obj: Mapping[str, Any]) -> bool:
        # A plain loop: any() over a generator is slower on the hot path.
        for branch in tests:  # noqa: SIM110
            if branch(obj):
                return True
        return False

    return test


# --- the compiler --------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: where in the pattern and why; Rule turns it into a RuleError."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class _Slot:
    """One name of a pattern object: a leaf list, a nested object, or both ("a.b" and "a.b.c")."""

    __slots__ = ("leaf", "node")

    def __init__(self) -> None:
        self.leaf: tuple[Sequence[Any], str] | None = None
        self.node: _Node | None = None


class _Node:
    """A pattern object with its dotted names split into nested fields, before compiling."""

    __slots__ = ("ors", "slots")

    def __init__(self) -> None:
        self.slots: dict[str, _Slot] = {}
        self.ors: list[tuple[Any, str]] = []

    def slot(self, name: str) -> _Slot:
        found = self.slots.get(name)
        if found is None:
            found = self.slots[name] = _Slot()
        return found

    def child(self, name: str) -> _Node:
        slot = self.slot(name)
        if slot.node is None:
            slot.node = _Node()
        return slot.node


class _Compiler:
    __slots__ = ("decimal_strings",)

    def __init__(self, decimal_strings: bool) -> None:
        self.decimal_strings = decimal_strings

    def pattern(self, pattern: Any) -> _Object:
        return self._object(pattern, "pattern", in_or=False)

    def _object(self, pattern: Any, path: str, *, in_or: bool) -> _Object:
        node = _Node()
        self._gather(node, pattern, path, in_or=in_or)
        return self._compile(node)

    def _gather(self, node: _Node, pattern: Any, path: str, *, in_or: bool) -> None:
        """Add a pattern object to ``node``, splitting dotted names into nested fields."""
        if not isinstance(pattern, Mapping):
            raise _Malformed(path, f"must be an object of fields, got {_type_name(pattern)}")
        if not pattern:
            raise _Malformed(path, "is empty: name at least one field")
        self._check_field_names(pattern, path, in_or=in_or)
        for key, value in pattern.items():
            where = f"{path}.{key}"
            if not isinstance(key, str):
                raise _Malformed(where, "field names are strings")
            if key == "$or":
                node.ors.append((value, where))
                continue
            *parents, last = key.split(".")
            target = node
            for segment in parents:
                target = target.child(segment)
            if isinstance(value, Mapping):
                self._gather(target.child(last), value, where, in_or=in_or)
            elif isinstance(value, list | tuple):
                # The same path twice ("a.b" and "a": {"b"}): the last one is used,
                # as EventBridge does with a repeated key.
                target.slot(last).leaf = (value, where)
            else:
                reason = (
                    f"must be a list of match values or a nested object, got {_describe(value)}"
                )
                raise _Malformed(where, reason)

    def _check_field_names(self, pattern: Mapping[Any, Any], path: str, *, in_or: bool) -> None:
        # Inside $or, EventBridge refuses an operator name as a field name: a
        # branch like {"numeric": [">", 0]} is a condition that lost its field
        # and would never match. Elsewhere an object made only of operator names
        # is the same mistake (an operator object outside its field's array).
        names = [key for key in pattern if isinstance(key, str)]
        if in_or:
            reserved = [key for key in names if key in _RESERVED_IN_OR]
            if reserved:
                name = reserved[0]
                reason = (
                    f"{name!r} is an operator, not a field name: each $or branch is a pattern "
                    "of fields; for any of several conditions on one field, list them in the "
                    f'field\'s array: "field": [{{"{name}": ...}}, ...]'
                )
                raise _Malformed(f"{path}.{name}", reason)
        elif names and len(names) == len(pattern) and all(key in _OPERATORS for key in names):
            name = names[0]
            reason = (
                f"{name!r} is an operator, not a field name: an operator object goes in the "
                f'field\'s array, "field": [{{"{name}": ...}}]; a field really named {name!r} '
                f'is written with its parent, "parent.{name}"'
            )
            raise _Malformed(f"{path}.{name}", reason)

    def _compile(self, node: _Node) -> _Object:
        fields: list[_Field | _Nested | _Or] = []
        nested: list[_Field | _Nested | _Or] = []
        alternatives: list[_Field | _Nested | _Or] = []
        for segment, slot in node.slots.items():
            if slot.leaf is not None:
                values, where = slot.leaf
                fields.append(self._field(segment, values, where))
            if slot.node is not None:
                nested.append(_Nested(segment, self._compile(slot.node)))
        for value, where in node.ors:
            alternatives.append(self._or(value, where))
        # Cheap leaf tests first; the result does not depend on the order.
        return _Object(fields + nested + alternatives)

    def _or(self, value: Any, path: str) -> _Or:
        if not isinstance(value, list | tuple) or len(value) < 2:
            reason = f"$or must be a list of at least two patterns, got {_describe(value)}"
            raise _Malformed(path, reason)
        return _Or(
            [self._object(branch, f"{path}[{n}]", in_or=True) for n, branch in enumerate(value)]
        )

    def _field(self, key: str, values: Sequence[Any], path: str) -> _Field:
        if not values:
            raise _Malformed(path, "empty list: give at least one match value")
        conditions: list[_Condition] = []
        exact: set[Any] = set()
        tests: list[_ValueTest] = []
        if_absent = False
        if_present = False
        for value in values:
            if isinstance(value, Mapping):
                operator, argument = self._operator(value, path)
                if operator == "exists":
                    if argument is True:
                        if_present = True
                        conditions.append(_Condition('{"exists": true}', _always))
                    else:
                        if_absent = True
                        conditions.append(_Condition('{"exists": false}', _never))
                    continue
                test = self._condition(operator, argument, path)
                tests.append(test)
                conditions.append(_Condition(_show_pattern(value), test))
            else:
                self._check_scalar(value, path)
                key_of_value = _exact_key(value)
                exact.add(key_of_value)
                conditions.append(_Condition(_show_pattern(value), _equals(key_of_value)))
        strings = frozenset(values) if all(isinstance(value, str) for value in values) else None
        return _Field(key, conditions, frozenset(exact), tests, if_absent, if_present, strings)

    def _operator(self, value: Mapping[str, Any], path: str) -> tuple[str, Any]:
        if len(value) != 1:
            keys = ", ".join(repr(k) for k in value) or "none"
            reason = f"an operator object has exactly one operator, got {keys}"
            raise _Malformed(path, reason)
        ((operator, argument),) = value.items()
        if operator not in _OPERATORS:
            reason = f"unknown operator {operator!r}; known: {', '.join(_OPERATORS)}"
            raise _Malformed(path, reason)
        if operator == "exists" and not isinstance(argument, bool):
            raise _Malformed(path, f"exists takes true or false, got {_describe(argument)}")
        return operator, argument

    def _check_scalar(self, value: Any, path: str) -> None:
        if value is None or isinstance(value, str | bool):
            return
        if isinstance(value, int | float | Decimal):
            problem = _double_problem(value)
            if problem:
                raise _Malformed(path, problem)
            return
        reason = (
            "match values are strings, numbers, true, false, null or operator objects, "
            f"got {_describe(value)}"
        )
        raise _Malformed(path, reason)

    def _check_exact_double(self, number: int | float | Decimal, operator: str, path: str) -> None:
        # EventBridge compares these as doubles and refuses a number a double
        # cannot hold as written; so do we, rather than compare it differently.
        if isinstance(number, float) or _as_double(number) is not None:
            return
        reason = (
            f"{operator}: {_render(number)} has more significant digits than a double holds "
            "(EventBridge compares numbers as IEEE 754 doubles)"
        )
        raise _Malformed(path, reason)

    def _condition(self, operator: str, argument: Any, path: str) -> _ValueTest:
        if operator in ("prefix", "suffix"):
            return self._affix(operator, argument, path)
        if operator == "equals-ignore-case":
            return _equals_ignore_case(self._string(operator, argument, path))
        if operator == "wildcard":
            return _wildcard(self._string(operator, argument, path), path)
        if operator == "anything-but":
            return self._anything_but(argument, path)
        if operator == "numeric":
            return self._numeric(argument, path)
        return self._cidr(argument, path)

    def _string(self, operator: str, argument: Any, path: str) -> str:
        if not isinstance(argument, str):
            raise _Malformed(path, f"{operator} takes a string, got {_describe(argument)}")
        return argument

    def _affix(self, operator: str, argument: Any, path: str) -> _ValueTest:
        ends = operator == "suffix"
        if isinstance(argument, str):
            return _affix_test(argument, ends, ignore_case=False)
        if (
            isinstance(argument, Mapping)
            and len(argument) == 1
            and isinstance(argument.get("equals-ignore-case"), str)
        ):
            return _affix_test(argument["equals-ignore-case"], ends, ignore_case=True)
        reason = (
            f'{operator} takes a string or {{"equals-ignore-case": string}}, '
            f"got {_describe(argument)}"
        )
        raise _Malformed(path, reason)

    def _anything_but(self, argument: Any, path: str) -> _ValueTest:
        if isinstance(argument, Mapping):
            return self._anything_but_operator(argument, path)
        items = list(argument) if isinstance(argument, list | tuple) else [argument]
        if not items:
            raise _Malformed(path, "anything-but takes a non-empty list")
        strings = all(isinstance(item, str) for item in items)
        numbers = all(
            isinstance(item, int | float | Decimal) and not isinstance(item, bool) for item in items
        )
        if not (strings or numbers):
            reason = (
                "anything-but takes a string, a number, a list of only strings or of only "
                f"numbers, or an operator object; got {_describe(argument)}"
            )
            raise _Malformed(path, reason)
        for item in items:
            self._check_scalar(item, path)
            if numbers:
                self._check_exact_double(item, "anything-but", path)
        return _not_in(frozenset(_exact_key(item) for item in items))

    def _anything_but_operator(self, argument: Mapping[str, Any], path: str) -> _ValueTest:
        if len(argument) != 1 or next(iter(argument)) not in _ANYTHING_BUT_OPERATORS:
            keys = ", ".join(repr(k) for k in argument) or "none"
            reason = f"anything-but takes one of {', '.join(_ANYTHING_BUT_OPERATORS)}, got {keys}"
            raise _Malformed(path, reason)
        ((operator, value),) = argument.items()
        texts = list(value) if isinstance(value, list | tuple) else [value]
        if not texts or not all(isinstance(text, str) for text in texts):
            reason = (
                f"anything-but {operator} takes a string or a non-empty list of strings, "
                f"got {_describe(value)}"
            )
            raise _Malformed(path, reason)
        if operator in ("prefix", "suffix") and "" in texts:
            raise _Malformed(path, f"anything-but {operator} must not be empty")
        tests: list[_ValueTest]
        if operator == "equals-ignore-case":
            tests = [_equals_ignore_case(text) for text in texts]
        elif operator == "wildcard":
            tests = [_wildcard(text, path) for text in texts]
        else:
            tests = [_affix_test(text, operator == "suffix", ignore_case=False) for text in texts]
        return _none_of(tuple(tests))

    def _numeric(self, argument: Any, path: str) -> _ValueTest:
        if not isinstance(argument, list | tuple) or not argument:
            reason = f'numeric takes a list such as [">", 0, "<=", 5], got {_describe(argument)}'
            raise _Malformed(path, reason)
        if len(argument) % 2:
            reason = "numeric range needs an even list of operator/value pairs"
            raise _Malformed(path, reason)
        if len(argument) > 4:
            raise _Malformed(path, "numeric takes at most two operator/value pairs")
        pairs: list[tuple[str, Decimal]] = []
        for position in range(0, len(argument), 2):
            operator, value = argument[position], argument[position + 1]
            if operator not in _NUMERIC_OPERATORS:
                reason = (
                    f"numeric: unknown operator {_describe(operator)}; "
                    f"use {', '.join(_NUMERIC_OPERATORS)}"
                )
                raise _Malformed(path, reason)
            number = _pattern_number(value)
            if number is None:
                reason = f"numeric: {operator!r} needs a finite number, got {_describe(value)}"
                raise _Malformed(path, reason)
            self._check_scalar(value, path)
            self._check_exact_double(number, "numeric", path)
            pairs.append((operator, number))
        decimal_strings = self.decimal_strings
        if len(pairs) == 1:
            operator, bound = pairs[0]
            return _numeric_test(operator, bound, decimal_strings)
        (low_op, low), (high_op, high) = pairs
        if low_op not in (">", ">=") or high_op not in ("<", "<="):
            reason = "numeric: a range is a lower bound ('>' or '>=') then an upper ('<' or '<=')"
            raise _Malformed(path, reason)
        if low >= high:
            reason = f"numeric: the lower bound {low} must be below the upper bound {high}"
            raise _Malformed(path, reason)
        return _range_test(low, low_op == ">=", high, high_op == "<=", decimal_strings)

    def _cidr(self, argument: Any, path: str) -> _ValueTest:
        text = self._string("cidr", argument, path)
        if "/" not in text:
            raise _Malformed(path, f"cidr needs ADDRESS/BITS, got {text!r}")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as exc:
            raise _Malformed(path, f"cidr: {exc}") from None
        return _cidr_test(network)


# --- leaf tests (closures) -----------------------------------------------------------------


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _equals(key: Any) -> _ValueTest:
    def test(value: Any) -> bool:
        return _exact_key(value) == key

    return test


def _not_in(keys: frozenset[Any]) -> _ValueTest:
    def test(value: Any) -> bool:
        return _exact_key(value) not in keys

    return test


def _none_of(tests: tuple[_ValueTest, ...]) -> _ValueTest:
    def test(value: Any) -> bool:
        return not any(inner(value) for inner in tests)

    return test


def _affix_test(text: str, ends: bool, *, ignore_case: bool) -> _ValueTest:
    if ignore_case:
        lowered = text.lower()
        if ends:
            return lambda value: isinstance(value, str) and value.lower().endswith(lowered)
        return lambda value: isinstance(value, str) and value.lower().startswith(lowered)
    if ends:
        return lambda value: isinstance(value, str) and value.endswith(text)
    return lambda value: isinstance(value, str) and value.startswith(text)


def _equals_ignore_case(text: str) -> _ValueTest:
    lowered = text.lower()
    return lambda value: isinstance(value, str) and value.lower() == lowered


def _wildcard(text: str, path: str) -> _ValueTest:
    """Compile a wildcard: ``*`` is any run of characters, ``\\*`` and ``\\\\`` are literal."""
    segments: list[list[str]] = [[]]
    position = 0
    after_star = False
    while position < len(text):
        char = text[position]
        if char == "\\":
            escaped = text[position + 1 : position + 2]
            if escaped not in ("*", "\\"):
                reason = f"wildcard: a backslash escapes only '*' or '\\' (at position {position})"
                raise _Malformed(path, reason)
            segments[-1].append(escaped)
            position += 2
            after_star = False
            continue
        if char == "*":
            if after_star:
                reason = (
                    f"wildcard: consecutive wildcard characters at position {position} "
                    "are not allowed"
                )
                raise _Malformed(path, reason)
            segments.append([])
            after_star = True
        else:
            segments[-1].append(char)
            after_star = False
        position += 1
    if len(segments) - 1 > _MAX_WILDCARDS:
        reason = (
            f"wildcard: {len(segments) - 1} wildcard characters; at most {_MAX_WILDCARDS} "
            "per value (EventBridge refuses such rules as too complex)"
        )
        raise _Malformed(path, reason)
    parts = ["".join(segment) for segment in segments]
    if len(parts) == 1:
        literal = parts[0]
        return lambda value: isinstance(value, str) and value == literal
    head, middle, tail = parts[0], tuple(parts[1:-1]), parts[-1]
    shortest = len(head) + len(tail)

    # Greedy leftmost search of each middle piece: linear, no backtracking, and
    # exact for '*'-only patterns anchored at both ends.
    def test(value: Any) -> bool:
        if not isinstance(value, str) or len(value) < shortest:
            return False
        if not (value.startswith(head) and value.endswith(tail)):
            return False
        start, end = len(head), len(value) - len(tail)
        for piece in middle:
            found = value.find(piece, start, end)
            if found < 0:
                return False
            start = found + len(piece)
        return True

    return test


def _numeric_test(operator: str, bound: Decimal, decimal_strings: bool) -> _ValueTest:
    if operator == "=":
        return _range_test(bound, True, bound, True, decimal_strings)
    if operator in (">", ">="):
        return _range_test(bound, operator == ">=", None, False, decimal_strings)
    return _range_test(None, False, bound, operator == "<=", decimal_strings)


def _range_test(
    low: Decimal | None,
    low_inclusive: bool,
    high: Decimal | None,
    high_inclusive: bool,
    decimal_strings: bool,
) -> _ValueTest:
    def test(value: Any) -> bool:
        # int compares exactly with Decimal: skip the conversion on the common case.
        number = value if type(value) is int else _to_number(value, decimal_strings)
        if number is None:
            return False
        if low is not None and (number < low if low_inclusive else number <= low):
            return False
        return high is None or (number <= high if high_inclusive else number < high)

    return test


def _cidr_test(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> _ValueTest:
    def test(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return ipaddress.ip_address(value) in network
        except ValueError:
            return False

    return test


# --- small helpers -------------------------------------------------------------------------


def _pattern_number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    if not _is_finite(value):
        return None
    return _to_number(value, decimal_strings=False)


def _double_problem(value: int | float | Decimal) -> str | None:
    """Why a number of a pattern is refused, or None: EventBridge reads them as doubles."""
    if isinstance(value, float | Decimal) and not _is_finite(value):
        return f"numbers must be finite, got {_render(value)}"
    try:
        double = float(value)
    except OverflowError:
        double = math.inf
    if math.isinf(double):
        return (
            f"the number {_render(value)} is beyond the range of a double "
            "(about 1.8e308; EventBridge refuses it)"
        )
    if double == 0 and value != 0:
        return (
            f"the number {_render(value)} underflows to 0 as a double "
            "(the smallest is about 4.9e-324; EventBridge refuses it)"
        )
    return None


def _is_finite(value: int | float | Decimal) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _absence(raw: Any) -> str:
    if raw is _MISSING:
        return "absent"
    if isinstance(raw, Mapping):
        return "an object, not a leaf"
    if isinstance(raw, list | tuple) and raw:
        return "an array of objects, not a leaf"
    return "an empty array"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _describe(value: Any) -> str:
    """A type and a short rendering, for error messages."""
    return f"{_type_name(value)} {_clip(_render(value), 60)}"


def _show_pattern(value: Any) -> str:
    return _render(value)


def _show_value(value: Any) -> str:
    return _clip(_render(value), 120)


def _show_values(values: Sequence[Any]) -> str:
    shown = ", ".join(_show_value(v) for v in values[:5])
    more = f", ... ({len(values)} values)" if len(values) > 5 else ""
    return f"[{shown}{more}]"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(value: Any) -> str:
    """JSON-like text of a value; numbers keep their literal (Decimal) or repr."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_render(str(k))}: {_render(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return repr(value)
