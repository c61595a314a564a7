"""The shape of the package: public surface and the direction of imports."""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
from pathlib import Path

import lifecycle

PACKAGE = Path(lifecycle.__file__).resolve().parent
PURE = [
    "spec",
    "envelope",
    "policy",
    "rules",
    "state",
    "decide",
    "gate",
    "messages",
    "_frozen",
    "wire",
]
OUTSIDE_THE_CORE = ("sqlalchemy", "alembic", "segment", "requests", "tqdm", "hypothesis")
SHELLS = tuple(
    f"lifecycle.{name}"
    for name in ("store", "service", "replay", "cli", "relay", "testing", "reader", "sorting")
)


def imports_of(path: Path) -> set[str]:
    """Every module a source file imports (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_all_is_exactly_the_public_surface() -> None:
    """`lifecycle.__all__` lists each public name once, and each one imports."""
    assert len(set(lifecycle.__all__)) == len(lifecycle.__all__)
    for name in lifecycle.__all__:
        assert getattr(lifecycle, name) is not None, name
    exported = {
        name
        for name, value in vars(lifecycle).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
        and name not in {"TYPE_CHECKING", "Any"}
    }  # fmt: skip
    assert exported <= set(lifecycle.__all__)


def test_every_public_name_has_a_docstring() -> None:
    """Every public class and function says why it exists (the API reference is built from it)."""
    missing = [
        name
        for name in lifecycle.__all__
        if (inspect.isclass(obj := getattr(lifecycle, name)) or inspect.isfunction(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert missing == []


def test_the_core_is_pure() -> None:
    """spec, envelope, policy, rules, state, decide and gate import no storage, delivery or CLI."""
    for module in PURE:
        for name in imports_of(PACKAGE / f"{module}.py"):
            assert not name.startswith(OUTSIDE_THE_CORE), f"{module} imports {name}"
            assert not name.startswith(SHELLS), f"{module} imports {name}"


def test_only_the_policy_module_imports_transitions() -> None:
    """The `transitions` library is the policy's business alone."""
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.startswith("transitions") for name in imports_of(path))
    )
    assert users == ["policy.py"]


def test_nothing_imports_the_cli() -> None:
    """The command line is a leaf: no library module depends on it."""
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts or path.name == "__main__.py":
            continue
        assert not any(n.startswith("lifecycle.cli") for n in imports_of(path)), path


def _declared_floor(requirement: str) -> tuple[int, ...]:
    """The version after ``>=`` of one requirement of pyproject.toml, as a tuple."""
    match = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    assert match, requirement
    return tuple(int(part) for part in match.group(1).split("."))


def test_the_declared_sqlalchemy_floor_runs_a_store_transaction() -> None:
    """pyproject's ``sqlalchemy>=`` names a version `Lifecycle.transaction()` works on.

    A store transaction follows its connection's savepoints with ``event.listen`` on that
    connection (``_Overlay.listen``), and the connection comes from the store's write
    engine, an ``Engine.execution_options(...)`` copy. Before SQLAlchemy 2.0.38 such a
    connection took no listeners ("No such event 'savepoint' for target ..."): with
    2.0.0-2.0.37, which ``sqlalchemy>=2.0`` lets pip keep, every ``lifecycle ingest`` and
    every ``Lifecycle.transaction()`` failed with "database error" (exit 2), nothing stored.
    """
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    (requirement,) = [
        r for r in pyproject["project"]["dependencies"] if r.lower().startswith("sqlalchemy")
    ]
    assert _declared_floor(requirement) >= (2, 0, 38), requirement
