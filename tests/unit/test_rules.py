"""Event rules: loading, refusal of malformed patterns, our documented choices, properties."""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from foundation.errors import ConfigError, StreambatchError, TerminalError
from generator import generate_order_records
from handlers.rules import Rule, RuleError, RuleSet, load_event, parse_event

EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.toml"


def rule(pattern: Mapping[str, Any], *, decimal_strings: bool = False) -> Rule:
    return Rule("r", pattern, ("t",), decimal_strings=decimal_strings)


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any], **options: bool) -> bool:
    compiled = rule(pattern, **options)
    result = compiled.matches(event)
    # The explaining path must always agree with the fast path.
    assert compiled.explain(event).matched is result
    return result


# --- the example rules of the orders workflow ----------------------------------------------


def test_example_rules_load_and_each_matches_some_generated_event() -> None:
    rules = RuleSet.load(EXAMPLE_RULES)
    records = generate_order_records(3000, seed=7, duplicate_ratio=0, malformed_ratio=0)
    events = [parse_event(record.value) for record in records]
    # The generator's orders never run out of stock: add the compensation's two events.
    events += [
        {"event_type": "StockUnavailable", "order_id": "ord-1", "reason": "5 x SKU-00001"},
        {"event_type": "PaymentRefunded", "order_id": "ord-1", "payment_id": "pay-1"},
    ]
    matched = {r.name for event in events for r in rules.matching_rules(event)}
    assert matched == {r.name for r in rules}


def test_report_says_which_rules_match_and_why() -> None:
    rules = RuleSet.load(EXAMPLE_RULES)
    event = {
        "event_id": "evt-1",
        "event_type": "PaymentFailed",
        "occurred_at": "2026-11-28T00:00:14.952Z",
        "order_id": "ord-1",
        "payment_id": "pay-1",
        "amount": "1200.00",
        "currency": "EUR",
        "reason": "fraud_suspected",
    }
    assert [m.rule.name for m in rules.match(event)] == [
        "payment-failed",
        "large-payment-failed",
        "suspected-fraud",
        "payments-ledger",
    ]
    report = rules.report(event)
    assert report.splitlines()[0] == f"4 of {len(rules)} rules match"
    assert "  large-payment-failed -> finance.review" in report
    assert '      amount = "1200.00": matches {"numeric": [">=", 500]}' in report
    assert "$or branch 1 of 2: reason" in report
    assert "order-placed" not in report
    with_misses = rules.report(event, misses=True)
    assert "  order-placed: no match" in with_misses
    assert 'event_type = "PaymentFailed": matches none of ["OrderPlaced"]' in with_misses
    assert rules.targets(event) == [
        "inventory.release",
        "notifications",
        "finance.alerts",
        "finance.review",
        "security.review",
        "finance.ledger",
    ]


def test_match_carries_rule_targets_and_reasons() -> None:
    rules = RuleSet(
        [
            Rule("a", {"event_type": ["OrderPlaced"]}, ("x", "y"), description="first"),
            Rule("b", {"items": {"sku": [{"prefix": "SKU-9"}]}}, ("y", "z")),
        ]
    )
    event = {"event_type": "OrderPlaced", "items": [{"sku": "SKU-1"}, {"sku": "SKU-92"}]}
    found = rules.match(event)
    assert [m.targets for m in found] == [("x", "y"), ("y", "z")]
    assert found[1].reasons == ('items[1].sku = "SKU-92": matches {"prefix": "SKU-9"}',)
    assert rules.targets(event) == ["x", "y", "z"]
    assert len(rules) == 2
    assert [r.description for r in rules] == ["first", ""]


def test_pattern_is_copied_at_compile_time() -> None:
    pattern: dict[str, Any] = {"a": ["x"]}
    compiled = rule(pattern)
    pattern["a"].append("y")
    assert compiled.pattern == {"a": ["x"]}
    assert not compiled.matches({"a": "y"})


# --- rules files ---------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_pattern_as_json_string_can_match_null(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.toml",
        """
[[rules]]
name = "no-reason"
targets = ["t"]
pattern = '''{"reason": [null], "amount": [{"numeric": [">", 10]}]}'''
""",
    )
    rules = RuleSet.load(path)
    assert rules.matching_rules({"reason": None, "amount": 11})
    assert not rules.matching_rules({"reason": "", "amount": 11})
    # decimal_strings is off unless the file turns it on.
    assert not rules.matching_rules({"reason": None, "amount": "11"})


