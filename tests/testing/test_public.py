"""The public surface of lifecycle.testing."""

from __future__ import annotations

import inspect
import subprocess
import sys

import lifecycle.testing


def test_all_is_sorted_and_documented() -> None:
    """`__all__` lists each name once, each imports, and each says why it exists; those
    that need Hypothesis come after those that do not, each part sorted."""
    names = lifecycle.testing.__all__
    plain = names[: names.index("Delivery")]  # the first that needs Hypothesis
    assert plain == sorted(plain) and names[len(plain) :] == sorted(names[len(plain) :])
    assert len(set(names)) == len(names)
    for name in names:
        value = getattr(lifecycle.testing, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert (value.__doc__ or "").strip(), name


def test_the_plugin_needs_no_hypothesis() -> None:
    """Without Hypothesis the plugin, the model cases and assert_accepted still import."""
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import lifecycle.testing.plugin\n"
        "from lifecycle.testing import assert_accepted, transition_cases\n"
        "from lifecycle.testing import *\n"  # it had imported the strategies too
        "from lifecycle.rules import DEFAULT_POLICY\n"
        "assert transition_cases(DEFAULT_POLICY)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
