"""Policies: an account state machine on `transitions`, checked when built, compiled once.

A :class:`Policy` is a value. Its definition is written in the dictionary
format of the ``transitions`` library (``trigger``, ``source``, ``dest``,
``conditions``, ``after``) and a ``transitions.Machine`` is built from it once;
that machine is the single source of truth. The hot path never runs the
machine: :meth:`Policy.rule` reads a table compiled from the machine's own
introspection, one entry per (state, event) pair (a test proves the two agree).

What ``transitions`` does not do, a policy does:

* it checks its definition (unknown states, guards and effects, unreachable
  states, live states with no way out, events no state accepts, missing
  rejection codes) and raises :class:`~lifecycle.errors.PolicyError`;
* a failed condition carries a code and a reason (:class:`Guard`), not just
  ``False``;
* it is extended without forking (:meth:`Policy.extend`,
  :meth:`Policy.without_guard`).

Pure: no I/O. This is the only module that imports ``transitions``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from transitions import Machine

from lifecycle.envelope import Event, catalog_index
from lifecycle.errors import PolicyError
from lifecycle.spec import EventSpec, PropertyType
from lifecycle.state import AccountState, TrialState, UserState

#: What an effect returns: the account's users and trial after the event.
Change = tuple[Mapping[str, UserState], TrialState | None]
#: An effect: applies an accepted event to the users and trial of an account.
Effect = Callable[[AccountState, Event], Change]


@dataclass(frozen=True, slots=True)
class Guard:
    """A named condition with a rejection code.

    ``check(state, event)`` returns None when the event may proceed, else a
    sentence saying what was expected. ``transitions`` only sees the guard's
    name; the code and the sentence are what make a rejection explainable.
    """

    name: str
    code: str
    check: Callable[[AccountState, Event], str | None]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The code and sentence used when an event is not allowed in the account's state."""

    code: str
    expected: str


@dataclass(frozen=True, slots=True)
class Rule:
    """The compiled form of one (state, event) transition.

    ``dest`` is the state after the event (the same state for internal
    transitions); ``guards`` run in order and the first that fails decides the
    code; ``effects`` then update users and trial.
    """

    event: str
    source: str
    dest: str
    guards: tuple[Guard, ...]
    effects: tuple[Effect, ...]


#: Code used for any event on an account that was never created.
ACCOUNT_UNKNOWN = Refusal("account_unknown", "the account was never created")
#: Code used for any event on an account in a final state.
ACCOUNT_DELETED = Refusal("account_deleted", "the account was deleted")
#: Code used for a creating event on an account that is live.
ACCOUNT_EXISTS = Refusal("account_exists", "the account already exists")