def test_json_rules_file_numbers_compare_by_value(tmp_path: Path) -> None:
    document = {
        "decimal_strings": True,
        "rules": [
            {"name": "j", "targets": ["t"], "pattern": {"x": [1.50], "y": [{"numeric": [">", 1]}]}}
        ],
    }
    path = write(tmp_path, "rules.json", json.dumps(document).replace("1.5", "1.50"))
    rules = RuleSet.load(path)
    assert rules.matching_rules(parse_event('{"x": 1.50, "y": "2.5"}'))
    assert rules.matching_rules(parse_event('{"x": 1.5, "y": "2.5"}'))
    assert rules.matching_rules(parse_event('{"x": 15e-1, "y": "2.5"}'))
    assert not rules.matching_rules(parse_event('{"x": "1.50", "y": "2.5"}'))


@pytest.mark.parametrize(
    ("suffix", "text", "named"),
    [
        (
            ".json",
            '{"rules": [{"name": "n", "targets": ["t"], "pattern": {"x": [1e309]}}]}',
            "1E+309",
        ),
        (".toml", '[[rules]]\nname = "n"\ntargets = ["t"]\npattern.x = [1e309]\n', "1E+309"),
        (".toml", '[[rules]]\nname = "n"\ntargets = ["t"]\npattern.x = [1e-325]\n', "1E-325"),
        (".toml", '[[rules]]\nname = "n"\ntargets = ["t"]\npattern.x = [inf]\n', "Infinity"),
    ],
)
def test_rules_file_number_beyond_a_double_is_refused_by_its_value(
    tmp_path: Path, suffix: str, text: str, named: str
) -> None:
    path = write(tmp_path, f"rules{suffix}", text)
    with pytest.raises(RuleError, match=f"rule 'n': pattern.x: .*{re.escape(named)}") as caught:
        RuleSet.load(path)
    assert str(caught.value).startswith(str(path))


def test_decimal_strings_applies_to_every_rule_of_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.toml",
        """
decimal_strings = true

[[rules]]
name = "big"
targets = ["t"]
[rules.pattern]
total_amount = [{ numeric = [">=", 1000] }]
""",
    )
    (only,) = RuleSet.load(path).rules
    assert only.decimal_strings
    assert only.matches({"total_amount": "1000.00"})
    assert not only.matches({"total_amount": "999.99"})


FILE_ERRORS: dict[str, tuple[str, str, str]] = {
    "suffix": ("rules.yaml", "rules: []", "rules files are .toml or .json"),
    "toml-syntax": ("rules.toml", "[[rules]\nname=", "not valid TOML"),
    "json-syntax": ("rules.json", "{", "not valid JSON"),
    "top-level-key": ("rules.toml", "decimal_string = true", "unknown top-level key"),
    "decimal-strings-type": ("rules.toml", 'decimal_strings = "yes"', "true or false"),
    "no-rules": ("rules.toml", "decimal_strings = true", "no rules"),
    "rules-not-tables": ("rules.json", '{"rules": [1]}', "rule #1: must be a table"),
    "no-name": ("rules.toml", '[[rules]]\ntargets = ["t"]', "rule #1: needs a name"),
    "bad-name": (
        "rules.toml",
        '[[rules]]\nname = "a b"\ntargets = ["t"]\npattern = {a = ["x"]}',
        "rule 'a b': a name is 1 to 64",
    ),
    "unknown-rule-key": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntarget = ["t"]\npattern = {a = ["x"]}',
        "rule 'a': unknown key 'target'",
    ),
    "no-pattern": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = ["t"]',
        "rule 'a': needs a pattern",
    ),
    "no-targets": (
        "rules.toml",
        '[[rules]]\nname = "a"\npattern = {a = ["x"]}',
        "rule 'a': needs targets",
    ),
    "empty-targets": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = []\npattern = {a = ["x"]}',
        "rule 'a': targets must be a non-empty list",
    ),
    "string-targets": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = "t"\npattern = {a = ["x"]}',
        "rule 'a': targets must be a non-empty list",
    ),
    "repeated-target": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = ["t", "t"]\npattern = {a = ["x"]}',
        "rule 'a': target 't' is listed twice",
    ),
    "description-type": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = ["t"]\ndescription = 1\npattern = {a = ["x"]}',
        "rule 'a': description must be a string",
    ),
    "pattern-json-string": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = ["t"]\npattern = \'{"a": [x]}\'',
        "rule 'a': pattern: not valid JSON",
    ),
    "duplicate-names": (
        "rules.toml",
        '[[rules]]\nname = "a"\ntargets = ["t"]\npattern = {a = ["x"]}\n'
        '[[rules]]\nname = "a"\ntargets = ["t"]\npattern = {a = ["y"]}',
        "rule 'a' is defined twice",
    ),
    "malformed-pattern": (
        "rules.toml",
        '[[rules]]\nname = "payment-failed"\ntargets = ["t"]\n'
        '[rules.pattern.detail]\namount = [{ numeric = [">", 1, "<"] }]',
        "rule 'payment-failed': pattern.detail.amount: numeric range needs an even list "
        "of operator/value pairs",
    ),
}


