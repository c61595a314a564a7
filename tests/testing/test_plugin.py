"""The pytest plugin's fixtures and the verdict-table assertion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from lifecycle import Gate, Lifecycle
from lifecycle.testing import assert_accepted

CREATED = {"event": "Account Created", "userId": "u1", "context": {"groupId": "acct_1"}}
SIGNED_IN = {"event": "Signed In", "userId": "u1", "context": {"groupId": "acct_1"}}
SIGNED_UP = {"event": "Signed Up", "userId": "u1", "context": {"groupId": "acct_1"}}


def test_assert_accepted_returns_the_verdicts() -> None:
    """A legal history passes and its verdicts come back."""
    verdicts = assert_accepted(Gate(), [CREATED, SIGNED_UP, SIGNED_IN])
    assert [v.verdict for v in verdicts] == ["accepted"] * 3


def test_assert_accepted_shows_a_verdict_table() -> None:
    """A refused message fails with a table: index, event, account, user, verdict, code, reason."""
    with pytest.raises(AssertionError) as failure:
        assert_accepted(Gate(), [CREATED, SIGNED_IN, "not json"])
    text = str(failure.value)
    assert text.startswith("2 of 3 messages not accepted; first at #1: rejected user_unknown")
    lines = text.splitlines()
    assert lines[1].split() == ["#", "event", "account", "user", "verdict", "code", "reason"]
    assert lines[2].split()[:5] == ["0", "Account", "Created", "acct_1", "u1"]
    assert "!rejected  user_unknown" in lines[3]
    assert "Signed In for acct_1 by u1: user u1 is unknown" in lines[3]
    assert "malformed_json" in lines[4]


@pytest.mark.parametrize("store", [False, True], ids=["gate", "store"])
def test_assert_accepted_checks_every_item_of_a_batch_given_as_text(
    store: bool, tmp_path: Path
) -> None:
    """A batch line is as many messages as it has items: only its first verdict was checked,
    so a batch whose later items were refused passed. An empty batch fails."""
    target = Lifecycle(f"sqlite:///{tmp_path / 'a.db'}") if store else Gate()
    batch = {"batch": [CREATED, SIGNED_IN, CREATED]}
    with pytest.raises(AssertionError) as failure:
        assert_accepted(target, [orjson.dumps(batch)])
    # As a dict too: `submit` takes it as a batch, and answers for its first item alone.
    with pytest.raises(AssertionError, match="2 of 3 messages not accepted; first at #1"):
        assert_accepted(Lifecycle(f"sqlite:///{tmp_path / 'b.db'}") if store else Gate(), [batch])
    lines = str(failure.value).splitlines()
    assert lines[0] == "2 of 3 messages not accepted; first at #1: rejected user_unknown"
    assert [line.split()[0] for line in lines[2:]] == ["0", "1", "2"]
    assert "account_exists" in lines[4]
    fine = orjson.dumps({"batch": [SIGNED_UP, SIGNED_IN]}).decode()
    assert [v.verdict for v in assert_accepted(target, [fine])] == ["accepted"] * 2
    with pytest.raises(AssertionError, match="rejected malformed_json"):
        assert_accepted(target, ['{"batch": []}'])


@pytest.mark.parametrize(
    "given", [CREATED, orjson.dumps(CREATED).decode(), {}, ""], ids=["dict", "text", "{}", "''"]
)
def test_one_message_where_a_list_is_expected_is_a_type_error(given: object) -> None:
    """A dict was iterated by its keys and a string by its characters: failures about
    malformed keys, or, for an empty one, an assertion that passed on nothing."""
    with pytest.raises(TypeError, match=r"^assert_accepted takes an iterable of messages, got "):
        assert_accepted(Gate(), given)  # type: ignore[arg-type]


def test_fixtures_are_provided(pytester: pytest.Pytester) -> None:
    """The entry-point plugin gives a fresh gate and a closed-afterwards SQLite store."""
    pytester.makepyfile(
        """
        from lifecycle.testing import assert_accepted

        CREATED = {"event": "Account Created", "userId": "u1", "context": {"groupId": "a1"}}

        def test_gate(lifecycle_gate):
            assert len(lifecycle_gate) == 0
            assert_accepted(lifecycle_gate, [CREATED])

        def test_gate_is_fresh(lifecycle_gate):
            assert lifecycle_gate.state("a1") is None

        def test_store(lifecycle_store):
            assert_accepted(lifecycle_store, [CREATED])
            assert lifecycle_store.state("a1").status == "created"

        def test_refusal_table(lifecycle_gate):
            assert_accepted(lifecycle_gate, [CREATED, CREATED])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*first at #1: rejected account_exists*", "*#*event*account*"])


def test_policy_fixture_can_be_overridden(pytester: pytest.Pytester) -> None:
    """Overriding lifecycle_policy changes the policy of the gate fixture."""
    pytester.makeconftest(
        """
        import pytest
        from lifecycle.rules import DEFAULT_POLICY

        RELAXED = DEFAULT_POLICY.without_guard("Signed In", "user_known")

        @pytest.fixture
        def lifecycle_policy():
            return RELAXED
        """
    )
    pytester.makepyfile(
        """
        def test_relaxed(lifecycle_gate):
            assert lifecycle_gate.policy.name.endswith("-user_known")
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_strategies_pass_the_health_checks_in_a_fresh_checkout(tmp_path: Path) -> None:
    """The first run of a property test over the strategies, with no `.hypothesis` directory
    yet (a new CI runner), failed the `too_slow` health check every time: Hypothesis built
    its Unicode table inside the first timed draw."""
    (tmp_path / "test_fresh.py").write_text(
        "from hypothesis import given\n"
        "from lifecycle import Gate\n"
        "from lifecycle.testing import assert_accepted, legal_histories\n"
        "@given(legal_histories())\n"
        "def test_legal(history):\n"
        "    assert_accepted(Gate(), history)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "test_fresh.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / ".hypothesis" / "unicode_data").exists()  # it was built in this run