class Policy:
    """A lifecycle policy: the event catalog, the account machine, its guards and effects.

    Build one with keyword arguments (every check runs then) or derive one from
    an existing policy with :meth:`extend` / :meth:`without_guard`. Instances
    are immutable and safe to share between threads.
    """

    def __init__(
        self,
        *,
        name: str,
        states: Sequence[str],
        initial: str,
        final: Sequence[str],
        events: Sequence[EventSpec],
        transitions: Sequence[Mapping[str, Any]],
        guards: Iterable[Guard] = (),
        effects: Mapping[str, Effect] | None = None,
        refusals: Mapping[str, Refusal] | None = None,
    ) -> None:
        self.name = name
        self.states: tuple[str, ...] = tuple(states)
        self.initial = initial
        self.final: tuple[str, ...] = tuple(final)
        self.events: tuple[EventSpec, ...] = tuple(events)
        self.transitions: tuple[Mapping[str, Any], ...] = tuple(
            MappingProxyType(_normalize(t)) for t in transitions
        )
        self.guards: Mapping[str, Guard] = MappingProxyType(_by_name(name, guards))
        self.effects: Mapping[str, Effect] = MappingProxyType(dict(effects or {}))
        self.refusals: Mapping[str, Refusal] = MappingProxyType(dict(refusals or {}))
        self.catalog: Mapping[str, EventSpec] = MappingProxyType(catalog_index(self.events))
        _check_definition(self)
        self.machine = Machine(
            model=None,
            states=[{"name": s, "final": s in self.final} for s in self.states],
            initial=self.initial,
            transitions=[dict(t) for t in self.transitions],
            auto_transitions=False,
            send_event=True,
        )
        self._table = _compile(self)
        _check_graph(self)
        _check_refusals(self)
        _check_lengths(self)
        self.fingerprint = _fingerprint(self)

    def __setattr__(self, name: str, value: Any) -> None:
        # Built, a policy is a value: snapshots carry its fingerprint, and a state machine
        # changed in place (``policy.final = ()``) would keep the old one.
        if "fingerprint" in self.__dict__:
            raise AttributeError(
                f"policy {self.name!r} cannot be changed: derive a new one with extend(), "
                "with_guard() or without_guard()"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"policy {self.name!r} cannot be changed")

    # -- reading the compiled table -------------------------------------------------

    def rule(self, state: str, event: str) -> Rule | Refusal:
        """The transition for ``event`` in ``state``, or the refusal that applies."""
        return self._table[state, event]

    @property
    def table(self) -> Mapping[tuple[str, str], Rule | Refusal]:
        """Every (state, event) pair with its compiled rule or refusal."""
        return MappingProxyType(self._table)

    @property
    def live_states(self) -> tuple[str, ...]:
        """States of an account that exists and is not final."""
        return tuple(s for s in self.states if s != self.initial and s not in self.final)

    @property
    def codes(self) -> tuple[str, ...]:
        """Every rejection code this policy can produce after the envelope checks."""
        seen: dict[str, None] = {}
        for entry in self._table.values():
            if isinstance(entry, Refusal):
                seen[entry.code] = None
            else:
                for guard in entry.guards:
                    seen[guard.code] = None
        return tuple(seen)

    def accepts(self, state: str, event: str) -> bool:
        """True when some history could accept ``event`` in ``state``."""
        return isinstance(self._table[state, event], Rule)

    # -- deriving policies -------------------------------------------------------------

    def extend(
        self,
        *,
        name: str | None = None,
        states: Sequence[str] = (),
        events: Sequence[EventSpec] = (),
        transitions: Sequence[Mapping[str, Any]] = (),
        guards: Iterable[Guard] = (),
        effects: Mapping[str, Effect] | None = None,
        refusals: Mapping[str, Refusal] | None = None,
    ) -> Policy:
        """A new policy with more states, events, transitions, guards, effects or refusals.

        Example: a custom event that activates an account without a trial::

            policy = DEFAULT_POLICY.extend(
                name="with-subscriptions",
                events=[EventSpec("Subscription Started", {"plan_name": STRING})],
                transitions=[{"trigger": "Subscription Started",
                              "source": "created", "dest": "active"}],
                refusals={"Subscription Started": Refusal(
                    "subscription_not_allowed", "a subscription starts only on a new account")},
            )
        """
        return Policy(
            name=name or f"{self.name}+",
            states=[*self.states, *(s for s in states if s not in self.states)],
            initial=self.initial,
            final=self.final,
            events=[*self.events, *events],
            transitions=[*self.transitions, *transitions],
            guards=[*self.guards.values(), *guards],
            effects={**self.effects, **(effects or {})},
            refusals={**self.refusals, **(refusals or {})},
        )

    def without_guard(self, event: str, guard: str, *, name: str | None = None) -> Policy:
        """A new policy in which ``guard`` no longer applies to ``event`` (relaxing a rule)."""
        return self._with_conditions(
            event,
            lambda conditions: (
                [c for c in conditions if c != guard] if guard in conditions else None
            ),
            missing=f"event {event!r} has no guard {guard!r}",
            name=name or f"{self.name}-{guard}",
        )

    def with_guard(self, event: str, guard: Guard, *, name: str | None = None) -> Policy:
        """A new policy in which ``guard`` also applies to ``event``, after its own guards.

        Tightens a rule: e.g. ``Signed In`` must carry a ``username``. The guard's
        code is a new rejection code of the new policy. A guard the event has already
        is a :class:`PolicyError` (it would run twice).
        """

        def added(conditions: list[str]) -> list[str]:
            if guard.name in conditions:
                raise PolicyError(f"policy {self.name!r}: {event!r} has guard {guard.name!r}")
            return [*conditions, guard.name]

        return self._with_conditions(
            event,
            added,
            missing=f"no state accepts event {event!r}",
            name=name or f"{self.name}+{guard.name}",
            guards=[guard],
        )

    def _with_conditions(
        self,
        event: str,
        change: Callable[[list[str]], list[str] | None],
        *,
        missing: str,
        name: str,
        guards: Iterable[Guard] = (),
    ) -> Policy:
        spec = self.catalog.get(event)
        event = spec.name if spec is not None else event  # an alias means its event
        transitions = []
        changed = False
        for t in self.transitions:
            conditions = change(list(t["conditions"])) if t["trigger"] == event else None
            if conditions is not None:
                t = {**t, "conditions": conditions}
                changed = True
            transitions.append(t)
        if not changed:
            raise PolicyError(f"policy {self.name!r}: {missing}")
        return Policy(
            name=name,
            states=self.states,
            initial=self.initial,
            final=self.final,
            events=self.events,
            transitions=transitions,
            guards=[*self.guards.values(), *guards],
            effects=self.effects,
            refusals=self.refusals,
        )

    # -- rendering -----------------------------------------------------------------------

    def diagram(self, format: str = "mermaid") -> str:
        """The account machine as a Mermaid ``stateDiagram-v2`` or a Graphviz ``dot`` graph."""
        edges = self._edges()
        if format == "mermaid":
            return self._mermaid(edges)
        if format == "dot":
            return self._dot(edges)
        raise ValueError(f"unknown diagram format {format!r}: use 'mermaid' or 'dot'")

    def _mermaid(self, edges: dict[tuple[str, str], list[str]]) -> str:
        """Mermaid's ``stateDiagram-v2``. A state whose name Mermaid would not read as one
        id (``past-due``, ``on hold``: a parse error, or two states) is declared under an
        alias, its name as the label."""
        lines = ["stateDiagram-v2"]
        ids = {state: state for state in self.states}
        taken = {state.lower() for state in self.states}
        for n, state in enumerate(self.states):
            if state != self.initial and not _mermaid_id(state):
                alias = f"s{n}"
                while alias.lower() in taken:  # a state of that name: another id
                    alias = f"_{alias}"
                taken.add(alias.lower())
                ids[state] = alias
                lines.append(f'    state "{_mermaid_text(state)}" as {alias}')
        for (src, dest), labels in edges.items():
            left = "[*]" if src == self.initial else ids[src]
            text = "<br/>".join(_mermaid_text(label) for label in labels)
            lines.append(f"    {left} --> {ids[dest]}: {text}")
        lines.extend(f"    {ids[state]} --> [*]" for state in self.final)
        return "\n".join(lines) + "\n"

    def _dot(self, edges: dict[tuple[str, str], list[str]]) -> str:
        """Graphviz ``dot``, every name quoted (and its quotes escaped)."""
        lines = [f"digraph {_dot_id(self.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
        lines.append(f"    {_dot_id(self.initial)} [shape=point];")
        lines.extend(f"    {_dot_id(state)} [shape=doublecircle];" for state in self.final)
        for (src, dest), labels in edges.items():
            # "\n" is dot's line break inside a label.
            label = '"' + "\\n".join(_dot_text(label) for label in labels) + '"'
            lines.append(f"    {_dot_id(src)} -> {_dot_id(dest)} [label={label}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _edges(self) -> dict[tuple[str, str], list[str]]:
        edges: dict[tuple[str, str], list[str]] = {}
        for (state, event), entry in self._table.items():
            if isinstance(entry, Rule):
                label = event
                if entry.guards:
                    label += " [" + ", ".join(g.name for g in entry.guards) + "]"
                edges.setdefault((state, entry.dest), []).append(label)
        order = {state: i for i, state in enumerate(self.states)}
        return dict(sorted(edges.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]])))

    def __repr__(self) -> str:
        return f"<Policy {self.name!r} {len(self.states)} states, {len(self.events)} events>"