@pytest.mark.parametrize(("name", "text", "reason"), FILE_ERRORS.values(), ids=FILE_ERRORS.keys())
def test_bad_rules_file_is_refused_with_path_rule_and_reason(
    tmp_path: Path, name: str, text: str, reason: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(RuleError) as caught:
        RuleSet.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert reason in message
    assert isinstance(caught.value, ConfigError | StreambatchError)


def test_missing_rules_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuleError, match="cannot read the rules"):
        RuleSet.load(tmp_path / "absent.toml")


# --- malformed patterns ----------------------------------------------------------------------

MALFORMED: dict[str, tuple[Any, str]] = {
    "not-an-object": (["a"], "pattern: must be an object of fields, got a list"),
    "empty-pattern": ({}, "pattern: is empty"),
    "empty-nested": ({"detail": {}}, "pattern.detail: is empty"),
    "bare-value": ({"a": "x"}, "pattern.a: must be a list of match values or a nested object"),
    "empty-list": ({"a": []}, "pattern.a: empty list"),
    "list-in-list": ({"a": [["x"]]}, "match values are strings, numbers"),
    "decimal-nan": ({"a": [Decimal("NaN")]}, "pattern.a: numbers must be finite"),
    "infinite-float": ({"a": [float("inf")]}, "numbers must be finite"),
    "unknown-operator": ({"a": [{"regex": "x.*"}]}, "unknown operator 'regex'"),
    "two-operators": ({"a": [{"prefix": "x", "suffix": "y"}]}, "exactly one operator"),
    "no-operator": ({"a": [{}]}, "exactly one operator, got none"),
    "prefix-number": ({"a": [{"prefix": 1}]}, "prefix takes a string"),
    "prefix-bad-object": ({"a": [{"prefix": {"ignore-case": "x"}}]}, "prefix takes a string"),
    "suffix-list": ({"a": [{"suffix": [".png"]}]}, "suffix takes a string"),
    "equals-ignore-case-number": ({"a": [{"equals-ignore-case": 1}]}, "takes a string"),
    "wildcard-number": ({"a": [{"wildcard": 1}]}, "wildcard takes a string"),
    "wildcard-double-star": ({"a": [{"wildcard": "**"}]}, "consecutive wildcard characters"),
    "wildcard-trailing-backslash": ({"a": [{"wildcard": "a\\"}]}, "backslash escapes only"),
    "exists-string": ({"a": [{"exists": "true"}]}, "exists takes true or false"),
    "anything-but-empty": ({"a": [{"anything-but": []}]}, "non-empty list"),
    "anything-but-null": ({"a": [{"anything-but": None}]}, "anything-but takes a string"),
    "anything-but-bool": ({"a": [{"anything-but": [True]}]}, "anything-but takes a string"),
    "anything-but-mixed": ({"a": [{"anything-but": ["x", 1]}]}, "only strings or of only"),
    "anything-but-unknown": ({"a": [{"anything-but": {"numeric": [">", 1]}}]}, "takes one of"),
    "anything-but-prefix-empty": ({"a": [{"anything-but": {"prefix": ""}}]}, "must not be empty"),
    "anything-but-prefix-number": ({"a": [{"anything-but": {"prefix": 1}}]}, "list of strings"),
    "anything-but-wildcard-bad": ({"a": [{"anything-but": {"wildcard": "a**"}}]}, "consecutive"),
    "numeric-not-list": ({"a": [{"numeric": ">"}]}, "numeric takes a list"),
    "numeric-empty": ({"a": [{"numeric": []}]}, "numeric takes a list"),
    "numeric-odd": (
        {"a": [{"numeric": [">", 0, "<"]}]},
        "numeric range needs an even list of operator/value pairs",
    ),
    "numeric-too-long": ({"a": [{"numeric": [">", 0, "<", 5, "<", 6]}]}, "at most two"),
    "numeric-bad-operator": ({"a": [{"numeric": ["gt", 0]}]}, "unknown operator"),
    "numeric-string-value": ({"a": [{"numeric": [">", "5"]}]}, "needs a finite number"),
    "numeric-bool-value": ({"a": [{"numeric": [">", True]}]}, "needs a finite number"),
    "numeric-equals-in-range": ({"a": [{"numeric": ["=", 1, "<", 5]}]}, "a range is a lower"),
    "numeric-two-lower": ({"a": [{"numeric": [">", 1, ">", 5]}]}, "a range is a lower"),
    "numeric-empty-range": ({"a": [{"numeric": [">", 5, "<", 5]}]}, "must be below"),
    "cidr-no-mask": ({"a": [{"cidr": "10.0.0.1"}]}, "cidr needs ADDRESS/BITS"),
    "cidr-garbage": ({"a": [{"cidr": "10.0.0.300/24"}]}, "cidr:"),
    "or-not-a-list": ({"$or": {"a": ["x"]}}, "pattern.$or: $or must be a list of at least two"),
    "or-one-branch": ({"$or": [{"a": ["x"]}]}, "at least two patterns"),
    "or-branch-not-object": ({"$or": [{"a": ["x"]}, ["b"]]}, "pattern.$or[1]: must be an object"),
    "or-empty-branch": ({"$or": [{"a": ["x"]}, {}]}, "pattern.$or[1]: is empty"),
    "nested-or-path": (
        {"detail": {"$or": [{"a": ["x"]}, {"b": [{"numeric": ["<"]}]}]}},
        "pattern.detail.$or[1].b: numeric",
    ),
}


