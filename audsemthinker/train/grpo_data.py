"""GRPO rows: prompts and reward columns from built rows, unusable audio dropped."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence

from audsemthinker.train.grpo_config import COLUMNS

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def grpo_rows(rows: Sequence[Mapping]) -> list[dict]:
    """Rows as GRPO needs them: ``prompt`` (system + user, audio part) plus the reward columns.

    SFT rows work too: their trailing assistant turn is dropped. ``choices`` stays None on
    rows that are not multiple choice.

    Raises:
        ValueError: a row with neither ``prompt`` nor ``messages``, or without an answer.
    """
    from audsemthinker.data.collate import clean_messages, prompt_of

    keep = [c for c in COLUMNS if any(c in r for r in rows)]
    out = []
    for r in rows:
        if r.get("answer") is None:
            raise ValueError(f"row {r.get('id')!r} has no 'answer': the rewards need one")
        out.append({**{c: r.get(c) for c in keep}, "prompt": clean_messages(prompt_of(r))})
    return out


def drop_unusable_audio(rows: Sequence[Mapping],
                        max_seconds: float | None = None) -> tuple[list[Mapping], dict]:
    """Rows whose every clip loads as training will load it, and the skips.

    A GRPO prompt whose clip cannot load would stop the run mid-step (its group cannot be
    dropped from a generation batch), so each distinct clip is decoded in full before training
    with :func:`audsemthinker.audio.load_audio` and the trainer's cap: a header check alone
    passes a file cut mid-stream, NaN/inf samples, silence and near-silence. Clips are read on
    a few threads (decoding releases the GIL); a clip costs at most ``max_seconds`` of decoding.

    Returns:
        ``(kept_rows, {"rows": n skipped, "by_reason": {...}, "ids": first 20 ids})``.
    """
    from concurrent.futures import ThreadPoolExecutor

    from audsemthinker.audio import AudioError, load_audio
    from audsemthinker.data.collate import audio_paths, prompt_of

    def problem(path: str) -> str | None:
        try:
            load_audio(path, max_seconds=max_seconds)
        except AudioError as e:
            return e.reason
        return None

    paths = [audio_paths(r, prompt_of(r)) for r in rows]
    unique = list(dict.fromkeys(p for ps in paths for p in ps))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        verdict = dict(zip(unique, pool.map(problem, unique)))
    kept, by_reason, ids = [], Counter(), []
    for r, ps in zip(rows, paths):
        reason = next(filter(None, (verdict[p] for p in ps)), None)
        if reason is None:
            kept.append(r)
            continue
        by_reason[f"skipped:audio:{reason}"] += 1
        ids.append(r.get("id"))
    if ids:
        log.warning("GRPO: %d training rows skipped before training, their audio is unusable "
                    "(%s), e.g. %s", len(ids), dict(by_reason), ids[:5])
    return kept, {"rows": len(ids), "by_reason": dict(by_reason), "ids": ids[:20]}


def to_dataset(rows: Sequence[Mapping]):
    from datasets import Dataset

    return Dataset.from_list(list(rows))


def traced_reward(fn):
    """``fn`` that also appends what it scored to ``<TRACE_ENV>.rank<N>.rewards`` (JSON lines).

    The multi-process debug hook (``audsemthinker.train.trace.TRACE_ENV``): a reward function
    runs on the rank that generated the completions, before TRL gathers the rewards, so one
    line per call (``step`` = global step when scored, ``reward`` name, row ``ids`` and
    ``values`` per completion) shows which prompts each rank generated for and what they scored.
    """
    from audsemthinker.train.sft import trace_path

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = fn(*args, **kwargs)
        state = kwargs.get("trainer_state")
        record = {"step": getattr(state, "global_step", None), "reward": fn.__name__,
                  "ids": list(kwargs.get("id") or []),
                  "values": [None if v is None else float(v) for v in values]}
        with trace_path("rewards").open("a") as f:
            f.write(json.dumps(record) + "\n")
        return values

    return wrapper
