"""The incremental predictions file: one JSON line per item, durable per batch, resumable.

An evaluation of MMAU test (9000 items, beam search 5) takes hours; a crash must cost at most one
batch. Each finished batch is appended to ``predictions/<benchmark>.jsonl`` and flushed + fsynced
before the next one starts. A restart reads the file, drops a torn last line (a kill mid-write),
and the harness skips every id already there, so no item is ever generated twice.

A side file ``<benchmark>.fingerprint.json`` records what produced the predictions (model,
adapter, prompt, decoding, rows file hash). Resuming with a different fingerprint is refused:
mixing two models' predictions in one result would be silent corruption.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from audsemthinker.files import write_json_atomic

log = logging.getLogger(__name__)


class PredictionStore:
    """Append-only ``{id: record}`` store backed by a JSONL file.

    Args:
        path: the JSONL file (created with its folder if missing).
        fingerprint: JSON-able description of what produces the predictions; must equal the one
            stored beside an existing file.
        resume: False starts fresh (the existing file is truncated).

    Raises:
        ValueError: the file holds a duplicate id or a corrupt line that is not the last one, or
            its fingerprint differs from ``fingerprint``.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: Mapping, resume: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fingerprint_path = self.path.with_suffix(".fingerprint.json")
        self.records: dict[str, dict] = {}
        fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        if resume and self.path.exists():
            self._check_fingerprint(fingerprint)
            self._load()
        else:
            self.path.write_text("", encoding="utf-8")
        write_json_atomic(self.fingerprint_path, fingerprint)

    def _check_fingerprint(self, fingerprint: dict) -> None:
        if not self.fingerprint_path.exists():
            if self.path.stat().st_size:
                raise ValueError(f"{self.path} has predictions but no {self.fingerprint_path.name}"
                                 ": cannot tell what produced them; move it away or set "
                                 "resume=false")
            return
        old = json.loads(self.fingerprint_path.read_text(encoding="utf-8"))
        if old != fingerprint:
            diff = sorted(k for k in set(old) | set(fingerprint)
                          if old.get(k) != fingerprint.get(k))
            raise ValueError(f"{self.path} was produced with different settings ({diff} differ): "
                             "resuming would mix two runs; use another run_dir or resume=false")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        good_end = 0
        for i, line in enumerate(lines):
            if not line.strip():
                good_end += len(line) + 1
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "id" not in rec:
                    raise ValueError("not a record with an id")
            except ValueError as e:
                if i == len(lines) - 1:  # torn final line from a kill mid-write: drop it
                    log.warning("%s: dropping a partial last line (%d bytes)", self.path,
                                len(line))
                    break
                raise ValueError(f"{self.path}: line {i + 1} is corrupt ({e}); fix or remove "
                                 "the file") from None
            if rec["id"] in self.records:
                raise ValueError(f"{self.path}: id {rec['id']!r} occurs twice (two runs wrote "
                                 "the same file?)")
            self.records[rec["id"]] = rec
            good_end += len(line) + 1
        good_end = min(good_end, len(raw))
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        if raw[:good_end] and not raw[:good_end].endswith(b"\n"):
            with open(self.path, "ab") as f:
                f.write(b"\n")
        if self.records:
            log.info("%s: resuming with %d items already predicted", self.path, len(self.records))

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, records: Iterable[Mapping]) -> None:
        """Append one batch durably (write, flush, fsync) and remember it.

        Raises:
            ValueError: a record without an id, or an id already stored.
        """
        records = [dict(r) for r in records]
        for r in records:
            if "id" not in r:
                raise ValueError(f"prediction record without an id: {r}")
            if r["id"] in self.records:
                raise ValueError(f"id {r['id']!r} was already predicted: refusing to store it "
                                 "twice")
        if len({r["id"] for r in records}) != len(records):
            raise ValueError("a batch holds the same id twice")
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self.records[r["id"]] = r