@pytest.mark.parametrize(("pattern", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_pattern_is_refused_with_rule_name_and_reason(pattern: Any, reason: str) -> None:
    with pytest.raises(RuleError) as caught:
        Rule("payment-failed", pattern, ("t",))
    message = str(caught.value)
    assert message.startswith("rule 'payment-failed': pattern")
    assert reason in message


def test_toml_datetime_is_not_a_match_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "rules.toml",
        '[[rules]]\nname = "d"\ntargets = ["t"]\n'
        "[rules.pattern]\noccurred_at = [2026-01-01T00:00:00Z]\n",
    )
    with pytest.raises(RuleError, match=r"pattern\.occurred_at: match values are strings"):
        RuleSet.load(path)


# --- choices the guide leaves to us (documented in handlers.rules) ---------------------------


def test_decimal_strings_off_follows_eventbridge() -> None:
    pattern = {"amount": [{"numeric": [">=", 100]}]}
    assert not matches(pattern, {"amount": "120.00"})
    assert matches(pattern, {"amount": "120.00"}, decimal_strings=True)
    assert matches(pattern, {"amount": 120}, decimal_strings=True)


@pytest.mark.parametrize(
    "text", ["1e3", "+5", " 5", "5.", ".5", "1_000", "NaN", "Infinity", "\u0665"]
)
def test_decimal_strings_reads_only_plain_literals(text: str) -> None:
    assert not matches({"x": [{"numeric": [">", -(10**9)]}]}, {"x": text}, decimal_strings=True)


def test_decimal_strings_never_change_exact_matching() -> None:
    assert not matches({"amount": [20]}, {"amount": "20.00"}, decimal_strings=True)
    assert matches({"amount": ["20.00"]}, {"amount": "20.00"}, decimal_strings=True)


def test_numeric_is_exact_past_the_sixth_decimal() -> None:
    pattern = {"x": [{"numeric": [">", Decimal("0.1000001")]}]}
    assert not matches(pattern, {"x": Decimal("0.1000001")})
    assert matches(pattern, {"x": Decimal("0.10000010000001")})
    assert matches({"x": [{"numeric": [">", 10**12]}]}, {"x": 10**12 + 1})


def test_floats_compare_by_their_shortest_repr() -> None:
    assert matches({"x": [{"numeric": ["=", 0.1]}]}, {"x": 0.1})
    assert matches({"x": [{"numeric": ["=", Decimal("0.1")]}]}, {"x": 0.1})
    assert matches({"x": [301.8]}, {"x": 301.8})


def test_exact_numbers_compare_by_value() -> None:
    assert matches({"x": [300]}, {"x": 300.0})
    assert matches({"x": [300.0]}, {"x": 300})
    assert matches({"x": [300]}, {"x": Decimal("300.0")})
    assert matches({"x": [Decimal("300.0")]}, {"x": Decimal("3.0E+2")})
    assert matches({"x": [0.1]}, {"x": Decimal("0.10")})
    assert not matches({"x": [300]}, {"x": 301})
    assert not matches({"x": [{"anything-but": 300}]}, {"x": 300.0})
    assert not matches({"x": [300]}, {"x": "300"})
    assert not matches({"x": ["300"]}, {"x": 300})


def test_numbers_a_double_cannot_hold_compare_by_text() -> None:
    # EventBridge matches such a number only by its literal (it cannot compare it as a double).
    big = 12345678901234567891
    assert matches({"x": [big]}, {"x": big})
    assert not matches({"x": [big]}, {"x": Decimal("12345678901234567891.0")})
    assert not matches({"x": [Decimal("0.30000000000000001")]}, {"x": 0.3})


def test_booleans_are_not_numbers() -> None:
    assert not matches({"x": [1]}, {"x": True})
    assert not matches({"x": [True]}, {"x": 1})
    assert not matches({"x": [{"numeric": [">", 0]}]}, {"x": True})
    assert matches({"x": [True]}, {"x": True})


def test_anything_but_needs_the_field_and_matches_null() -> None:
    pattern = {"state": [{"anything-but": "running"}]}
    assert not matches(pattern, {})
    assert matches(pattern, {"state": None})
    assert matches({"state": [{"anything-but": {"prefix": "init"}}]}, {"state": 7})
    absent_or_not_running = {"state": [{"anything-but": "running"}, {"exists": False}]}
    assert matches(absent_or_not_running, {})


def test_anything_but_on_an_array_needs_one_other_element() -> None:
    assert matches({"price": [{"anything-but": [100, 500]}]}, {"price": [100, 50]})
    assert not matches({"price": [{"anything-but": [100, 500]}]}, {"price": [100, 500]})


def test_exists_sees_null_as_a_value_and_empty_arrays_as_absent() -> None:
    assert matches({"x": [{"exists": True}]}, {"x": None})
    assert matches({"x": [{"exists": False}]}, {"x": []})
    assert matches({"x": [{"exists": False}]}, {"x": [{"a": 1}]})
    assert not matches({"x": [{"exists": True}]}, {"x": {"a": 1}})
    assert matches({"x": [{"exists": True}]}, {"x": [[], [0]]})


def test_nested_pattern_on_missing_or_scalar_field_sees_no_fields() -> None:
    pattern = {"detail": {"c-count": [{"exists": False}]}}
    assert matches(pattern, {})
    assert matches(pattern, {"detail": "text"})
    assert matches(pattern, {"detail": []})
    assert not matches({"detail": {"c-count": [5]}}, {"detail": 5})


def test_nested_pattern_on_array_elements_is_element_wise() -> None:
    pattern = {"items": {"discount": [{"exists": False}], "sku": ["A"]}}
    assert matches(pattern, {"items": [{"sku": "B"}, {"sku": "A"}]})
    assert not matches(pattern, {"items": [{"sku": "A", "discount": 1}, {"sku": "B"}]})
    assert matches(pattern, {"items": [5, [{"sku": "A"}]]})


def test_dotted_field_names_are_paths() -> None:
    assert matches({"items.sku": ["A"]}, {"items": {"sku": "A"}})
    assert matches({"items.sku": ["A"]}, {"items.sku": "A"})
    assert matches({"items": {"sku": ["A"]}}, {"items.sku": "A"})
    assert matches({"items.sku": ["A"]}, {"items": [{"sku": "B"}, {"sku": "A"}]})
    assert not matches({"items.sku": ["A"]}, {"items": {"sku": "B"}})
    assert not matches({"items.sku": ["A"]}, {"items": {"sku.x": "A"}})


def test_dotted_event_keys_do_not_change_the_event() -> None:
    event = {"a": {"b": "x"}, "a.b": "y", "a.c": {"d": 1}}
    before = json.dumps(event, sort_keys=True)
    assert matches({"a": {"b": ["y"], "c": {"d": [1]}}}, event)
    assert json.dumps(event, sort_keys=True) == before


def test_wildcards() -> None:
    assert matches({"x": [{"wildcard": "*"}]}, {"x": ""})
    assert matches({"x": [{"wildcard": "a*"}]}, {"x": "a"})
    assert not matches({"x": [{"wildcard": "ab*ba"}]}, {"x": "aba"})
    assert matches({"x": [{"wildcard": "*a*b*"}]}, {"x": "xxaxxbxx"})
    assert matches({"x": [{"wildcard": "a\\\\b"}]}, {"x": "a\\b"})
    assert matches({"x": [{"wildcard": "a\\**"}]}, {"x": "a*bc"})
    assert not matches({"x": [{"wildcard": "a\\**"}]}, {"x": "abc"})
    assert not matches({"x": [{"wildcard": "a*"}]}, {"x": 1})


def test_events_that_are_not_plain_json_never_raise() -> None:
    compiled = rule({"a": [{"numeric": [">", 1]}, "x", {"wildcard": "*"}], "b": {"c": ["y"]}})
    for event in ({"a": object(), "b": {1, 2}}, {"a": {"x"}}, ["a"], None, "a"):
        assert compiled.matches(event) is False  # type: ignore[arg-type]  # not a Mapping on purpose
        assert compiled.explain(event).matched is False  # type: ignore[arg-type]  # same


def test_explanations_name_the_field_value_and_condition() -> None:
    compiled = rule({"detail": {"state": ["running"], "count": [{"numeric": [">", 3]}]}})
    assert compiled.explain({"detail": {"state": "running", "count": 5}}).reasons == (
        'detail.state = "running": matches "running"',
        'detail.count = 5: matches {"numeric": [">", 3]}',
    )
    assert compiled.explain({"detail": {"state": "stopped"}}).reasons == (
        'detail.state = "stopped": matches none of ["running"]',
    )
    assert compiled.explain({"detail": {"state": "running"}}).reasons == (
        'detail.count is absent: needs [{"numeric": [">", 3]}]',
    )
    assert compiled.explain({"detail": {"state": ["a", "b"]}}).reasons == (
        'detail.state = ["a", "b"]: matches none of ["running"]',
    )


def test_parse_event_keeps_literals_and_refuses_non_objects(tmp_path: Path) -> None:
    assert parse_event('{"x": 3.0e2}') == {"x": Decimal("3.0e2")}
    for text in ("[1]", "{", '{"x": NaN}'):
        with pytest.raises(TerminalError):
            parse_event(text)
    path = write(tmp_path, "event.json", '{"event_type": "OrderPlaced"}')
    assert load_event(path) == {"event_type": "OrderPlaced"}
    with pytest.raises(TerminalError, match=r"event\.json: an event is a JSON object"):
        load_event(write(tmp_path, "event.json", "1"))
    with pytest.raises(TerminalError, match="cannot read the event"):
        load_event(tmp_path / "absent.json")


# --- properties ------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
# Not "$or", and not an operator name: a pattern made only of those is refused (a top-level
# field named like an operator cannot be written; see test_malformed_pattern_is_refused...).
_OPERATOR_NAMES = frozenset(
    {
        "anything-but",
        "cidr",
        "equals-ignore-case",
        "exists",
        "numeric",
        "prefix",
        "suffix",
        "wildcard",
    }
)
field_names = st.text(max_size=6).filter(lambda name: name != "$or" and name not in _OPERATOR_NAMES)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(field_names, children, max_size=4)
    ),
    max_leaves=24,
)
json_events = st.dictionaries(field_names, json_values, max_size=6)


