"""Builders by name: registration, lookup, argument checks, and the items they yield."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_BUILDERS: dict[str, Callable[..., Iterator]] = {}
_BUILTIN_MODULES = ("audsemthinker.data.synthetic", "audsemthinker.data.audsem",
                    "audsemthinker.data.benchmarks")


@dataclass(frozen=True)
class Skip:
    """A source item a builder could not turn into a row, and why (``reason`` is counted)."""

    id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Meta:
    """Facts about the source recorded in the report (``{"total": n}`` sizes the progress bar)."""

    values: dict


class IncompleteBuild(RuntimeError):
    """A build that cannot give the user what the source holds, with its cause in one line.

    Raised before any work when the source cannot be read as asked (a text-only source without
    an audio folder, columns that are not there), and after the loop when a builder that asks
    for it (``Meta({"require_rows": True})``) kept no rows, or kept none of a split the source
    holds (``Meta({"source_splits": [...]})``). The report is written first, so its skip table
    can be read. ``scripts/build_data.py`` prints the message and exits non-zero.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class BuildError(ValueError):
    """Raised under ``strict=True`` at the first bad item: ``reason`` and ``item_id`` name it."""

    def __init__(self, reason: str, item_id: str, detail: str = ""):
        self.reason, self.item_id, self.detail = reason, str(item_id), detail
        super().__init__(f"item {item_id!r}: {reason}" + (f" ({detail})" if detail else ""))


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def register_builder(name: str) -> Callable[[Callable], Callable]:
    """Decorator registering a builder generator under ``name`` (re-registering replaces it)."""

    def deco(fn: Callable) -> Callable:
        _BUILDERS[name] = fn
        return fn

    return deco


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_builders() -> list[str]:
    """Sorted names of every registered builder (the built-in ones included)."""
    _load_builtins()
    return sorted(_BUILDERS)


def get_builder(name: str) -> Callable[..., Iterator]:
    """The builder registered as ``name``, or ``"package.module:function"`` imported.

    Raises:
        ValueError: an unknown name; the message lists the registered names.
    """
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    _load_builtins()
    if name not in _BUILDERS:
        raise ValueError(f"unknown dataset builder {name!r}; available: {available_builders()}")
    return _BUILDERS[name]


def check_kwargs(builder: Callable, kwargs: dict) -> dict:
    """Bind ``kwargs`` to the builder's signature before any work is done.

    Raises:
        TypeError: naming a misspelt or missing argument (and the closest valid name).
    """
    sig = inspect.signature(builder)
    params = [p for p in sig.parameters if p != "out_dir"]
    for key in kwargs:
        if key not in params and not any(p.kind is p.VAR_KEYWORD
                                         for p in sig.parameters.values()):
            close = difflib.get_close_matches(key, params, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"builder {builder.__name__!r} has no argument {key!r}{hint} "
                            f"(arguments: {params})")
    try:
        sig.bind(Path("."), **kwargs)
    except TypeError as e:
        raise TypeError(f"builder {builder.__name__!r}: {e}") from None
    return dict(kwargs)


def holdout(key: str, seed: int, fraction: float) -> bool:
    """Whether item ``key`` falls in a seeded held-out split of about ``fraction`` of the items.

    A hash of ``(seed, key)``, so the choice is reproducible, independent of item order and
    streamable (the public release drew its validation split unseeded).
    """
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction
