"""Folders that appear whole or not at all.

A model export or a checkpoint's processor files are several files; a process killed half-way
used to leave a folder that *looks* finished (``config.json`` is written before the weights).
:func:`staged_folder` builds the folder under a temporary name beside its destination and
renames it into place only when every file is written; :func:`move_into` moves a staged set of
files into an existing folder with one ``os.replace`` each (the last one named last).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on a clean exit it becomes ``out``.

    An existing ``out`` is replaced (moved aside, then removed once the new one is in place);
    on an exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def move_into(staged: str | Path, dest: str | Path, last: str | None = None) -> None:
    """Move every entry of ``staged`` into ``dest`` (``last`` moved last), replacing files of
    the same name, then remove ``staged``."""
    staged, dest = Path(staged), Path(dest)
    for entry in sorted(staged.iterdir(), key=lambda p: (p.name == last, p.name)):
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(staged, ignore_errors=True)