def _scalars_in(value: list[Any]) -> list[Any]:
    found: list[Any] = []
    for item in value:
        if isinstance(item, list):
            found.extend(_scalars_in(item))
        elif not isinstance(item, dict):
            found.append(item)
    return found


def _objects_in(value: list[Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, list):
            found.extend(_objects_in(item))
        elif isinstance(item, dict):
            found.append(item)
    return found


def exact_pattern(obj: Mapping[str, Any], keep: Any) -> dict[str, Any]:
    """An exact-value pattern built from ``obj``'s own fields (``keep`` picks which)."""
    pattern: dict[str, Any] = {}
    for key, value in obj.items():
        if not keep(key):
            continue
        if isinstance(value, dict):
            nested = exact_pattern(value, keep)
            if nested:
                pattern[key] = nested
        elif isinstance(value, list):
            scalars = _scalars_in(value)
            if scalars:
                pattern[key] = [scalars[-1]]
                continue
            for element in _objects_in(value):
                nested = exact_pattern(element, keep)
                if nested:
                    pattern[key] = nested
                    break
        else:
            pattern[key] = [value]
    return pattern


@settings(max_examples=300, deadline=None)
@given(json_events, st.data())
def test_exact_pattern_from_the_event_itself_always_matches(
    event: dict[str, Any], data: st.DataObject
) -> None:
    chosen = data.draw(st.sets(field_names, max_size=4))
    pattern = exact_pattern(event, lambda key: key in chosen or not chosen)
    assume(pattern)
    assert matches(pattern, event)
    # The same holds after a JSON round trip of the event with Decimal floats.
    assert rule(pattern).matches(parse_event(json.dumps(event))) or _has_float(event)


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


finite_numbers = (
    st.integers(min_value=-(10**12), max_value=10**12)
    | st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9
    )
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
)
strings = st.text(alphabet="abAB*\\-", max_size=5)
anything_but_operands = (
    strings.map(lambda s: ("exact", s))
    | finite_numbers.map(lambda n: ("exact", n))
    | st.lists(strings, min_size=1, max_size=3).map(lambda s: ("exact", s))
    | st.lists(finite_numbers, min_size=1, max_size=3).map(lambda n: ("exact", n))
    | st.tuples(
        st.sampled_from(["prefix", "suffix", "equals-ignore-case"]),
        st.text(alphabet="abAB", min_size=1, max_size=3),
    )
)


