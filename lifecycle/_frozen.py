"""Faster construction for the frozen dataclasses built once per judged message.

A frozen dataclass's generated ``__init__`` stores every field through
``object.__setattr__`` (its own ``__setattr__`` refuses), at about 0.1 µs a
field. Every judged message builds an event, a verdict and a new account state,
so that was about a seventh of ``lifecycle check``'s time. :func:`fast_init`
gives such a class an ``__init__`` with the same signature that stores each
field through its slot descriptor, about twice as fast. Everything else stays
the dataclass's own: immutability, equality, hashing, ``repr``,
``dataclasses.replace``, ``fields``, pickling. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give a frozen, slotted dataclass an ``__init__`` that fills its slots directly.

    Apply it above ``@dataclass(frozen=True, slots=True)``. Positional fields,
    defaults and default factories are supported; a class it could not rebuild
    faithfully (not frozen, no slots, a ``__post_init__`` and so init-only
    variables, keyword-only fields) is refused with ``TypeError``.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init needs a frozen dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: fast_init does not run __post_init__")
    namespace: dict[str, Any] = {"MISSING": dataclasses.MISSING}
    signature: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # a dataclass, checked above
        if not f.init or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: fast_init needs positional init fields")
        namespace[f"set_{f.name}"] = cls.__dict__[f.name].__set__  # the slot's descriptor
        value = f.name
        if f.default is not dataclasses.MISSING:
            namespace[f"default_{f.name}"] = f.default
            signature.append(f"{f.name}=default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"factory_{f.name}"] = f.default_factory
            signature.append(f"{f.name}=MISSING")
            value = f"factory_{f.name}() if {f.name} is MISSING else {f.name}"
        else:
            signature.append(f.name)
        body.append(f"    set_{f.name}(self, {value})")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body or ["    pass"])
    # Built from source, as dataclasses builds the __init__ it replaces.
    exec(compile(source, f"<fast_init {cls.__qualname__}>", "exec"), namespace)
    init = functools.update_wrapper(namespace["__init__"], cls.__init__)
    cls.__init__ = init  # type: ignore[method-assign]  # replacing it is the point
    return cls