#: A state name Mermaid reads as one id as it stands.
_MERMAID_ID = re.compile(r"[A-Za-z_][\w]*", re.A)
#: Words Mermaid's stateDiagram lexer reads as keywords, in any case (it is case-insensitive).
_MERMAID_KEYWORDS = frozenset({
    "state", "note", "direction", "class", "classdef", "end", "default", "click", "href",
    "style", "scale", "acctitle", "accdescr", "hide", "root_start", "root_end",
})  # fmt: skip


def _mermaid_id(state: str) -> bool:
    """Whether Mermaid reads ``state`` as one id, and not as one of its keywords."""
    return bool(_MERMAID_ID.fullmatch(state)) and state.lower() not in _MERMAID_KEYWORDS


def _mermaid_text(text: str) -> str:
    """``text`` for a Mermaid label or quoted name: its quotes, colons, semicolons (the end
    of a statement) and angle brackets as entity codes, which Mermaid shows as the
    characters. In one pass: the codes hold ``#`` and ``;`` themselves."""
    return "".join(_MERMAID_ENTITIES.get(char, char) for char in text)


_MERMAID_ENTITIES = {"#": "#35;", '"': "#quot;", ":": "#58;", ";": "#59;", "<": "#lt;", ">": "#gt;"}


def _dot_id(text: str) -> str:
    """``text`` as a quoted dot id: in a quoted string dot reads only ``\\"`` as an escape."""
    return '"' + _dot_text(text) + '"'