@settings(max_examples=300, deadline=None)
@given(anything_but_operands, st.one_of(json_scalars, strings, finite_numbers))
def test_anything_but_is_the_complement_of_the_positive_match(
    operand: tuple[str, Any], value: Any
) -> None:
    # For a field that exists and holds one value. (On an array both can hold: one
    # element may be X and another not.)
    kind, argument = operand
    if kind == "exact":
        positive: list[Any] = argument if isinstance(argument, list) else [argument]
        negative: Any = argument
    else:
        positive = [{kind: argument}]
        negative = {kind: argument}
    event = {"f": value}
    assert matches({"f": [{"anything-but": negative}]}, event) is not matches(
        {"f": positive}, event
    )


small_conditions = st.sampled_from(
    [
        ["x"],
        ["y", 1],
        [{"prefix": "x"}],
        [{"numeric": [">", 0, "<=", 5]}],
        [{"exists": False}],
        [{"exists": True}],
        [{"anything-but": "x"}],
        [None],
    ]
)
small_patterns = st.dictionaries(st.sampled_from("abc"), small_conditions, min_size=1, max_size=2)
small_events = st.dictionaries(
    st.sampled_from("abc"),
    st.sampled_from(["x", "xy", "y", 1, 3, 7, None, [], ["x", 7], {"x": 1}]),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(small_patterns, min_size=2, max_size=4), small_patterns, small_events)
