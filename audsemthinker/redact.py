"""Secrets never land in a file: every dump of a config or report goes through :func:`redact`.

Configs resolve ``${oc.env:...}`` interpolations, so a hub token or an API key set through the
environment would otherwise be written in clear into ``config.yaml``, ``build_report.json`` or an
evaluation result, and from there into a shared run folder or an uploaded artifact. A key is a
secret when the last word of its name is one of :data:`SECRET_WORDS` (``hf_token``,
``WANDB_API_KEY``, ``secretKey``, ``db_password``); words are split at ``_``, ``-``, ``.`` and
camelCase, at any depth. ``api_key_env`` (the *name* of a variable) and ``max_new_tokens`` are not
secrets and stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

SECRET_WORDS = frozenset({"token", "key", "secret", "password", "passwd", "apikey"})
REDACTED = "<redacted>"

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_key(key) -> bool:
    """True when the last word of ``key`` names a secret (case-insensitive)."""
    words = _WORD.findall(str(key))
    return bool(words) and words[-1].lower() in SECRET_WORDS


def redact(obj):
    """A copy of ``obj`` (mappings and lists, nested) with every secret value replaced.

    Values under a secret key are replaced unless they are None or a bool (an unset token
    stays visibly unset); a mapping or list under such a key is searched, not replaced.
    """
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if is_secret_key(k) and v is not None and not isinstance(v, (bool, Mapping,
                                                                          list, tuple)):
                out[k] = REDACTED
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj
