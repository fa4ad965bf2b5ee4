"""Audio paths named by data rows, kept inside the folder the config declares.

A row's ``file_name`` (AudSem records), ``audio_id`` (MMAU), ``dataset`` /
``dataset_identifier`` (MuchoMusic) or hub ``path`` is data, not configuration: an absolute
path or a ``..`` in it would make a build open (and a training run read, and a report hash) any
file on the machine. :func:`confined` joins such a name to its root and refuses it unless the
result stays inside; ``allow_outside_root=True`` on a builder turns the check off for data you
trust that is laid out across folders.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from audsemthinker.data.readers import RowError


def confined(root: str | Path, name: str, allow_outside: bool = False) -> Path:
    """``root / name``, normalised, refused when it leaves ``root``.

    The check is on the path as written (``..`` collapsed, no symlinks followed): a row cannot
    climb out, while links the dataset's owner placed inside the root still work.

    Args:
        root: the declared folder (``audio_dir``, ``audio_root``).
        name: the relative path a row gives.
        allow_outside: accept absolute names and names that climb out of ``root``.

    Returns:
        The joined path (absolute).

    Raises:
        RowError: ``bad_path`` (empty name or a NUL byte), ``path_outside_root``.
    """
    name = str(name)
    if not name.strip() or "\0" in name:
        raise RowError("bad_path", repr(name)[:200])
    base = os.path.abspath(str(root))
    joined = os.path.normpath(os.path.join(base, name))
    if not allow_outside and os.path.commonpath([base, joined]) != base:
        raise RowError("path_outside_root", f"{name[:200]!r} is not inside {base} (set "
                       "allow_outside_root=true to accept it)")
    return Path(joined)


MAX_NAME = 100
"""Longest file-name stem kept from a key (file systems stop at 255 bytes)."""
_PLAIN = re.compile(r"[a-z0-9_\-][a-z0-9_.\-]*")
_HASH_TAIL = re.compile(r"-[0-9a-f]{10}$")


def safe_name(key: str) -> str:
    """A file name for an item key, different for every key.

    A key is used as is only when it is plain lowercase ASCII (so it means one file on a
    case-insensitive file system too), at most :data:`MAX_NAME` long, and does not itself end
    like a hashed name. Every other key becomes its cleaned, shortened form plus a hash of the
    whole key: ``"clip a"`` and a literal ``"clip_a-<hash>"`` cannot meet on one file, and a
    key longer than the file-system limit still gets a name.
    """
    key = str(key)
    if _PLAIN.fullmatch(key) and len(key) <= MAX_NAME and not _HASH_TAIL.search(key):
        return key
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", key).strip("._")[:MAX_NAME] or "item"
    return f"{safe}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"