def test_or_matches_iff_any_branch_matches(
    branches: list[dict[str, Any]], rest: dict[str, Any], event: dict[str, Any]
) -> None:
    expected = any(matches(branch, event) for branch in branches)
    assert matches({"$or": branches}, event) is expected
    # Inside a larger pattern, and nested one level down.
    assert matches({**rest, "$or": branches}, event) is (matches(rest, event) and expected)
    assert matches({"d": {"$or": branches}}, {"d": event}) is expected


@settings(max_examples=300, deadline=None)
@given(finite_numbers, finite_numbers, st.data())
def test_numeric_half_open_range(a: Any, b: Any, data: st.DataObject) -> None:
    def exact(value: Any) -> Decimal:
        # The documented reading of a float: its shortest repr.
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)

    if exact(a) == exact(b):
        # The next double away from a (toward 0 at the largest double, whose next
        # one up is infinity, which a pattern refuses): every bound is a double.
        toward = -math.inf if float(exact(a)) == sys.float_info.max else math.inf
        b = math.nextafter(float(exact(a)), toward)
    low, high = sorted((a, b), key=exact)
    # The bounds themselves are the interesting points.
    x = data.draw(st.sampled_from([low, high]) | finite_numbers)
    pattern = {"x": [{"numeric": [">=", low, "<", high]}]}
    assert matches(pattern, {"x": x}) is (exact(low) <= exact(x) < exact(high))
    # The same range over decimal strings, as our money is written.
    if isinstance(x, Decimal):
        text = f"{x:f}"
        assert matches(pattern, {"x": text}, decimal_strings=True) is (
            exact(low) <= x < exact(high)
        )


