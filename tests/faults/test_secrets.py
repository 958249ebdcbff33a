"""The SASL password is never printed: not in logs, errors, help or dead letters.

Everything runs with ``KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT``, mechanism
``PLAIN``, user ``u`` and a fresh random password, at ``STREAMBATCH_LOG_LEVEL=DEBUG``,
against the embedded broker, which does not authenticate, so every client
fails its SASL handshake and says so on stderr: the orders flow (killed after
15 s if still running, and once more left to fail by itself), ``streambatch
produce`` with a small count (it gives up after its 60 s flush), ``streambatch
dlq inspect`` (killed after 15 s), every command's ``--help``, and bad
configurations with the password set. They run side by side: the test takes
about as long as produce's flush.

Pass: the password appears 0 times in all captured output (also base64-encoded
in the PLAIN token form, and hex-encoded), and 0 times in the dead-letter
topic's headers and values.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from generator import generate_order_records
from tests.support import REPO_ROOT, StreamTopics, flow_command, flow_env, read_topic, send

pytestmark = pytest.mark.slow

HELP_COMMANDS = (
    (),
    ("broker",),
    ("produce",),
    ("query",),
    ("dlq",),
    ("dlq", "inspect"),
    ("dlq", "redrive"),
    ("demo",),
    ("bench",),
)


@dataclass
class Run:
    """A child process whose stdout and stderr go to one file."""

    name: str
    command: Sequence[str]
    env: dict[str, str]
    kill_after: float
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    returncode: int | None = field(default=None)

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                list(self.command), env=self.env, cwd=REPO_ROOT, stdout=out, stderr=out
            )
        self.started = time.monotonic()

    def finish(self) -> None:
        assert self.process is not None
        left = self.started + self.kill_after - time.monotonic()
        try:
            self.returncode = self.process.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def output(self) -> bytes:
        return self.log.read_bytes()


def forms_of(secret: str, username: str) -> list[bytes]:
    """The secret as it could leak: plain, in a base64 SASL PLAIN token, as hex."""
    raw = secret.encode()
    token = b"\0" + username.encode() + b"\0" + raw
    return [raw, base64.b64encode(token), base64.b64encode(raw), raw.hex().encode()]


def test_the_sasl_password_is_never_printed_or_dead_lettered(
    topics: StreamTopics, data_dir: Path, tmp_path: Path
) -> None:
    secret = "pw-" + secrets.token_urlsafe(24)
    # Input with malformed records: had the flow got through, there would be letters.
    send(topics, generate_order_records(200, seed=3, malformed_ratio=0.1))
    sasl = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "u",
        "KAFKA_SASL_PASSWORD": secret,
        "STREAMBATCH_LOG_LEVEL": "DEBUG",
    }
    env = flow_env(topics, data_dir, **sasl)
    cli = [sys.executable, "-m", "streambatch.cli"]

    long_runs = [
        Run("flow", flow_command(), env, 15, tmp_path / "flow.log"),
        # The same, left to give up by itself (its metadata request times out after
        # 30 s), in parallel with produce's 60 s flush, so its last words are checked too.
        Run("flow to its end", flow_command(), env, 55, tmp_path / "flow-end.log"),
        Run("produce", [*cli, "produce", "--count", "20"], env, 90, tmp_path / "produce.log"),
        Run("dlq inspect", [*cli, "dlq", "inspect"], env, 15, tmp_path / "inspect.log"),
    ]
    runs: list[Run] = []
    for i, words in enumerate(HELP_COMMANDS):
        runs.append(Run(f"help {words}", [*cli, *words, "--help"], env, 60, tmp_path / f"h{i}.log"))
    bad_configs = {
        "window": {"STREAMBATCH_WINDOW_SECONDS": "bad"},
        "protocol": {"KAFKA_SECURITY_PROTOCOL": "SASL_BOGUS"},
        "mechanism": {"KAFKA_SASL_MECHANISM": "GSSAPI"},
        "no user": {"KAFKA_SASL_USERNAME": ""},
        "no mechanism": {"KAFKA_SASL_MECHANISM": ""},
    }
    for name, change in bad_configs.items():
        bad = {**env, **change}
        runs.append(Run(f"flow, {name}", flow_command(), bad, 60, tmp_path / f"f-{name}.log"))
        produce = [*cli, "produce", "--count", "5"]
        runs.append(Run(f"produce, {name}", produce, bad, 60, tmp_path / f"p-{name}.log"))

    for run in long_runs:
        run.start()
    # The short runs in small groups, so that they do not delay produce's start.
    time.sleep(5)
    for start in range(0, len(runs), 4):
        group = runs[start : start + 4]
        for run in group:
            run.start()
        for run in group:
            run.finish()
    for run in long_runs:
        run.finish()
    runs += long_runs

    forms = forms_of(secret, "u")
    leaks = {run.name: sum(run.output().count(f) for f in forms) for run in runs}
    assert leaks == dict.fromkeys(leaks, 0)

    # The runs did what they were meant to: failed to authenticate, or refused the config.
    outputs = {run.name: run.output().decode(errors="replace") for run in runs}
    assert "SASL" in outputs["flow"], outputs["flow"][-2000:]
    assert "SASL" in outputs["produce"], outputs["produce"][-2000:]
    flow_end = next(r for r in runs if r.name == "flow to its end")
    assert flow_end.returncode not in (None, 0), outputs[flow_end.name][-2000:]
    for words in HELP_COMMANDS:
        run = next(r for r in runs if r.name == f"help {words}")
        assert run.returncode == 0 and "Usage" in outputs[run.name], outputs[run.name][-2000:]
    for name in bad_configs:
        for kind in ("flow", "produce"):
            run = next(r for r in runs if r.name == f"{kind}, {name}")
            assert run.returncode == 2, (run.name, outputs[run.name][-2000:])
            assert "Traceback" not in outputs[run.name], outputs[run.name][-2000:]

    letters = read_topic(topics.bootstrap_servers, topics.dead_letter_topic)
    for message in letters:
        blobs = [message.value() or b"", message.key() or b""]
        blobs += [value or b"" for _, value in message.headers() or []]
        assert not any(f in blob for blob in blobs for f in forms)
    assert os.environ.get("KAFKA_SASL_PASSWORD") != secret  # the test's own env stays clean
