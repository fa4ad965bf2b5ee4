"""One evaluation per run folder at a time.

Two evaluations writing one ``predictions/<benchmark>.jsonl`` would each skip the ids the other
had not yet written and append the same items twice (or two models' items side by side). The
lock is an exclusive ``flock`` on ``<run folder>/.eval.lock``, which also records the holder's
pid and host for the message a second run gets. The kernel releases a ``flock`` when its process
dies, so a lock left by a killed run is stale by construction: the next run takes it over
without a manual clean-up, and a pid written in the file is never trusted on its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".eval.lock"


class RunLocked(RuntimeError):
    """Another live process is evaluating into the same run folder."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the evaluation lock of ``run_dir`` for the block.

    Raises:
        RunLocked: another live process holds it (its pid and host in the message).
    """
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "pid not yet written"
            raise RunLocked(f"{path.parent} is being evaluated by another process ({holder}); "
                            "wait for it to finish or use another run_dir") from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        f.flush()
        try:
            yield path
        finally:
            f.truncate(0)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    finally:
        f.close()