def _dot_text(text: str) -> str:
    """``text`` inside a quoted dot string: its quotes escaped and its backslashes doubled
    (a name ending in one escaped the closing quote; dot shows ``\\\\`` as one)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


# -- building ------------------------------------------------------------------------------


def checked(policy: object) -> Policy:
    """``policy``, or a ``TypeError`` saying it is not one (``None`` got as far as the
    first message, failing there with an ``AttributeError`` about ``None``)."""
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a lifecycle Policy, got {policy!r}")
    return policy


def _by_name(policy: str, guards: Iterable[Guard]) -> dict[str, Guard]:
    """The guards by name. A name given to two guards is an error: the second had
    replaced the first on every transition that names it (a guard to tighten one
    event, named as one of the default guards, loosened another)."""
    found: dict[str, Guard] = {}
    for guard in guards:
        if not isinstance(guard, Guard):
            raise PolicyError(f"policy {policy!r}: guards must be Guards, got {guard!r}")
        if not _name_like(guard.name) or not _name_like(guard.code) or not callable(guard.check):
            raise PolicyError(
                f"policy {policy!r}: guard {guard.name!r}: its name and code must be non-empty "
                f"strings and its check a function, got code {guard.code!r}, "
                f"check {guard.check!r}"
            )
        if found.get(guard.name, guard) != guard:
            raise PolicyError(
                f"policy {policy!r}: two guards are named {guard.name!r}: a transition names "
                "its guards, so each needs a name of its own"
            )
        found[guard.name] = guard
    return found


def _name_like(value: object) -> bool:
    """A name or code a policy can use: a non-empty string."""
    return isinstance(value, str) and value != ""


def _normalize(t: Mapping[str, Any]) -> dict[str, Any]:
    """One transition in a canonical form: lists for source/conditions/after."""
    unknown = set(t) - {"trigger", "source", "dest", "conditions", "after"}
    if unknown:
        raise PolicyError(f"transition {dict(t)!r}: unsupported keys {sorted(unknown)}")
    if "trigger" not in t or "source" not in t:
        raise PolicyError(f"transition {dict(t)!r}: needs 'trigger' and 'source'")
    if not isinstance(t["trigger"], str):
        raise PolicyError(f"transition {dict(t)!r}: 'trigger' is one event name")
    if not isinstance(t.get("dest"), (str, type(None))):
        raise PolicyError(f"transition {dict(t)!r}: 'dest' is one state, or None")

    def as_list(value: Any) -> list[str]:
        if value is None:
            return []
        return [value] if isinstance(value, str) else list(value)

    return {
        "trigger": t["trigger"],
        "source": as_list(t["source"]),
        "dest": t.get("dest"),
        "conditions": as_list(t.get("conditions")),
        "after": as_list(t.get("after")),
    }


def _check_definition(policy: Policy) -> None:
    """Checks that need only the definition (before ``transitions`` sees it)."""
    where = f"policy {policy.name!r}"
    states = set(policy.states)
    if len(states) != len(policy.states):
        raise PolicyError(f"{where}: a state is listed twice in {list(policy.states)}")
    if policy.initial not in states:
        raise PolicyError(f"{where}: initial state {policy.initial!r} is not a state")
    for state in policy.final:
        if state not in states:
            raise PolicyError(f"{where}: final state {state!r} is not a state")
    for spec in policy.events:
        if not isinstance(spec, EventSpec):
            raise PolicyError(f"{where}: events must be EventSpecs, got {spec!r}")
        if (
            not _name_like(spec.name)
            or not isinstance(spec.aliases, (tuple, list))
            or not all(_name_like(alias) for alias in spec.aliases)
        ):
            raise PolicyError(
                f"{where}: event {spec.name!r}: its name must be a non-empty string and its "
                f"aliases a tuple of them, got aliases {spec.aliases!r}"
            )
        for prop, kind in spec.properties.items():
            if not isinstance(kind, PropertyType):
                raise PolicyError(
                    f"{where}: event {spec.name!r}: property {prop!r} has type {kind!r}, "
                    "not a PropertyType (STRING or DATE)"
                )
    names = [n for spec in policy.events for n in (spec.name, *spec.aliases)]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise PolicyError(f"{where}: event names defined twice: {sorted(duplicates)}")
    canonical = {spec.name for spec in policy.events}
    for event, refusal in policy.refusals.items():
        if event not in canonical:
            raise PolicyError(f"{where}: a refusal for {event!r}, which is not in the catalog")
        if not isinstance(refusal, Refusal) or not _name_like(refusal.code):
            raise PolicyError(
                f"{where}: the refusal for {event!r} must be a Refusal with a non-empty "
                f"code, got {refusal!r}"
            )
    for name, effect in policy.effects.items():
        if not callable(effect):
            raise PolicyError(f"{where}: effect {name!r} is not a function: {effect!r}")
    seen: set[tuple[str, str]] = set()
    for t in policy.transitions:
        trigger = t["trigger"]
        what = f"{where}: transition {trigger!r}"
        if trigger not in canonical:
            raise PolicyError(f"{what}: unknown event (not in the policy's catalog)")
        for source in t["source"]:
            if source not in states:
                raise PolicyError(f"{what}: unknown source state {source!r}")
            if source in policy.final:
                raise PolicyError(f"{what}: leaves final state {source!r}")
            if (source, trigger) in seen:
                raise PolicyError(f"{what}: defined twice from state {source!r}")
            seen.add((source, trigger))
        if t["dest"] is not None and t["dest"] not in states:
            raise PolicyError(f"{what}: unknown target state {t['dest']!r}")
        for guard in t["conditions"]:
            if guard not in policy.guards:
                raise PolicyError(f"{what}: unknown guard {guard!r}")
        for effect in t["after"]:
            if effect not in policy.effects:
                raise PolicyError(f"{what}: unknown effect {effect!r}")


def _compile(policy: Policy) -> dict[tuple[str, str], Rule | Refusal]:
    """Read the ``transitions`` machine into a table with one entry per (state, event)."""
    table: dict[tuple[str, str], Rule | Refusal] = {}
    creating = {
        name for name, ev in policy.machine.events.items() if ev.transitions.get(policy.initial)
    }
    for spec in policy.events:
        event = policy.machine.events.get(spec.name)
        for state in policy.states:
            found = event.transitions.get(state, []) if event is not None else []
            if found:
                (t,) = found  # one transition per (state, event), checked above
                table[state, spec.name] = Rule(
                    spec.name,
                    state,
                    t.dest if t.dest is not None else state,
                    tuple(policy.guards[str(c.func)] for c in t.conditions),
                    tuple(policy.effects[str(name)] for name in t.after),
                )
            else:
                table[state, spec.name] = _refusal(policy, state, spec.name, creating)
    return table


def _refusal(policy: Policy, state: str, event: str, creating: set[str]) -> Refusal:
    if state in policy.final:
        return ACCOUNT_DELETED
    if event in creating:
        return ACCOUNT_EXISTS
    if state == policy.initial:
        return ACCOUNT_UNKNOWN
    return policy.refusals.get(event, _NO_REFUSAL)


#: Where a live state refuses an event the policy gave no refusal for: an error, raised
#: by :func:`_check_refusals` once the graph's own checks have said what they find.
_NO_REFUSAL = Refusal("", "")


def _check_refusals(policy: Policy) -> None:
    for (state, event), entry in policy.table.items():
        if entry is _NO_REFUSAL:
            raise PolicyError(
                f"policy {policy.name!r}: event {event!r} is not allowed in state {state!r} "
                "and has no refusal (add refusals={event: Refusal(code, expected)})"
            )


#: The longest state name, event name and rejection code the event store can hold
#: (``account_heads.status``, ``events.event``, ``quarantine.code``).
MAX_STATE_CHARS, MAX_EVENT_CHARS, MAX_CODE_CHARS = 64, 255, 64


def _check_lengths(policy: Policy) -> None:
    """Names that would not fit their store columns fail here, not at the first write."""
    where = f"policy {policy.name!r}"
    limits = [
        ("state", policy.states, MAX_STATE_CHARS),
        ("event name", [n for spec in policy.events for n in (spec.name, *spec.aliases)],
         MAX_EVENT_CHARS),
        ("rejection code", policy.codes, MAX_CODE_CHARS),
    ]  # fmt: skip
    for what, names, limit in limits:
        for name in names:
            if len(name) > limit:
                raise PolicyError(
                    f"{where}: {what} {name[:40]!r}... is {len(name)} characters; "
                    f"the event store holds at most {limit}"
                )


def _check_graph(policy: Policy) -> None:
    """Checks on the compiled graph: reachability, ways out, events nobody accepts."""
    where = f"policy {policy.name!r}"
    successors: dict[str, set[str]] = {s: set() for s in policy.states}
    accepted: set[str] = set()
    for (state, event), entry in policy.table.items():
        if isinstance(entry, Rule):
            successors[state].add(entry.dest)
            accepted.add(event)
    for spec in policy.events:
        if spec.name not in accepted:
            raise PolicyError(f"{where}: no state accepts event {spec.name!r}")
    reached, todo = {policy.initial}, [policy.initial]
    while todo:
        for nxt in successors[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    unreachable = [s for s in policy.states if s not in reached]
    if unreachable:
        raise PolicyError(f"{where}: no event reaches state(s) {unreachable}")
    for state in policy.states:
        if state not in policy.final and not successors[state] - {state}:
            raise PolicyError(f"{where}: state {state!r} is not final and no event leaves it")


def _fingerprint(policy: Policy) -> str:
    """A stable hash of the definition; snapshots made under another policy are ignored.

    Guards and effects count by what they do, not only by name: a function whose body
    changed (the next version of your rules) or a lambda is told apart by its code.
    """

    def qualname(fn: Callable[..., Any]) -> str:
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return f"{name}:{_code_digest(fn)}"

    definition = {
        "states": policy.states,
        "initial": policy.initial,
        "final": policy.final,
        "events": [
            [s.name, list(s.aliases), {k: v.value for k, v in s.properties.items()}]
            for s in policy.events
        ],
        "transitions": [dict(t) for t in policy.transitions],
        "guards": {n: [g.code, qualname(g.check)] for n, g in sorted(policy.guards.items())},
        "effects": {n: qualname(fn) for n, fn in sorted(policy.effects.items())},
        "refusals": {e: [r.code, r.expected] for e, r in sorted(policy.refusals.items())},
    }
    blob = json.dumps(definition, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _code_digest(fn: Callable[..., Any], depth: int = 0) -> str:
    """A hash of what ``fn`` runs: its bytecode, constants, defaults, the values it closes
    over, and the same of the functions it calls by name from its module (for a
    partial: its function and arguments). Other callables count by their type's name;
    the same Python version gives the same digest in every process."""
    parts: list[bytes] = []
    _describe(fn, parts, depth=depth, seen=set())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


#: How far the functions a function calls are followed (a helper of a helper of ...).
_DEPTH = 8


def _describe(value: Any, parts: list[bytes], depth: int, seen: set[int]) -> None:
    if depth > _DEPTH or id(value) in seen:  # recursion, or a deep chain of calls
        parts.append(b"...")
        return
    if isinstance(value, functools.partial):
        parts.append(b"partial")
        _describe(value.func, parts, depth + 1, seen)
        parts.append(_stable_repr((value.args, sorted(value.keywords.items())), depth + 1).encode())
        return
    code = getattr(value, "__code__", None)
    if not isinstance(code, types.CodeType):
        parts.append(f"{type(value).__module__}.{type(value).__qualname__}".encode())
        return
    seen.add(id(value))
    _describe_code(code, parts)
    parts.append(_stable_repr(getattr(value, "__defaults__", None), depth + 1).encode())
    parts.append(_stable_repr(getattr(value, "__kwdefaults__", None), depth + 1).encode())
    for cell in getattr(value, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            parts.append(b"<empty>")
            continue
        if callable(content):
            _describe(content, parts, depth + 1, seen)
        else:
            parts.append(_stable_repr(content, depth + 1).encode())
    # A helper it calls by name, or a constant of its module it reads: changing either
    # changes what this function does.
    found = getattr(value, "__globals__", {})
    for name in _names(code):
        helper = found.get(name)
        if isinstance(helper, types.FunctionType):
            parts.append(name.encode())
            _describe(helper, parts, depth + 1, seen)
        elif _plain(helper):
            parts.append(f"{name}={_stable_repr(helper)}".encode())


#: Values a module constant holds that count in a fingerprint.
_SCALARS = (str, bytes, int, float, complex, enum.Enum, type(None))


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is data written in the source: scalars, and containers of them.
    Other objects (classes, modules, clients) are left out, as attributes are."""
    if isinstance(value, _SCALARS):
        return True
    if depth > _DEPTH:
        return False
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _names(code: types.CodeType) -> list[str]:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions) use."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_names(const))
    return names


