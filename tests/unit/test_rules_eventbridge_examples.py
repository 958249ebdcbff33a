"""The matcher against the examples of the Amazon EventBridge user guide, case by case.

Each case is a pattern and an event as the guide prints them (JSON text, parsed
with floats as Decimal so that number literals survive), and whether the guide
says the pattern matches. A comment names the page and section; pages are under
https://docs.aws.amazon.com/eventbridge/latest/userguide/. Where the guide shows
only a pattern, the event is the smallest one its sentence describes. A few
cases come from the README of aws/event-ruler, the library behind EventBridge's
matching, and say so.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, NamedTuple

import pytest

from handlers.rules import Rule, RuleError, parse_event


class DocCase(NamedTuple):
    pattern: str
    event: str
    matches: bool


def _pattern(text: str) -> dict[str, Any]:
    value = json.loads(text, parse_float=Decimal)
    assert isinstance(value, dict)
    return value


# eb-event-patterns.html: the Amazon EC2 event of the page's first example.
EC2_TERMINATED = """{
  "version": "0",
  "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
  "detail-type": "EC2 Instance State-change Notification",
  "source": "aws.ec2",
  "account": "111122223333",
  "time": "2017-12-22T18:43:48Z",
  "region": "us-west-1",
  "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
  "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"}
}"""

# eb-event-patterns-null-values.html: the Auto Scaling event of the page.
AUTOSCALING = """{
  "version": "0",
  "id": "3e3c153a-8339-4e30-8c35-687ebef853fe",
  "detail-type": "EC2 Instance Launch Successful",
  "source": "aws.autoscaling",
  "account": "123456789012",
  "time": "2015-11-11T21:31:47Z",
  "region": "us-east-1",
  "resources": [],
  "detail": {"eventVersion": "", "responseElements": null}
}"""

# eb-event-patterns.html#eb-filtering-value-example: the (truncated) Macie alert.
MACIE_ALERT = """{
  "version": "0",
  "id": "3e355723-fca9-4de3-9fd7-154c289d6b59",
  "detail-type": "Macie Alert",
  "source": "aws.macie",
  "account": "123456789012",
  "time": "2017-04-24T22:28:49Z",
  "region": "us-east-1",
  "resources": [
    "arn:aws:macie:us-east-1:123456789012:trigger/trigger_id/alert/alert_id",
    "arn:aws:macie:us-east-1:123456789012:trigger/trigger_id"
  ],
  "detail": {
    "notification-type": "ALERT_CREATED",
    "name": "Scanning bucket policies",
    "tags": ["Custom_Alert", "Insider"],
    "risk-score": 80,
    "trigger": {"alert-type": "basic", "risk": 8}
  }
}"""

# aws/event-ruler README, "Ruler by Example": the event all its examples run on.
RULER_EVENT = """{
  "version": "0",
  "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
  "detail-type": "EC2 Instance State-change Notification",
  "source": "aws.ec2",
  "account": "012345679012",
  "time": "2017-10-02T16:24:49Z",
  "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
  "detail": {
    "c-count": 5,
    "d-count": 3,
    "x-limit": 301.8,
    "source-ip": "10.0.0.33",
    "instance-id": "i-000000aaaaaa00000",
    "state": "running"
  }
}"""

# eb-event-patterns-content-based-filtering.html#eb-filtering-exists-matching: the pending event.
EC2_PENDING = """{
  "version": "0",
  "id": "7bf73129-1428-4cd3-a780-95db273d1602",
  "detail-type": "EC2 Instance State-change Notification",
  "source": "aws.ec2",
  "account": "123456789012",
  "time": "2015-11-11T21:29:54Z",
  "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
  "detail": {"instance-id": "i-abcd1111", "state": "pending"}
}"""

# Same section: the event whose c-count is an object, not a leaf. (The guide's
# text lacks a comma after the "state" array; it is added here.)
C_COUNT_OBJECT = """{
  "detail-type": ["EC2 Instance State-change Notification"],
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-02ebd4584a2ebd341"],
  "detail": {"state": ["initializing", "running"], "c-count": {"c1": 100}}
}"""

# Same section (older revision of the page): the event with no c-count at all.
NO_C_COUNT = """{
  "detail-type": ["EC2 Instance State-change Notification"],
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-02ebd4584a2ebd341"],
  "detail": {"state": ["initializing", "running"]}
}"""

CASES: dict[str, DocCase] = {
    # eb-event-patterns.html (first example): all EC2 instance-termination events.
    "ec2-terminated": DocCase(
        """{"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": ["terminated"]}}""",
        EC2_TERMINATED,
        True,
    ),
    # eb-event-patterns.html#eb-create-pattern: "the event must contain all the field
    # names listed in the event pattern".
    "field-missing-from-event": DocCase(
        """{"source": ["aws.ec2"], "detail": {"state": ["terminated"], "cause": ["user"]}}""",
        EC2_TERMINATED,
        False,
    ),
    # eb-event-patterns.html#eb-create-pattern: "the field names must also appear in the
    # event with the same nesting structure" (state is under detail, not at the top).
    "same-nesting-structure": DocCase(
        """{"state": ["terminated"]}""",
        EC2_TERMINATED,
        False,
    ),
    # eb-event-patterns.html#eb-filtering-match-values: events from EC2 or Fargate.
    "match-values-any-of": DocCase(
        """{"source": ["aws.ec2", "aws.fargate"]}""",
        EC2_TERMINATED,
        True,
    ),
    # eb-event-patterns.html#eb-filtering-match-values: a source in neither list.
    "match-values-none-of": DocCase(
        """{"source": ["aws.s3", "aws.fargate"]}""",
        EC2_TERMINATED,
        False,
    ),
    # eb-event-patterns.html#eb-create-pattern: "exact character-by-character matching
    # without case-folding or any other string normalization".
    "no-case-folding": DocCase(
        """{"source": ["AWS.EC2"]}""",
        EC2_TERMINATED,
        False,
    ),
    # eb-event-patterns.html#eb-create-pattern says "For numbers, EventBridge uses string
    # representation. For example, 300, 300.0, and 3.0e2 are not considered equal." AWS
    # answers otherwise (TestEventPattern, as recorded by LocalStack's AWS-validated
    # pattern suite): equal values match, and AWS is the reference.
    "number-300-vs-300.0": DocCase("""{"x": [300]}""", """{"x": 300.0}""", True),
    # Same sentence, same answer from AWS.
    "number-300.0-vs-3.0e2": DocCase("""{"x": [300.0]}""", """{"x": 3.0e2}""", True),
    # Same sentence: the same text is equal.
    "number-300-vs-300": DocCase("""{"x": [300]}""", """{"x": 300}""", True),
    # Same sentence: another value is not.
    "number-300-vs-301": DocCase("""{"x": [300]}""", """{"x": 3.01e2}""", False),
    # eb-event-patterns.html#eb-filtering-example (field matching): responseElements is null.
    "field-matching-null": DocCase(
        """{"source": ["aws.autoscaling"], "detail-type": ["EC2 Instance Launch Successful"],
            "detail": {"responseElements": [null]}}""",
        AUTOSCALING,
        True,
    ),
    # eb-event-patterns.html#eb-filtering-value-example: risk score 80 and trigger risk 8.
    "value-matching-macie": DocCase(
        """{"source": ["aws.macie"], "detail-type": ["Macie Alert"],
            "detail": {"risk-score": [80], "trigger": {"risk": [8]}}}""",
        MACIE_ALERT,
        True,
    ),
    # eb-event-patterns-null-values.html: eventVersion is an empty string.
    "empty-string": DocCase("""{"detail": {"eventVersion": [""]}}""", AUTOSCALING, True),
    # eb-event-patterns-null-values.html: responseElements is null.
    "null-value": DocCase("""{"detail": {"responseElements": [null]}}""", AUTOSCALING, True),
    # eb-event-patterns-null-values.html, note: "An event pattern that matches empty strings
    # doesn't match values of null."
    "empty-string-is-not-null": DocCase(
        """{"detail": {"responseElements": [""]}}""", AUTOSCALING, False
    ),
    # Same note, the other way round.
    "null-is-not-empty-string": DocCase(
        """{"detail": {"eventVersion": [null]}}""", AUTOSCALING, False
    ),
    # eb-event-patterns-arrays.html: the first item of the pattern's array matches the
    # second item of the event's array.
    "arrays-intersect": DocCase(
        """{"resources": [
              "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
              "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
              "arn:aws:ec2:us-east-1:444455556666:instance/i-b188560f"]}""",
        """{"resources": [
              "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:eb56d16b-bbf0-401d-b893-d5978ed4a025:autoScalingGroupName/ASGTerminate",
              "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}""",
        True,
    ),
    # eb-event-patterns-arrays.html: "matches if the intersection ... is non-empty";
    # here it is empty.
    "arrays-disjoint": DocCase(
        """{"resources": ["arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f"]}""",
        """{"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}""",
        False,
    ),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-prefix-matching.
    "prefix": DocCase(
        """{"time": [{"prefix": "2017-10-02"}]}""",
        """{"time": "2017-10-02T18:43:48Z"}""",
        True,
    ),
    # Same section: another day does not start with the prefix.
    "prefix-other-day": DocCase(
        """{"time": [{"prefix": "2017-10-02"}]}""",
        """{"time": "2017-10-03T18:43:48Z"}""",
        False,
    ),
    # Same section: "You can use prefix matching for string values" (not for numbers).
    "prefix-only-strings": DocCase(
        """{"code": [{"prefix": "20"}]}""",
        """{"code": 2017}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Begins with (ignore case)": service starts with
    # "eventb" regardless of case.
    "prefix-ignore-case": DocCase(
        """{"service": [{"prefix": {"equals-ignore-case": "eventb"}}]}""",
        """{"service": "EventBridge"}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Ends with": FileName ends with .png.
    "suffix": DocCase(
        """{"FileName": [{"suffix": ".png"}]}""",
        """{"FileName": "holiday.png"}""",
        True,
    ),
    # Same row: a .jpg does not end with .png.
    "suffix-other-extension": DocCase(
        """{"FileName": [{"suffix": ".png"}]}""",
        """{"FileName": "holiday.jpg"}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Ends with (ignore case)": "tbridge" or "TBRIDGE".
    "suffix-ignore-case": DocCase(
        """{"service": [{"suffix": {"equals-ignore-case": "tBridge"}}]}""",
        """{"service": "EVENTBRIDGE"}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Equals (ignore case)": Name is "Alice".
    "equals-ignore-case": DocCase(
        """{"Name": [{"equals-ignore-case": "alice"}]}""",
        """{"Name": "Alice"}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Equals": Name is "Alice" (case matters).
    "equals-is-case-sensitive": DocCase(
        """{"Name": ["Alice"]}""",
        """{"Name": "alice"}""",
        False,
    ),
    # eb-create-pattern-operators.html, "And": Location is "New York" and Day is "Monday".
    "and": DocCase(
        """{"Location": ["New York"], "Day": ["Monday"]}""",
        """{"Location": "New York", "Day": "Tuesday"}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Or": PaymentType is "Credit" or "Debit".
    "or-values": DocCase(
        """{"PaymentType": ["Credit", "Debit"]}""",
        """{"PaymentType": "Debit"}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Or (multiple fields)": Location is "New York",
    # or Day is "Monday".
    "or-fields": DocCase(
        """{"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}""",
        """{"Location": "Boston", "Day": "Monday"}""",
        True,
    ),
    # Same row: neither branch holds.
    "or-fields-neither": DocCase(
        """{"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}""",
        """{"Location": "Boston", "Day": "Friday"}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Empty": LastName is empty.
    "empty": DocCase("""{"LastName": [""]}""", """{"LastName": ""}""", True),
    # eb-create-pattern-operators.html, "Null": UserID is null.
    "null": DocCase("""{"UserID": [null]}""", """{"UserID": null}""", True),
    # eb-create-pattern-operators.html, "Not": Weather is anything but "Raining".
    "not": DocCase(
        """{"Weather": [{"anything-but": ["Raining"]}]}""",
        """{"Weather": "Sunny"}""",
        True,
    ),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-anything-but: a string.
    "anything-but-string": DocCase(
        """{"detail": {"state": [{"anything-but": "initializing"}]}}""",
        """{"detail": {"state": "initializing"}}""",
        False,
    ),
    # Same section: a number.
    "anything-but-number": DocCase(
        """{"detail": {"x-limit": [{"anything-but": 123}]}}""",
        """{"detail": {"x-limit": 124}}""",
        True,
    ),
    # Same section: a list of strings.
    "anything-but-strings": DocCase(
        """{"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}""",
        """{"detail": {"state": "overloaded"}}""",
        False,
    ),
    # Same section: a list of numbers.
    "anything-but-numbers": DocCase(
        """{"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}""",
        RULER_EVENT,
        True,
    ),
    # Same section: "doesn't have the prefix "init" in the "state" field".
    "anything-but-prefix": DocCase(
        """{"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}""",
        """{"detail": {"state": "initializing"}}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Anything-but (begins with)": Region is not in the US.
    "anything-but-prefix-other-region": DocCase(
        """{"Region": [{"anything-but": {"prefix": "us-"}}]}""",
        """{"Region": "eu-west-1"}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Anything-but (ends with)": not a .png file.
    "anything-but-suffix": DocCase(
        """{"FileName": [{"anything-but": {"suffix": ".png"}}]}""",
        """{"FileName": "holiday.png"}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Anything-but (ignore case)": any value besides
    # "initializing" in any casing, such as "INITIALIZING".
    "anything-but-ignore-case": DocCase(
        """{"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}""",
        """{"state": "INITIALIZING"}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Anything-but using a wildcard": not a path
    # that includes /lib/.
    "anything-but-wildcard": DocCase(
        """{"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}""",
        """{"FilePath": "/usr/lib/libc.so"}""",
        False,
    ),
    # Same row: a path without /lib/.
    "anything-but-wildcard-other-path": DocCase(
        """{"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}""",
        """{"FilePath": "/usr/bin/env"}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Wildcard": any .png file in the folder "dir".
    "wildcard": DocCase(
        """{"FileName": [{"wildcard": "dir/*.png"}]}""",
        """{"FileName": "dir/holiday.png"}""",
        True,
    ),
    # Same row: a .png outside "dir".
    "wildcard-other-folder": DocCase(
        """{"FileName": [{"wildcard": "dir/*.png"}]}""",
        """{"FileName": "other/holiday.png"}""",
        False,
    ),
    # eb-create-pattern-operators.html#eb-filtering-wildcard-matching: "The string \\*
    # represents the literal * character" (JSON text "\\\\*" is the two characters \\*).
    "wildcard-escaped-star": DocCase(
        """{"name": [{"wildcard": "a\\\\*b"}]}""",
        """{"name": "axb"}""",
        False,
    ),
    # Same section: the escaped star matches a literal star.
    "wildcard-escaped-star-literal": DocCase(
        """{"name": [{"wildcard": "a\\\\*b"}]}""",
        """{"name": "a*b"}""",
        True,
    ),
    # aws/event-ruler README, "Wildcard matching": "Simple*Service".
    "wildcard-ruler": DocCase(
        """{"source": [{"wildcard": "Simple*Service"}]}""",
        """{"source": "SimpleQueueService"}""",
        True,
    ),
    # eb-event-patterns-content-based-filtering.html#filtering-numeric-matching: all three
    # fields of the page's example, on event-ruler's example event (5, 3, 301.8).
    "numeric": DocCase(
        """{"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}],
                       "d-count": [{"numeric": ["<", 10]}],
                       "x-limit": [{"numeric": ["=", 3.018e2]}]}}""",
        RULER_EVENT,
        True,
    ),
    # Same section: c-count 6 is past the upper bound "<=", 5.
    "numeric-above-range": DocCase(
        """{"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}""",
        """{"detail": {"c-count": 6}}""",
        False,
    ),
    # Same section: "Numeric matching works with values that are JSON numbers".
    "numeric-only-json-numbers": DocCase(
        """{"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}""",
        """{"detail": {"c-count": "5"}}""",
        False,
    ),
    # eb-create-pattern-operators.html, "Numeric (equals)": Price is 100 (by value).
    "numeric-equals": DocCase(
        """{"Price": [{"numeric": ["=", 100]}]}""",
        """{"Price": 100.0}""",
        True,
    ),
    # eb-create-pattern-operators.html, "Numeric (range)": more than 10, at most 20.
    "numeric-range-lower-bound-open": DocCase(
        """{"Price": [{"numeric": [">", 10, "<=", 20]}]}""",
        """{"Price": 10}""",
        False,
    ),
    # Same row: the upper bound is closed.
    "numeric-range-upper-bound-closed": DocCase(
        """{"Price": [{"numeric": [">", 10, "<=", 20]}]}""",
        """{"Price": 20}""",
        True,
    ),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-ip-matching.
    "cidr": DocCase(
        """{"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}""",
        """{"detail": {"sourceIPAddress": "10.0.0.255"}}""",
        True,
    ),
    # Same section: outside the block.
    "cidr-outside": DocCase(
        """{"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}""",
        """{"detail": {"sourceIPAddress": "10.0.1.1"}}""",
        False,
    ),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-exists-matching: the
    # event has a detail.state field.
    "exists-true": DocCase("""{"detail": {"state": [{"exists": true}]}}""", EC2_PENDING, True),
    # Same section: "does NOT match the following event because it doesn't have a
    # detail.state field".
    "exists-true-absent": DocCase(
        """{"detail": {"state": [{"exists": true}]}}""",
        """{"detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"c-count": {"c1": 100}}}""",
        False,
    ),
    # Same section: "matches any event that does not have a detail.c-count field".
    "exists-false": DocCase("""{"detail": {"c-count": [{"exists": false}]}}""", NO_C_COUNT, True),
    # Same section: also matches "because c-count isn't a leaf node".
    "exists-false-not-a-leaf": DocCase(
        """{"detail": {"c-count": [{"exists": false}]}}""", C_COUNT_OBJECT, True
    ),
    # Same section, a field that is there.
    "exists-false-present": DocCase(
        """{"detail": {"c-count": [{"exists": false}]}}""", RULER_EVENT, False
    ),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-complex-example.
    "complex": DocCase(
        """{"time": [{"prefix": "2017-10-02"}],
            "detail": {"state": [{"anything-but": "initializing"}],
                       "c-count": [{"numeric": [">", 0, "<=", 5]}],
                       "d-count": [{"numeric": ["<", 10]}],
                       "x-limit": [{"anything-but": [100, 200, 300]}]}}""",
        RULER_EVENT,
        True,
    ),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-complex-example, note:
    # "if you include a key more than once the last reference will be the one used".
    "repeated-key-last-wins": DocCase(
        """{"detail": {"location": [{"prefix": "us-"}],
                       "location": [{"anything-but": "us-east"}]}}""",
        """{"detail": {"location": "eu-west"}}""",
        True,
    ),
    # aws/event-ruler README, "And and Or": "source" && ("metricName" || "namespace").
    "or-inside-and": DocCase(
        """{"source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                    {"namespace": ["AWS/EC2", "AWS/ES"]}]}""",
        """{"source": "aws.cloudwatch", "metricName": "DiskIO", "namespace": "AWS/ES"}""",
        True,
    ),
    # aws/event-ruler README, "Nested Or and And": the inner $or needs metricId or spaceId.
    "nested-or-and": DocCase(
        """{"source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization", "ReadLatency"]},
                    {"metricType": ["MetricType"], "namespace": ["AWS/EC2", "AWS/ES"],
                     "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]},
                    {"scope": ["Service"]}]}""",
        """{"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2",
            "spaceId": 999}""",
        False,
    ),
    # aws/event-ruler README, "JSON Array Matching": a field inside an array of objects.
    "array-of-objects": DocCase(
        """{"employees": {"firstName": ["Anna"]}}""",
        """{"employees": [{"firstName": "John", "lastName": "Doe"},
                          {"firstName": "Anna", "lastName": "Smith"},
                          {"firstName": "Peter", "lastName": "Jones"}]}""",
        True,
    ),
    # Same section: rulesForJSONEvent "will refuse to recognize any match in which any two
    # fields are within JSON objects that are in different elements of the same array".
    "array-consistent": DocCase(
        """{"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}""",
        """{"employees": [{"firstName": "John", "lastName": "Doe"},
                          {"firstName": "Anna", "lastName": "Smith"},
                          {"firstName": "Peter", "lastName": "Jones"}]}""",
        False,
    ),
    # Same section: "This works for multi-level arrays too".
    "multi-level-arrays": DocCase(
        """{"employees": {"firstName": ["Peter"]}}""",
        """{"employees": [[{"firstName": "John", "lastName": "Doe"},
                           {"firstName": "Anna", "lastName": "Smith"}],
                          [{"firstName": "Peter", "lastName": "Jones"}]]}""",
        True,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_documented_example(case: DocCase) -> None:
    rule = Rule("doc-example", _pattern(case.pattern), ("target",))
    event = parse_event(case.event)
    assert rule.matches(event) is case.matches
    explanation = rule.explain(event)
    assert explanation.matched is case.matches
    assert explanation.reasons


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert {case.matches for case in CASES.values()} == {True, False}


# Patterns the documentation refuses or says are not supported.
REFUSED: dict[str, tuple[str, str]] = {
    # eb-create-pattern-operators.html#eb-filtering-wildcard-matching: "Using the backslash
    # to escape other characters is not supported."
    "wildcard-bad-escape": ("""{"a": [{"wildcard": "a\\\\b*"}]}""", "backslash escapes only"),
    # aws/event-ruler README, "Wildcard matching": "consecutive wildcard characters are not
    # allowed".
    "wildcard-consecutive": ("""{"a": [{"wildcard": "a**b"}]}""", "consecutive wildcard"),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-anything-but: "lists that
    # contain only strings, or only numbers".
    "anything-but-mixed-list": ("""{"a": [{"anything-but": ["x", 1]}]}""", "only strings"),
    # eb-event-patterns.html#eb-filtering-match-values: "the value to match is in a JSON
    # array".
    "value-not-in-an-array": ("""{"source": "aws.ec2"}""", "must be a list of match values"),
    # eb-event-patterns-content-based-filtering.html#filtering-numeric-matching: a range is
    # a lower then an upper bound, as in [">", 0, "<=", 5].
    "numeric-bounds-reversed": ("""{"a": [{"numeric": ["<", 5, ">", 0]}]}""", "lower bound"),
    # eb-event-patterns-content-based-filtering.html#eb-filtering-exists-matching: exists
    # is true or false.
    "exists-not-boolean": ("""{"a": [{"exists": "yes"}]}""", "exists takes true or false"),
}


@pytest.mark.parametrize(("pattern", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_documented_refusal(pattern: str, reason: str) -> None:
    with pytest.raises(RuleError, match=reason) as caught:
        Rule("doc-refusal", _pattern(pattern), ("target",))
    assert str(caught.value).startswith("rule 'doc-refusal': pattern.")
