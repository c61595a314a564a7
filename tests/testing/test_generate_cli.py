"""`lifecycle generate`: deterministic JSONL whose sidecar matches what `check` says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle import DEFAULT_POLICY, AccountState, Gate, Guard
from lifecycle.generate import generate


def lifecycle(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", *args], capture_output=True, cwd=cwd, check=False
    )


def test_sidecar_matches_check(tmp_path: Path) -> None:
    """Each expected verdict of the sidecar is exactly what `lifecycle check` gives that line."""
    data, expected = tmp_path / "events.jsonl", tmp_path / "expected.jsonl"
    done = lifecycle(
        "generate", "--accounts", "8", "--events", "600", "--seed", "7",
        "--illegal-rate", "0.15", "--out", str(data), "--expected", str(expected),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    checked = lifecycle("check", "--format", "jsonl", str(data))
    assert checked.returncode == 1, checked.stderr
    got = [
        {k: r.get(k) for k in ("line", "messageId", "verdict", "code")}
        for r in map(orjson.loads, checked.stdout.splitlines())
    ]
    want = [orjson.loads(line) for line in expected.read_bytes().splitlines()]
    assert len(want) == 600
    assert {w["verdict"] for w in want} >= {"accepted", "rejected", "duplicate"}
    assert got == want


def test_output_is_deterministic() -> None:
    """The same arguments write the same bytes to stdout, and every message is accepted."""
    first = lifecycle("generate", "--accounts", "3", "--events", "50", "--seed", "1")
    again = lifecycle("generate", "--accounts", "3", "--events", "50", "--seed", "1")
    assert first.returncode == 0 and first.stdout == again.stdout
    assert len(first.stdout.splitlines()) == 50


def test_bad_arguments_are_usage_errors() -> None:
    """An out-of-range rate exits 2 with one line on stderr."""
    done = lifecycle("generate", "--accounts", "1", "--events", "5", "--illegal-rate", "2")
    assert done.returncode == 2
    assert done.stderr.decode().count("\n") == 1
    # Python's generator takes the absolute value of a seed: -1 wrote what 1 writes.
    negative = lifecycle("generate", "--accounts", "1", "--events", "5", "--seed", "-1")
    assert negative.returncode == 2 and b"--seed" in negative.stderr


def test_an_output_that_cannot_be_written_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    """--out or --expected in a missing directory or naming one: exit 2, one line naming it,
    and neither file left behind."""
    missing = tmp_path / "missing" / "history.jsonl"
    done = lifecycle("generate", "--accounts", "1", "--events", "5", "--out", str(missing))
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.decode() == (
        f"lifecycle: error: cannot write {missing}: No such file or directory\n"
    )
    sidecar = tmp_path / "expected.jsonl"
    done = lifecycle("generate", "--accounts", "1", "--events", "5", "--out", str(tmp_path),
                     "--expected", str(sidecar))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode() == f"lifecycle: error: cannot write {tmp_path}: Is a directory\n"
    assert not sidecar.exists(), "no half-made output is left behind"
    done = lifecycle("generate", "--accounts", "1", "--events", "5", "--out", str(sidecar),
                     "--expected", str(missing))  # fmt: skip
    assert done.returncode == 2 and not sidecar.exists()


def test_out_and_expected_naming_one_file_is_a_usage_error(tmp_path: Path) -> None:
    """--out and --expected naming the same file, however spelled, exit 2 naming both and
    write nothing (two handles wrote over each other, exit 0); the same for both on stdout."""
    first = ("generate", "--accounts", "1", "--events", "5")
    (tmp_path / "linked.jsonl").symlink_to(tmp_path / "h.jsonl")
    for out, expected in [("h.jsonl", "h.jsonl"), ("h.jsonl", "./h.jsonl"),
                          ("linked.jsonl", str(tmp_path / "h.jsonl"))]:  # fmt: skip
        done = lifecycle(*first, "--out", out, "--expected", expected, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b"")
        assert done.stderr.decode() == (
            f"lifecycle generate: error: --out {out} and --expected {expected} name the same file\n"
        )
        assert not (tmp_path / "h.jsonl").exists()
    (tmp_path / "h.jsonl").write_bytes(b"")
    (tmp_path / "hard.jsonl").hardlink_to(tmp_path / "h.jsonl")
    done = lifecycle(*first, "--out", "hard.jsonl", "--expected", "h.jsonl", cwd=tmp_path)
    assert done.returncode == 2 and (tmp_path / "h.jsonl").read_bytes() == b""
    for both in (("--out", "-", "--expected", "-"), ("--expected", "-")):
        done = lifecycle(*first, *both, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (2, b"")
        assert done.stderr.decode() == (
            "lifecycle generate: error: --out and --expected would both write to standard output\n"
        )


def test_expected_naming_what_standard_output_is_is_a_usage_error(tmp_path: Path) -> None:
    """Standard output is a file too: ``--expected f > f``, ``--expected /dev/stdout`` and
    ``--out /dev/stdout --expected -`` each wrote the messages and the verdicts over each
    other, exit 0, because only the spelling ``-`` was compared."""
    first = [sys.executable, "-m", "lifecycle", "generate", "--accounts", "1", "--events", "5"]
    for options in (["--expected", "h.jsonl"], ["--expected", "/dev/stdout"],
                    ["--out", "/dev/stdout", "--expected", "-"]):  # fmt: skip
        with open(tmp_path / "h.jsonl", "wb") as stdout:
            done = subprocess.run([*first, *options], cwd=tmp_path, stdout=stdout,
                                  stderr=subprocess.PIPE)  # fmt: skip
        assert done.returncode == 2, (options, done.stderr)
        assert b"name the same file" in done.stderr
        assert (tmp_path / "h.jsonl").read_bytes() == b""
    # Both thrown away is no clash: a load test that wants neither was refused.
    with open(os.devnull, "wb") as stdout:
        done = subprocess.run([*first, "--expected", os.devnull], stdout=stdout,
                              stderr=subprocess.PIPE)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, b"")


def test_a_dash_is_standard_output(tmp_path: Path) -> None:
    """--out - writes the messages to stdout, --expected - the verdicts (a file named `-`
    was written instead)."""
    first = ("generate", "--accounts", "1", "--events", "5")
    messages = lifecycle(*first).stdout
    done = lifecycle(*first, "--out", "-", "--expected", "e.jsonl", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, messages)
    verdicts = (tmp_path / "e.jsonl").read_bytes()
    done = lifecycle(*first, "--out", "m.jsonl", "--expected", "-", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, verdicts)
    assert (tmp_path / "m.jsonl").read_bytes() == messages
    assert not (tmp_path / "-").exists()


@settings(max_examples=40, deadline=None)
@given(
    accounts=st.integers(1, 60),
    events=st.integers(0, 120),
    rate=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**32),
)
def test_expected_verdicts_are_the_gates(
    accounts: int, events: int, rate: float, seed: int
) -> None:
    """Whatever the sizes, each message comes with the verdict a gate gives it."""
    from lifecycle import Gate
    from lifecycle.generate import generate

    generated = list(generate(accounts=accounts, events=events, seed=seed, illegal_rate=rate))
    assert len(generated) == events
    gate = Gate()
    for message in generated:
        verdict = gate.submit(message.message)
        assert (verdict.verdict, verdict.code) == (message.verdict, message.code)
    if rate == 0.0:
        assert {m.verdict for m in generated} <= {"accepted"}


def test_the_rate_holds_with_as_many_accounts_as_events() -> None:
    """With as many accounts as events every message was an `Account Created`, and no
    rate gave a single violation."""
    from lifecycle.generate import generate

    for accounts, events in ((100, 100), (200, 50)):
        generated = list(generate(accounts=accounts, events=events, seed=1, illegal_rate=0.5))
        illegal = sum(m.verdict != "accepted" for m in generated) / events
        assert 0.35 <= illegal <= 0.65, (accounts, events, illegal)


def test_a_policy_that_refuses_every_account_is_an_error(tmp_path: Path) -> None:
    """It was a ValueError raised on the way: a traceback, "internal error", exit 70."""
    (tmp_path / "nocreate.py").write_text(
        "from lifecycle import DEFAULT_POLICY, Guard\n"
        "NOCREATE = DEFAULT_POLICY.with_guard(\n"
        "    'Account Created', Guard('never', 'no_create', lambda state, event: 'never')\n"
        ")\n"
    )
    done = lifecycle("generate", "--accounts", "3", "--events", "10", "--policy",
                     "nocreate:NOCREATE", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "lifecycle generate: error: policy 'b2b-saas+never' accepted none of the 3 Account Created "
        "messages: there is no account to go on with"
    ]


def _terms(state: AccountState, event: Any) -> str | None:
    return None if event.properties.get("accepted_terms") is True else "terms not accepted"


def _not_owner(state: AccountState, event: Any) -> str | None:
    return "owners are set by billing" if event.properties.get("role") == "Owner" else None


#: Sign-ups must accept the terms, and no one is added as Owner by the product: every
#: founder's onboarding is refused.
STRICT = DEFAULT_POLICY.with_guard(
    "Signed Up", Guard("terms_accepted", "terms_not_accepted", _terms)
).with_guard("Account Added User", Guard("not_owner", "owner_not_allowed", _not_owner))


def test_generate_goes_on_around_refused_onboarding() -> None:
    """The simulation moves on from what was accepted only: under a policy that refuses
    every founder's onboarding an account has no member, and picking one to sign in
    failed with an IndexError (`lifecycle generate --policy` exited 70)."""
    out = list(generate(accounts=3, events=30, seed=0, policy=STRICT))
    assert len(out) == 30
    gate = Gate(STRICT)
    assert [(g.verdict, g.code) for g in out] == [
        (v.verdict, v.code) for v in (gate.submit(g.message) for g in out)
    ]