def _describe_code(code: types.CodeType, parts: list[bytes]) -> None:
    parts.append(code.co_code)
    parts.append(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _describe_code(const, parts)
        else:
            parts.append(_stable_repr(const).encode())


def _stable_repr(value: Any, depth: int = 0) -> str:
    """``repr`` that is the same in every process: sets sorted (string hashes vary from
    one process to the next), objects by their fields, not their addresses or a
    ``repr`` that may hold a set."""
    if depth > _DEPTH:  # an object that holds itself
        return "..."
    deeper = depth + 1
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_stable_repr(v, deeper) for v in value)) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_stable_repr(v, deeper) for v in value) + ")"
    if isinstance(value, dict):  # sorted: a dict built from a set has the set's order
        items = sorted(
            f"{_stable_repr(k, deeper)}: {_stable_repr(v, deeper)}" for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    if isinstance(value, int) and not isinstance(value, (bool, enum.Enum)):
        return hex(value)  # repr refuses an int of more than 4,300 digits
    if value is None or isinstance(value, (str, bytes, float, complex, bool, enum.Enum)):
        return repr(value)
    kind = type(value).__qualname__
    if isinstance(value, (types.FunctionType, functools.partial)):
        # A function held in a container or an object's field: by what it runs, as one
        # closed over directly is (``chain(a, b)`` closes over a tuple of effects).
        name = getattr(value, "__qualname__", kind)
        return f"<{getattr(value, '__module__', '?')}.{name}:{_code_digest(value, deeper)}>"
    if isinstance(value, types.ModuleType):
        return f"<module {value.__name__}>"
    if dataclasses.is_dataclass(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return kind + _stable_repr(fields, deeper)
    if hasattr(value, "__dict__"):
        return kind + _stable_repr(dict(sorted(vars(value).items())), deeper)
    text = repr(value)
    return f"<{kind}>" if " at 0x" in text else text
