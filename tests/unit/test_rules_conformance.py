"""The matcher against what AWS EventBridge answers where its guide is silent or says otherwise.

AWS's behaviour, as its TestEventPattern API answers, is the reference. Each
case is a pattern, an event (JSON text; floats parsed as Decimal so that number
literals survive) and the answer. The facts come from public suites checked
against AWS, named in a comment on each case:

* LocalStack's EventBridge pattern suite (``event_pattern_templates``), whose
  cases are recorded against AWS with TestEventPattern;
* aws/event-ruler, the library behind EventBridge's matching: its README and
  its unit tests of rule compilation (``JsonRuleCompilerTest``).

Cases marked "follows from" apply a rule those sources state (EventBridge joins
field names with "."; numbers compare as IEEE 754 doubles) to an example no
suite has. Cases marked "our decision" are documented in handlers/rules.py.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, NamedTuple

import pytest

from handlers.rules import Rule, RuleError, RuleSet, parse_event


class Case(NamedTuple):
    pattern: str
    event: str
    matches: bool


def _pattern(text: str) -> dict[str, Any]:
    value = json.loads(text, parse_float=Decimal)
    assert isinstance(value, dict)
    return value


CASES: dict[str, Case] = {
    # --- field names with dots: EventBridge joins names with "." -----------------------------
    # LocalStack: dot_joining_pattern (a dotted name in the pattern, nested fields in the event).
    "dots-in-pattern": Case(
        '{"detail": {"state.status": ["running"]}}',
        '{"detail": {"state": {"status": "running"}}}',
        True,
    ),
    # LocalStack: dot_joining_event (nested fields in the pattern, a dotted key in the event).
    "dots-in-event": Case(
        '{"detail": {"state": {"status": ["running"]}}}',
        '{"detail": {"state.status": "running"}}',
        True,
    ),
    # aws/event-ruler README, "Compiled rules and JSON keys with dots": dots on both sides.
    "dots-on-both-sides": Case(
        '{"detail": {"state.status": ["running"]}}',
        '{"detail": {"state.status": "running"}}',
        True,
    ),
    # LocalStack: dot_joining_event_NEG (the event's path is detail.state.status.status).
    "dots-in-event-longer-path": Case(
        '{"detail": {"state": {"status": ["running"]}}}',
        '{"detail": {"state.status": {"status": "running"}}}',
        False,
    ),
    # LocalStack: dot_joining_pattern_NEG (the pattern's path is detail.state.status.status).
    "dots-in-pattern-longer-path": Case(
        '{"detail": {"state.status": {"status": ["running"]}}}',
        '{"detail": {"state": {"status": "running"}}}',
        False,
    ),
    # Follows from the joining: a dotted name at the top level.
    "dots-at-the-top": Case(
        '{"detail.state": ["running"]}',
        '{"detail": {"state": "running"}}',
        True,
    ),
    # Follows from the joining: the value must still match.
    "dots-other-value": Case(
        '{"detail": {"state.status": ["running"]}}',
        '{"detail": {"state": {"status": "stopped"}}}',
        False,
    ),
    # Follows from the joining: a dotted key and nested fields in one event are one field
    # with two values; either matches, as for an array.
    "dots-both-forms-in-event-first": Case(
        '{"a": {"b": ["x"]}}',
        '{"a": {"b": "x"}, "a.b": "y"}',
        True,
    ),
    "dots-both-forms-in-event-second": Case(
        '{"a": {"b": ["y"]}}',
        '{"a": {"b": "x"}, "a.b": "y"}',
        True,
    ),
    "dots-both-forms-in-event-neither": Case(
        '{"a": {"b": ["z"]}}',
        '{"a": {"b": "x"}, "a.b": "y"}',
        False,
    ),
    # Follows from the joining: sibling fields may come from both forms.
    "dots-siblings-from-both-forms": Case(
        '{"a": {"b": ["x"], "c": ["y"]}}',
        '{"a": {"b": "x"}, "a.c": "y"}',
        True,
    ),
    # Follows from the joining, with event-ruler's array-consistent matching: a dotted name
    # reaches into an array of objects.
    "dots-into-array-of-objects": Case(
        '{"items.sku": ["A"]}',
        '{"items": [{"sku": "B"}, {"sku": "A"}]}',
        True,
    ),
    # aws/event-ruler README, "JSON Array Matching", with a dotted pattern: two fields must
    # come from the same element.
    "dots-array-consistent": Case(
        '{"items.sku": ["A"], "items.qty": [2]}',
        '{"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}]}',
        False,
    ),
    # Follows from the joining: exists false on a dotted path that is there.
    "dots-exists-false-present": Case(
        '{"a.b": [{"exists": false}]}',
        '{"a": {"b": 1}}',
        False,
    ),
    "dots-exists-false-absent": Case(
        '{"a.b": [{"exists": false}]}',
        '{"a": {"c": 1}}',
        True,
    ),
    # Follows from the joining: inside $or.
    "dots-inside-or": Case(
        '{"$or": [{"a.b": ["x"]}, {"c": ["y"]}]}',
        '{"a": {"b": "x"}}',
        True,
    ),
    # Follows from the joining: a pattern that names one path twice, once dotted and once
    # nested, uses the later one (EventBridge: "if you include a key more than once the
    # last reference will be the one used"; event-ruler's compiler replaces the path).
    "dots-same-path-twice-last-wins": Case(
        '{"a.b": ["x"], "a": {"b": ["y"]}}',
        '{"a": {"b": "y"}}',
        True,
    ),
    "dots-same-path-twice-first-ignored": Case(
        '{"a.b": ["x"], "a": {"b": ["y"]}}',
        '{"a": {"b": "x"}}',
        False,
    ),
    # Our decision (handlers/rules.py): a field really named like an operator is reached
    # with a dotted name from its parent.
    "operator-named-field-dotted": Case(
        '{"a.prefix": ["x"]}',
        '{"a": {"prefix": "x"}}',
        True,
    ),
    # Outside $or, an object with a field named like an operator beside other fields is
    # accepted, as AWS does.
    "operator-named-field-beside-others": Case(
        '{"a": {"prefix": ["x"], "b": ["y"]}}',
        '{"a": {"prefix": "x", "b": "y"}}',
        True,
    ),
    # --- numbers compare by value -----------------------------------------------------------
    # LocalStack: number_comparison_float (AWS contradicts the guide's "300, 300.0, and 3.0e2
    # are not considered equal").
    "number-300-vs-300.0": Case('{"number": [300]}', '{"number": 300.0}', True),
    # Follows from it: 3e2 is the same double.
    "number-300-vs-3e2": Case('{"number": [300]}', '{"number": 3e2}', True),
    "number-3.0e2-vs-300": Case('{"number": [3.0e2]}', '{"number": 300}', True),
    "number-0.1-vs-0.10": Case('{"number": [0.1]}', '{"number": 0.10}', True),
    "number-300-vs-300.5": Case('{"number": [300]}', '{"number": 300.5}', False),
    # Strings stay strings (event-ruler matches a string pattern by its quoted text).
    "string-300-vs-number": Case('{"number": ["300"]}', '{"number": 300}', False),
    "number-vs-string-300": Case('{"number": [300]}', '{"number": "300"}', False),
    # aws/event-ruler JsonRuleCompiler: a number a double cannot hold is matched by its
    # literal only (its comment: "an AWS account number").
    "number-beyond-double-precision-same-text": Case(
        '{"n": [12345678901234567891]}', '{"n": 12345678901234567891}', True
    ),
    "number-beyond-double-precision-other-text": Case(
        '{"n": [12345678901234567891]}', '{"n": 12345678901234567891.0}', False
    ),
    # aws/event-ruler: anything-but numbers compare as doubles, so 300.0 is 300.
    "anything-but-300-vs-300.0": Case(
        '{"x-limit": [{"anything-but": [100, 200, 300]}]}', '{"x-limit": 300.0}', False
    ),
    # LocalStack: content_anything_but_number_zero.
    "anything-but-zero": Case('{"x-limit": [{"anything-but": 0}]}', '{"x-limit": 789}', True),
    "anything-but-zero-vs-0.0": Case(
        '{"x-limit": [{"anything-but": 0}]}', '{"x-limit": 0.0}', False
    ),
    # LocalStack: numeric-int-float.
    "numeric-int-vs-float": Case(
        '{"number": [{"numeric": [">", 100]}]}', '{"number": 101.0}', True
    ),
    "numeric-equals-3e2": Case('{"number": [{"numeric": ["=", 300]}]}', '{"number": 3e2}', True),
    # LocalStack: numeric-string_NEG and numeric-null_NEG.
    "numeric-string": Case('{"number": [{"numeric": [">", 100]}]}', '{"number": "300"}', False),
    "numeric-null": Case('{"number": [{"numeric": [">", 100]}]}', '{"number": null}', False),
    # aws/event-ruler JsonRuleCompilerTest: 1E-320 (a subnormal double) is a good operand.
    "numeric-subnormal": Case('{"x": [{"numeric": ["=", 1E-320]}]}', '{"x": 1E-320}', True),
    "numeric-subnormal-above": Case('{"x": [{"numeric": [">", 1E-320]}]}', '{"x": 0}', False),
    # --- $or, exists, anything-but (LocalStack's AWS-recorded answers) ----------------------
    # LocalStack: or-numeric-anything-but and its _NEG.
    "or-numeric-anything-but": Case(
        '{"d": {"N": [{"numeric": [">", 100]}, {"anything-but": "101"}]}}',
        '{"d": {"N": "42"}}',
        True,
    ),
    "or-numeric-anything-but-neg": Case(
        '{"d": {"N": [{"numeric": [">", 100]}, {"anything-but": "101"}]}}',
        '{"d": {"N": "101"}}',
        False,
    ),
    # LocalStack: or-exists (S is absent: exists false holds).
    "or-exists": Case(
        '{"h": {"S": [{"anything-but": ["roses"]}, {"exists": false}]}}',
        '{"h": {"N": "789"}}',
        True,
    ),
    # LocalStack: or-exists-parent (the parent is absent too).
    "or-exists-parent": Case(
        '{"h": {"S": [{"anything-but": ["roses"]}, {"exists": false}]}}',
        '{"p": {"N": "789"}}',
        True,
    ),
    # LocalStack: or-anything-but.
    "or-anything-but": Case(
        '{"h": {"S": [{"anything-but": ["roses"]}, {"exists": false}]}}',
        '{"h": {"S": "ABCD", "N": "1234"}}',
        True,
    ),
    # LocalStack: arrays_empty_null_NEG and exists_list_empty_NEG.
    "empty-array-is-not-null": Case('{"resources": [null]}', '{"resources": []}', False),
    "empty-array-does-not-exist": Case(
        '{"resources": [{"exists": true}]}', '{"resources": []}', False
    ),
    # LocalStack: content_anything_but_string_null, content_anything_prefix_int_value,
    # content_anything_wildcard_int (anything-but of strings matches null and numbers).
    "anything-but-string-vs-null": Case(
        '{"state": [{"anything-but": "initializing"}]}', '{"state": null}', True
    ),
    "anything-but-prefix-vs-number": Case(
        '{"state": [{"anything-but": {"prefix": "init"}}]}', '{"state": 12}', True
    ),
    "anything-but-wildcard-vs-number": Case(
        '{"path": [{"anything-but": {"wildcard": "*/dir/*"}}]}', '{"path": 123}', True
    ),
    # LocalStack: content_ip_address_bad_type_NEG.
    "cidr-vs-number": Case('{"ip": [{"cidr": "10.0.0.0/24"}]}', '{"ip": 123}', False),
    # LocalStack: nested_json_NEG (a string holding JSON is a string).
    "json-in-a-string": Case(
        '{"detail": {"my-key": ["my-value"]}}',
        '{"detail": "{\\"my-key\\": \\"my-value\\"}"}',
        False,
    ),
    # LocalStack: content_ignorecase_empty and its _NEG.
    "ignore-case-empty": Case('{"v": [{"equals-ignore-case": ""}]}', '{"v": ""}', True),
    "ignore-case-empty-neg": Case('{"v": [{"equals-ignore-case": ""}]}', '{"v": "x"}', False),
    # --- wildcards AWS accepts ------------------------------------------------------------
    # LocalStack: content_wildcard_simplified.
    "wildcard-two-stars": Case(
        '{"arn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]}',
        '{"arn": "arn:aws:events:us-east-1:123456789012:event-bus/myEventBus"}',
        True,
    ),
    # LocalStack: content_wildcard_repeating (repeating sequences after one star).
    "wildcard-repeating-sequence": Case(
        '{"f": [{"wildcard": "/Users/*/dir/dir/dir/dir/dir/doc.txt"}]}',
        '{"f": "/Users/ls_user/dir/dir/dir/dir/dir/doc.txt"}',
        True,
    ),
    # LocalStack: content_wildcard_empty_NEG and content_anything_wildcard_empty.
    "wildcard-empty": Case('{"f": [{"wildcard": ""}]}', '{"f": "x"}', False),
    "anything-but-wildcard-empty": Case(
        '{"f": [{"anything-but": {"wildcard": ""}}]}', '{"f": "dir/init/file"}', True
    ),
    # Our decision: five stars is the most one wildcard value may hold.
    "wildcard-five-stars": Case('{"f": [{"wildcard": "*a*b*c*d*"}]}', '{"f": "xaxbxcxdx"}', True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_conformance(case: Case) -> None:
    rule = Rule("conformance", _pattern(case.pattern), ("target",))
    event = parse_event(case.event)
    assert rule.matches(event) is case.matches
    explanation = rule.explain(event)
    assert explanation.matched is case.matches
    assert explanation.reasons
    # A rule set takes another path (the event's dotted keys are looked at once for all rules).
    other = Rule("other", {"unrelated": [{"exists": False}]}, ("target",))
    found = RuleSet([other, rule]).matching_rules(event)
    assert found == ([other, rule] if case.matches else [other])
    # The router's path (orjson, guards, the slow path for floats) agrees.
    assert RuleSet([other, rule]).matching_rules_json(case.event.encode()) == found


# Patterns AWS refuses at load; ours names the place and the reason.
REFUSED: dict[str, tuple[str, str]] = {
    # aws/event-ruler JsonRuleCompilerTest, numeric "bads": beyond a double's range ...
    "numeric-1e309": ('{"x": [{"numeric": ["=", 1e309]}]}', "1E+309 is beyond the range"),
    "numeric-2.0e422": ('{"x": [{"numeric": [">=", 2.0e422]}]}', "2.0E+422 is beyond the range"),
    # ... and below its smallest value (1e-325 would read as 0).
    "numeric-1e-325": ('{"x": [{"numeric": ["=", 1e-325]}]}', "1E-325 underflows to 0"),
    "numeric-negative-underflow": ('{"x": [{"numeric": ["<", -1e-400]}]}', "underflows to 0"),
    # The same numbers as exact values and in anything-but.
    "exact-1e309": ('{"x": [1e309]}', "1E+309 is beyond the range"),
    "exact-big-integer": ('{"x": [1' + "0" * 400 + "]}", "is beyond the range"),
    "exact-1e-325": ('{"x": [1e-325]}', "1E-325 underflows to 0"),
    "anything-but-2.0e422": ('{"x": [{"anything-but": [1, 2.0e422]}]}', "2.0E+422 is beyond"),
    # aws/event-ruler ComparableNumber: numeric and anything-but compare doubles, and refuse a
    # number a double cannot hold as written.
    "numeric-too-many-digits": (
        '{"x": [{"numeric": [">", 0.30000000000000001]}]}',
        "more significant digits than a double holds",
    ),
    "anything-but-too-many-digits": (
        '{"x": [{"anything-but": 12345678901234567891}]}',
        "more significant digits than a double holds",
    ),
    # aws/event-ruler JsonRuleCompiler: operator names are reserved field names inside $or
    # (a condition that lost its field, which would never match).
    "operator-as-field-in-or": (
        '{"price": {"$or": [{"numeric": [">", 100]}, {"numeric": ["<", 10]}]}}',
        "'numeric' is an operator, not a field name: each $or branch",
    ),
    "operator-beside-field-in-or": (
        '{"$or": [{"a": ["x"], "prefix": ["y"]}, {"b": ["c"]}]}',
        "'prefix' is an operator",
    ),
    "comparison-as-field-in-or": (
        '{"$or": [{">": [0]}, {"b": ["c"]}]}',
        "'>' is an operator",
    ),
    "operator-deeper-in-or": (
        '{"$or": [{"a": {"exists": ["x"]}}, {"b": ["c"]}]}',
        "'exists' is an operator",
    ),
    # Our generalisation: an operator object where a field name is expected.
    "operator-object-as-nested-field": (
        '{"price": {"numeric": [">", 0]}}',
        "'numeric' is an operator, not a field name: an operator object goes in the field's array",
    ),
    "operator-object-at-the-top": ('{"prefix": ["x"]}', "'prefix' is an operator"),
    # LocalStack: content_wildcard_repeating_star_EXC ("Consecutive wildcard characters").
    "wildcard-consecutive": (
        '{"arn": [{"wildcard": "arn:aws:events:us-east-1:**:event-bus/*"}]}',
        "consecutive wildcard characters",
    ),
    # LocalStack: content_wildcard_complex_EXC ("Rule is too complex").
    "wildcard-too-complex": (
        '{"arn": [{"wildcard": "*:*:*:*:*:event-bus/*"}]}',
        "6 wildcard characters; at most 5 per value",
    ),
    "anything-but-wildcard-too-complex": (
        '{"f": [{"anything-but": {"wildcard": ["*/a*", "*a*b*c*d*e*f"]}}]}',
        "too complex",
    ),
}


@pytest.mark.parametrize(("pattern", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_at_load(pattern: str, reason: str) -> None:
    with pytest.raises(RuleError, match=re.escape(reason)) as caught:
        Rule("conformance", _pattern(pattern), ("target",))
    assert str(caught.value).startswith("rule 'conformance': pattern.")


def test_an_escaped_star_is_not_a_wildcard_character() -> None:
    # Six '*' of which two are escaped: four wildcards, under the limit.
    value = "a*b*c*d*" + "\\\\*\\\\*"
    rule = Rule("escaped", _pattern('{"f": [{"wildcard": "' + value + '"}]}'), ("t",))
    assert rule.matches({"f": "aXbXcXdX**"})