EVERY_OPERATOR = [
    rule(pattern)
    for pattern in (
        {"a": ["x", 1, None, True, 2.5]},
        {"a": [{"prefix": "x"}, {"suffix": {"equals-ignore-case": "Y"}}]},
        {"a": [{"equals-ignore-case": "x"}, {"wildcard": "*x*y"}]},
        {"a": [{"anything-but": ["x", "y"]}], "b": [{"anything-but": {"wildcard": "a*"}}]},
        {"a": [{"anything-but": [1, 2.5]}], "b": [{"anything-but": {"suffix": ["x", "y"]}}]},
        {"a": [{"numeric": [">", 0, "<=", 5]}, {"numeric": ["=", 7]}]},
        {"a": [{"exists": False}], "b": {"c": [{"exists": True}]}},
        {"a": [{"cidr": "10.0.0.0/8"}, {"cidr": "2001:db8::/32"}]},
        {"$or": [{"a": ["x"]}, {"b": {"c": [{"numeric": ["<", 0]}]}}], "c": [{"exists": True}]},
    )
] + [rule({"a": [{"numeric": [">", 0]}]}, decimal_strings=True)]


@settings(max_examples=300, deadline=None)
@given(json_events)
def test_matching_never_raises_on_arbitrary_json(event: dict[str, Any]) -> None:
    rules = RuleSet(
        Rule(f"r{n}", compiled.pattern, ("t",), decimal_strings=compiled.decimal_strings)
        for n, compiled in enumerate(EVERY_OPERATOR)
    )
    for candidate in (event, parse_event(json.dumps(event))):
        found = rules.matching_rules(candidate)
        assert [m.rule for m in rules.match(candidate)] == found
        assert [r for r, why in rules.explain(candidate) if why.matched] == found
        assert rules.report(candidate, misses=True)


def test_fast_path_and_explanations_agree_on_generated_orders() -> None:
    rules = RuleSet.load(EXAMPLE_RULES)
    records = generate_order_records(500, seed=11, duplicate_ratio=0, malformed_ratio=0)
    for record in itertools.islice(records, 500):
        event = parse_event(record.value)
        fast = rules.matching_rules(event)
        assert [r for r, why in rules.explain(event) if why.matched] == fast


# EventBridge joins field names with ".": writing a path dotted or nested, in the
# pattern or in the event, never changes the answer (arrays aside, which a dotted
# name cannot cross in an event).
short_names = st.sampled_from(["a", "b", "c"])
path_leaves = st.lists(
    st.sampled_from(["x", "y", 1, None, {"exists": False}, {"exists": True}, {"prefix": "x"}]),
    min_size=1,
    max_size=3,
)
nested_patterns = st.recursive(
    st.dictionaries(short_names, path_leaves, min_size=1, max_size=2),
    lambda inner: st.dictionaries(short_names, inner | path_leaves, min_size=1, max_size=3),
    max_leaves=6,
)
nested_events = st.dictionaries(
    short_names,
    st.recursive(
        st.sampled_from(["x", "y", 1, None]),
        lambda inner: st.dictionaries(short_names, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=3,
)


def _dotted(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every path of nested objects as one dotted key (empty objects stay objects)."""
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@settings(max_examples=300, deadline=None)
@given(nested_patterns, nested_events)
def test_dotted_and_nested_paths_are_the_same_field(
    pattern: dict[str, Any], event: dict[str, Any]
) -> None:
    expected = matches(pattern, event)
    assert matches(_dotted(pattern), event) is expected
    assert matches(pattern, _dotted(event)) is expected
    assert matches(_dotted(pattern), _dotted(event)) is expected


@settings(max_examples=300, deadline=None)
@given(st.lists(small_patterns, min_size=1, max_size=4), json_events, small_events)
def test_the_routers_json_path_agrees_with_parse_and_match(
    patterns: list[dict[str, Any]], event: dict[str, Any], small: dict[str, Any]
) -> None:
    # Guards on a shared exact-string field, rules without one, floats, big ints,
    # dotted keys: matching_rules_json must give matching_rules(parse_event(...)).
    rules = [rule(p) for p in patterns] + [rule({"a": ["x", "xy"], "b": [{"exists": True}]})]
    rules = [Rule(f"r{n}", r.pattern, ("t",)) for n, r in enumerate(rules)]
    ruleset = RuleSet(rules)
    for candidate in ({**event, **small}, small, {**small, "a.b": 1}):
        text = json.dumps(candidate).encode()
        assert ruleset.matching_rules_json(text) == ruleset.matching_rules(parse_event(text))
