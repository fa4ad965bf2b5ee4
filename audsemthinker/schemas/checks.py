"""The checks every config section goes through: unknown keys by full name, bad values."""

from __future__ import annotations

import dataclasses
import difflib

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message starts with the full key."""


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_fields(section: dict | DictConfig | None, schema: type, where: str,
                 extra: tuple[str, ...] = ()) -> None:
    """Fail if ``section`` has a key that is not a field of dataclass ``schema``.

    Args:
        section: the mapping to check (may be None: nothing to check).
        schema: a dataclass, e.g. ``trl.SFTConfig``.
        where: dotted path of the section, for the message (``train.sft``).
        extra: keys accepted besides the dataclass fields.

    Raises:
        ConfigError: naming ``where.key`` and the closest valid name.
    """
    if section is None:
        return
    names = {f.name for f in dataclasses.fields(schema)} | set(extra)
    for key in section:
        if key not in names:
            raise ConfigError(f"{where}.{key}: not a field of {schema.__name__}"
                              f"{_suggest(str(key), names)}")


def nested_section(cfg, key: str, schema: type):
    """``cfg.<key>`` as ``schema``, a dataclass whose every field is a dataclass part, each part's
    keys checked by its full name; None when the config has no such section."""
    section = None if cfg is None else cfg.get(key)
    if section is None:
        return None
    data = OmegaConf.to_container(section, resolve=True) if isinstance(section, DictConfig) \
        else dict(section)
    check_fields(data, schema, key)
    parts = {}
    for f in dataclasses.fields(schema):
        part = f.default_factory
        check_fields(data.get(f.name) or {}, part, f"{key}.{f.name}")
        parts[f.name] = part(**(data.get(f.name) or {}))
    return schema(**parts)
