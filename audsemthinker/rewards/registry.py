"""Reward registry: name -> factory, config -> (functions, weights), and column helpers.

TRL calls every reward as ``f(prompts=..., completions=..., completion_ids=...,
trainer_state=..., **columns)`` and logs it under ``f.__name__``. Factories here are
``get_*_reward(**cfg)`` functions that return a closure named after the registry key, so each
reward shows up in the logs under its own name. Config entries either name a registered reward
(``{"name": "accuracy", "weight": 1.0, ...}``) or any importable callable
(``{"_target_": "pkg.mod.fn", ...}``), torchtune / Hydra style, so a new reward needs no edit here.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

RewardFn = Callable[..., list[float]]
REWARDS: dict[str, Callable[..., RewardFn]] = {}
"""Registered reward factories by name; filled by the modules of this package on import."""


def register(name: str) -> Callable[[Callable[..., RewardFn]], Callable[..., RewardFn]]:
    """Decorator: register a reward factory under ``name``.

    Raises:
        ValueError: if ``name`` is already taken (two rewards silently sharing a name would log
            and select the wrong one).
    """

    def deco(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        if name in REWARDS and REWARDS[name] is not factory:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = factory
        return factory

    return deco


def available_rewards() -> list[str]:
    """Sorted registered names, for config help text and error messages."""
    return sorted(REWARDS)


def get_reward(name: str, **kwargs: Any) -> RewardFn:
    """Build the registered reward ``name`` with its config keys.

    Raises:
        ValueError: unknown name (the message lists the known ones) or config keys the
            factory does not take.
    """
    if name not in REWARDS:
        known = ", ".join(available_rewards())
        raise ValueError(f"unknown reward {name!r}; known rewards: {known}")
    factory = REWARDS[name]
    _check_kwargs(factory, kwargs, f"reward {name!r}")
    return factory(**kwargs)


def build_rewards(spec: Any) -> tuple[list[RewardFn], list[float]]:
    """Turn a reward config into the ``reward_funcs`` and ``reward_weights`` TRL takes.

    Args:
        spec: a list of entries, or a mapping with a ``rewards`` list (a whole
            ``configs/reward/*.yaml``). Each entry holds ``weight`` (default 1.0), an optional
            ``log_name`` (the ``__name__`` TRL logs it under), and either ``name`` (a registered
            reward) or ``_target_`` (a dotted path to a factory, called with the remaining keys,
            or to a reward function whose signature has ``completions``, used as is). OmegaConf
            containers are accepted.

    Returns:
        ``(funcs, weights)`` in config order.

    Raises:
        ValueError: empty spec, an entry with neither or both of ``name``/``_target_``, an
            unknown name, an unimportable target, a non-finite weight, or two rewards with the
            same ``__name__`` (TRL would log them on top of each other).
    """
    spec = _plain(spec)
    if isinstance(spec, dict) and "rewards" in spec:
        spec = spec["rewards"]
    if isinstance(spec, dict):
        spec = [spec]
    if not isinstance(spec, list) or not spec:
        raise ValueError(f"reward spec must be a non-empty list of entries, got {spec!r}")
    funcs, weights = [], []
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict):
            raise ValueError(f"reward entry {i} must be a mapping, got {entry!r}")
        entry = dict(entry)
        weight = entry.pop("weight", 1.0)
        log_name = entry.pop("log_name", None)
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"reward entry {i}: weight {weight!r} is not a number") from None
        if not math.isfinite(weight):
            raise ValueError(f"reward entry {i}: weight must be finite, got {weight}")
        if ("name" in entry) == ("_target_" in entry):
            raise ValueError(f"reward entry {i} needs exactly one of 'name' or '_target_': {entry}")
        if "name" in entry:
            fn = get_reward(entry.pop("name"), **entry)
        else:
            fn = _from_target(entry.pop("_target_"), entry)
        if log_name is not None:
            fn = _renamed(fn, str(log_name))
        funcs.append(fn)
        weights.append(weight)
    names = [f.__name__ for f in funcs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"rewards {dupes} appear twice; give each a distinct 'log_name'")
    return funcs, weights


def _from_target(target: str, kwargs: dict) -> RewardFn:
    obj = _import(str(target))
    if not callable(obj):
        raise ValueError(f"_target_ {target!r} is not callable")
    if "completions" in _params(obj):
        if kwargs:
            raise ValueError(f"_target_ {target!r} is a reward function; it takes no config keys, "
                             f"got {sorted(kwargs)}")
        return obj
    _check_kwargs(obj, kwargs, f"_target_ {target!r}")
    fn = obj(**kwargs)
    if not callable(fn):
        raise ValueError(f"_target_ {target!r} returned {type(fn).__name__}, not a reward function")
    return fn


def _import(path: str) -> Any:
    """Resolve ``pkg.mod.attr[.attr]`` by importing the longest importable module prefix."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and not module_name.startswith(e.name):
                raise  # the module exists but one of its own imports is missing: show that
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise ValueError(f"cannot import _target_ {path!r}")


def _params(fn: Callable) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _check_kwargs(fn: Callable, kwargs: dict, what: str) -> None:
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
        allowed = [p for p in _params(fn) if p not in ("args", "kwargs")]
        raise ValueError(f"{what}: bad config keys {sorted(kwargs)} ({e}); "
                         f"it takes {allowed}") from None
    except ValueError:
        pass  # builtins without a signature: let the call itself decide


def _renamed(fn: RewardFn, name: str) -> RewardFn:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> list[float]:
        return fn(*args, **kwargs)

    wrapper.__name__ = wrapper.__qualname__ = name
    return wrapper


def _plain(x: Any) -> Any:
    """OmegaConf (or any Mapping / Sequence) containers -> plain dicts and lists."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [_plain(v) for v in x]
    return x


# --------------------------------------------------------------------------------------------
# Helpers every reward uses to read TRL's arguments
# --------------------------------------------------------------------------------------------
def completion_text(completion: Any) -> str:
    """The text of one completion, plain or conversational.

    TRL passes plain strings for standard datasets and ``[{"role": "assistant", "content":
    ...}]`` for conversational ones; content may itself be a list of ``{"type": "text",
    "text": ...}`` parts. Assistant messages are joined; never raises.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence):
        msgs = [m for m in completion if isinstance(m, Mapping)]
        if not msgs:
            return "".join(str(m) for m in completion)
        assistant = [m for m in msgs if m.get("role") == "assistant"] or msgs
        return "".join(_content_text(m.get("content")) for m in assistant)
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """The last user turn of a prompt (plain string or conversation), for judge prompts."""
    if isinstance(prompt, Sequence) and not isinstance(prompt, str):
        users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
        if users:
            return _content_text(users[-1].get("content"))
    return completion_text(prompt)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(p.get("text") or "") if isinstance(p, Mapping) else str(p)
                       for p in content
                       if not isinstance(p, Mapping) or p.get("type", "text") == "text")
    return str(content)


def column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    """The per-completion values of dataset column ``name`` (all None if the column is absent).

    Raises:
        ValueError: the column is present but is not a list of exactly ``n`` values; scoring a
            completion against another row's gold answer is the release's bug we must not repeat.
    """
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"column {name!r} must be a list with one value per completion, "
                         f"got {type(values).__name__}")
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def choices_list(value: Any) -> list[str] | None:
    """One row's ``choices`` as a list of strings, or None when the row is not multiple choice.

    Raises:
        ValueError: a value that is neither None nor a list (e.g. a JSON string): a data bug.
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"a 'choices' value must be a list of strings or None, got {value!r:.80}")
    return [str(c) for c in value] or None


def load_reward_config(path: str, length_budget: int = 25) -> list[dict]:
    """The reward list of a ``configs/reward/*.yaml`` file read outside Hydra.

    Length budgets in those files are ``${length_budget}``: one top-level key of the run feeds
    both the length reward and the prompt's "approximately N words", so the two cannot drift
    apart. Here that key is given as an argument.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.merge({"length_budget": length_budget}, OmegaConf.load(path))
    return OmegaConf.to_container(node, resolve=True)["rewards"]
