"""Held-out accuracy during training: generate on held-out rows, score by the harness's rule.

The SFT and GRPO recipes call :func:`heldout_accuracy` before and after training (rank 0, or
every rank over its slice under sharding: ``distributed/sharding.py``); the full benchmark
evaluation is :mod:`audsemthinker.eval.harness`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def generate_completions(model, processor, rows: Sequence[Mapping], decoding,
                         batch_size: int = 8, audio_override: str | None = None,
                         max_audio_seconds: float | None = None
                         ) -> tuple[list[Mapping], list[str], dict]:
    """Completions for ``rows`` through the prompt-only collator (left padding).

    Args:
        model: the thinker or a PeftModel around it.
        processor: the processor from ``build_processor``.
        rows: SFT rows (``messages``) or GRPO rows (``prompt``), with ``audio``.
        decoding: ``eval.generate.Decoding`` or its config mapping (greedy by default);
            placeholder tokens are suppressed as in every generate call here.
        batch_size: rows per generate call.
        audio_override: ``"silence"`` generates from zeros instead of the clips.
        max_audio_seconds: clips are cut to this length.

    Returns:
        ``(rows_used, completions, skipped)``: rows whose audio loaded, one completion each,
        and the skip counts by reason.
    """
    from audsemthinker.data.collate import AudioCollator
    from audsemthinker.eval.generate import decoding_from, generate_batch

    collator = AudioCollator(processor, prompt_only=True, audio_override=audio_override,
                             max_audio_seconds=max_audio_seconds)
    decoding = decoding_from(decoding)
    used, completions = [], []
    was_training = model.training
    model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        try:
            batch = collator(chunk)
        except ValueError as e:  # every row of the chunk skipped (counted in collator.stats)
            log.warning("held-out batch at %d skipped: %s", start, e)
            continue
        completions += generate_batch(model, processor.tokenizer, batch, decoding)
        used += [chunk[k] for k in collator.last_kept]
    model.train(was_training)
    skipped = {k: v for k, v in collator.stats.items() if k.startswith("skipped:")}
    return used, completions, skipped


def heldout_accuracy(model, processor, rows: Sequence[Mapping], cfg: DictConfig,
                     audio_override: str | None = None) -> dict:
    """Held-out option accuracy (percent) from generated text, with a few examples.

    Answers are parsed with ``format.extract_answer`` and matched to the row's choices with
    ``format.match_option`` (via ``eval.generate.accuracy_of``, the harness's own rule).

    Args:
        model, processor: as for :func:`generate_completions`.
        rows: held-out rows with ``answer`` and ``choices``.
        cfg: the root config; ``eval.decoding``, ``eval.batch_size``,
            ``eval.max_audio_seconds`` and ``eval.heldout_limit`` (score only the first N rows,
            so the in-run evaluation of a paper experiment costs minutes) are read.
        audio_override: ``"silence"`` for the silent-audio control.

    Returns:
        ``accuracy`` (None without rows), ``n`` rows scored, ``skipped`` by reason,
        ``no_answer`` (completions without an ``<answer>`` block) and ``examples``.
    """
    ev = cfg.get("eval") or {}
    if ev.get("heldout_limit"):
        rows = list(rows)[:int(ev.get("heldout_limit"))]
    decoding = ev.get("decoding")
    if isinstance(decoding, DictConfig):
        decoding = OmegaConf.to_container(decoding, resolve=True)
    used, completions, skipped = generate_completions(
        model, processor, rows, decoding, batch_size=int(ev.get("batch_size") or 8),
        audio_override=audio_override, max_audio_seconds=ev.get("max_audio_seconds"))
    return heldout_record(used, completions, skipped)


def heldout_record(used: Sequence[Mapping], completions: Sequence[str], skipped: dict) -> dict:
    """The held-out record of :func:`heldout_accuracy` from rows and their completions."""
    from audsemthinker import format as fmt
    from audsemthinker.eval.generate import accuracy_of

    no_answer = sum(fmt.first_block(c, fmt.ANSWER) is None for c in completions)
    if no_answer:
        log.warning("%d of %d held-out completions have no <answer> block (is "
                    "eval.decoding.max_new_tokens long enough for the targets?)", no_answer,
                    len(completions))
    return {
        "accuracy": accuracy_of(used, completions) if used else None,
        "n": len(used), "skipped": skipped, "no_answer": no_answer,
        "examples": [{"id": r.get("id"), "answer": r.get("answer"), "completion": c}
                     for r, c in list(zip(used, completions))[:5]],
    }
