"""Files written whole or not at all, and file hashes.

Result files, reports and markers are written atomically (temporary file in the same folder,
fsync, ``os.replace``) so an interrupted run never leaves a half-written JSON that a later run
or the paper tables would trust. Data builds, training and evaluation all write through here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync the file, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; the old file survives any failure.

    Returns:
        The path written.
    """
    def write(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")
    return write_atomic(path, write)


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented JSON atomically.

    The object is serialised before anything touches the disk, so an unserialisable value (or a
    NaN, refused with ``allow_nan=False`` to keep files strict JSON) leaves the old file intact.

    Returns:
        The path written.

    Raises:
        TypeError, ValueError: ``obj`` is not strict-JSON serialisable.
    """
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (benchmark files are recorded by hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
