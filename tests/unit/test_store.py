"""The store's pure parts: qmark to pyformat rewriting and URL validation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation.errors import TerminalError, TransientError
from handlers.store import StoreError, open_store, to_pyformat


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ?", "SELECT %s"),
        ("UPDATE t SET a = ?, b = ? WHERE id = ?", "UPDATE t SET a = %s, b = %s WHERE id = %s"),
        ("SELECT '50% off?' WHERE a = ?", "SELECT '50%% off?' WHERE a = %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ('SELECT "odd?col%" FROM t WHERE x LIKE ?', 'SELECT "odd?col%%" FROM t WHERE x LIKE %s'),
        (
            "SELECT a % 2 FROM t -- why? 100%\nWHERE b = ?",
            "SELECT a %% 2 FROM t -- why? 100%%\nWHERE b = %s",
        ),
        ("SELECT /* ?% */ ?", "SELECT /* ?%% */ %s"),
        ("SELECT '%s'", "SELECT '%%s'"),
        ("SELECT 'unterminated ?", "SELECT 'unterminated ?"),
    ],
)
def test_to_pyformat_rewrites_only_bare_question_marks(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


@given(st.text(alphabet="?%'\"-/*\n ab", max_size=60))
def test_to_pyformat_is_reversible(sql: str) -> None:
    # Every % of the output is half of a "%%" or the start of a "%s": psycopg
    # sees no stray placeholder, and reading the pairs back gives the input.
    converted = to_pyformat(sql)
    restored = re.sub(r"%%|%s", lambda m: "%" if m.group() == "%%" else "?", converted)
    assert restored == sql
    assert re.sub(r"%%|%s", "", converted).count("%") == 0


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("mysql://alice:hunter2@db.example:3306/app", "'mysql'"),
        ("redis://:hunter2@cache/0", "'redis'"),
        ("hunter2", "no scheme"),
        ("sqlite://alice:hunter2@host/state.db", "sqlite:///"),
        ("sqlite:///:memory:", "file path"),
        ("sqlite:///", "file path"),
        ("sqlite:///state.db?mode=ro", "query string"),
        ("postgresql://alice:hun%ter2@localhost/app", "invalid percent-encoded"),
        ("postgresql://alice:hunter2@localhost/app?bogus=1", "bogus"),
        ("postgres://localhost/app?password=hunter2&bogus=1", "bogus"),
        ("postgresql://alice:hunter2@localhost:fivefour/app", "port"),
    ],
)
def test_bad_url_names_the_problem_but_not_the_password(url: str, named: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert named in message
    assert "hunter2" not in message
    assert "ter2" not in message
    assert isinstance(caught.value, TerminalError)


def test_unreachable_postgres_is_transient_and_keeps_the_password() -> None:
    # Nothing listens on port 1 of the loopback: refused at once.
    with pytest.raises(TransientError) as caught:
        open_store("postgresql://alice:hunter2@127.0.0.1:1/app?connect_timeout=5")
    assert "127.0.0.1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
