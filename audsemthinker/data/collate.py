"""Turn dataset rows into model batches: chat template, audio features, label masks.

One collator serves training (SFT: full conversation, loss on the last assistant turn) and
generation (``prompt_only``: system + user, generation prompt appended, left padding), so the
SFT trainer, its held-out evaluation and GRPO render prompts and audio the same way.

Rows hold audio *paths* (``row["audio"]``, or the audio parts of the messages), loaded here with
:func:`audsemthinker.audio.load_audio`. A row that cannot be used (broken audio, longer than
``max_length`` tokens) is skipped and counted in :attr:`AudioCollator.stats`, or raises. Nothing
is ever truncated: cutting a sequence could separate ``<|AUDIO|>`` placeholders from their
features, which the model would then scatter into the wrong positions or reject.

Label mask of a training row (``-100`` = not in the loss)::

    <|im_start|>system ... <|im_end|>\\n<|im_start|>user\\n<|audio_bos|><|AUDIO|>*N<|audio_eos|>
    ...<|im_end|>\\n<|im_start|>assistant\\n          -> -100 (everything up to the header)
    <think>...</think>...<answer>...</answer><|im_end|> -> trained (closing <|im_end|> included)
    \\n and padding                                    -> -100 (never generated)

Positions come from token ids (the last ``<|im_start|>assistant\\n`` span and the first
``<|im_end|>`` after it), never from string lengths.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
ASSISTANT_HEADER = "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"
AUDIO_OVERRIDES = (None, "silence")


def clean_messages(messages: Sequence[Mapping]) -> list[dict]:
    """Copy chat messages, dropping ``None`` values from content parts.

    Rows that went through a ``datasets`` table carry ``'audio': None`` on text parts
    (docs/pitfalls.md); the chat template dispatches on ``type`` only, but a clean copy keeps every
    consumer safe.
    """
    out = []
    for m in messages:
        content = m["content"]
        if not isinstance(content, str):
            content = [{k: v for k, v in part.items() if v is not None} for part in content]
        out.append({"role": m["role"], "content": content})
    return out


def prompt_of(row: Mapping) -> list[dict]:
    """The messages to generate from: GRPO rows' ``prompt``, or SFT ``messages`` minus the
    trailing assistant turn(s).

    Raises:
        ValueError: a row with neither ``prompt`` nor ``messages``.
    """
    if row.get("prompt"):
        return clean_messages(row["prompt"])
    if not row.get("messages"):
        raise ValueError(f"row {row.get('id')!r} has neither 'prompt' nor 'messages'")
    msgs = list(row["messages"])
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    return clean_messages(msgs)


def audio_paths(row: Mapping, messages: Sequence[Mapping]) -> list[str]:
    """One audio path per audio part of ``messages``, in order.

    A single audio part is ``row["audio"]`` when the row has it (the schema's source of truth);
    otherwise each part's own ``audio`` value.

    Raises:
        ValueError: an audio part with no path, or ``row["audio"]`` with no audio part.
    """
    parts = [p for m in messages if not isinstance(m["content"], str)
             for p in m["content"] if p.get("type") == "audio"]
    if len(parts) == 1 and row.get("audio"):
        return [str(row["audio"])]
    if not parts and row.get("audio"):
        raise ValueError(f"row {row.get('id')!r} has audio {row['audio']!r} but its messages "
                         "have no audio part: the clip would never reach the model")
    paths = [p.get("audio") for p in parts]
    if any(not p for p in paths):
        raise ValueError(f"row {row.get('id')!r}: an audio part names no file")
    return [str(p) for p in paths]


def find_last(seq: list[int], pattern: list[int]) -> int:
    """Start index of the last occurrence of ``pattern`` in ``seq``, or -1."""
    n = len(pattern)
    for i in range(len(seq) - n, -1, -1):
        if seq[i:i + n] == pattern:
            return i
    return -1


class AllRowsSkipped(ValueError):
    """Every row of a batch was skipped (the training lookup substitutes a zero-loss batch)."""


class AudioCollator:
    """Collate rows into ``input_ids``, ``attention_mask``, ``input_features``,
    ``feature_attention_mask`` and (unless ``prompt_only``) ``labels``.

    Args:
        processor: the processor from ``model.processor.build_processor`` (audio padded to the
            longest clip of the batch).
        pad_side: ``right`` for training, ``left`` for generation (the model would otherwise
            continue after pad tokens). Defaults to ``left`` when ``prompt_only``.
        max_length: longest sequence in tokens, audio placeholders included; longer rows are
            skipped (or raise), never truncated. ``None``: no limit.
        max_audio_seconds: clips are cut to this many seconds when loaded.
        on_overlong: ``skip`` (count under ``stats["skipped:overlong"]``) or ``error``.
        on_bad_audio: ``skip`` (count under ``stats["skipped:audio:<reason>"]``) or ``error``.
        prompt_only: render system + user with the generation prompt, no labels.
        audio_override: ``"silence"`` replaces every waveform with zeros of the same length
            (a control that shows a model learns from the audio, not the text).
        skip_log: a JSON-lines file that gets one ``{"id", "reason"}`` line per skipped row.
            ``stats`` lives in one process, but a training DataLoader collates in worker
            processes (and each rank has its own), so the run's report counts skips from this
            file instead (:func:`read_skip_log`).

    Attributes:
        stats: counts of rows seen, kept and skipped by reason (per process; a DataLoader with
            workers keeps one copy per worker: use ``skip_log`` for run totals).
        last_kept: indices, into the last call's rows, of the rows in the returned batch.
    """

    def __init__(self, processor, pad_side: str | None = None, max_length: int | None = None,
                 max_audio_seconds: float | None = None, on_overlong: str = "skip",
                 on_bad_audio: str = "skip", prompt_only: bool = False,
                 audio_override: str | None = None, skip_log: str | Path | None = None):
        pad_side = pad_side or ("left" if prompt_only else "right")
        if pad_side not in ("left", "right"):
            raise ValueError(f"pad_side must be 'left' or 'right', got {pad_side!r}")
        for name, value in (("on_overlong", on_overlong), ("on_bad_audio", on_bad_audio)):
            if value not in ("skip", "error"):
                raise ValueError(f"{name} must be 'skip' or 'error', got {value!r}")
        if audio_override not in AUDIO_OVERRIDES:
            raise ValueError(f"audio_override must be one of {AUDIO_OVERRIDES}, "
                             f"got {audio_override!r}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be positive or None, got {max_length}")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_side, self.max_length = pad_side, max_length
        self.max_audio_seconds = max_audio_seconds
        self.on_overlong, self.on_bad_audio = on_overlong, on_bad_audio
        self.prompt_only, self.audio_override = prompt_only, audio_override
        self.stats: Counter = Counter()
        self.skip_log = None if skip_log is None else Path(skip_log)
        self.last_kept: list[int] = []
        ids = self.tokenizer.encode
        self._header = ids(ASSISTANT_HEADER, add_special_tokens=False)
        self._header_role = ids(ASSISTANT_HEADER.rstrip("\n"), add_special_tokens=False)
        self._end = ids(END_OF_TURN, add_special_tokens=False)
        if len(self._end) != 1:
            raise ValueError(f"the tokenizer splits {END_OF_TURN} into {len(self._end)} tokens; "
                             "it is not a Qwen2.5-Omni tokenizer")

    # ----------------------------------------------------------------------------------------
    def render(self, row: Mapping) -> tuple[str, list[str]]:
        """The chat text of one row and its audio paths (in placeholder order)."""
        if self.prompt_only:
            msgs = prompt_of(row)
        else:
            if not row.get("messages") or row["messages"][-1]["role"] != "assistant":
                raise ValueError(f"SFT row {row.get('id')!r} must have 'messages' ending with an "
                                 "assistant turn")
            msgs = clean_messages(row["messages"])
        text = self.processor.apply_chat_template(msgs, tokenize=False,
                                                  add_generation_prompt=self.prompt_only)
        return text, audio_paths(row, msgs)

    def load(self, path: str) -> np.ndarray:
        from audsemthinker.audio import load_audio

        wav = load_audio(path, max_seconds=self.max_audio_seconds)
        return np.zeros_like(wav) if self.audio_override == "silence" else wav

    def _encode(self, texts: list[str], audios: list[np.ndarray]) -> dict:
        out = self.processor(text=texts, audio=audios or None, return_tensors="pt",
                             padding=True, padding_side=self.pad_side)
        out = dict(out)
        out.pop("num_audio_tokens", None)
        return out

    def labels_for(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Labels for a padded batch: only the last assistant turn and its ``<|im_end|>``.

        Raises:
            ValueError: a row without an assistant header or without the closing ``<|im_end|>``
                (nothing would be trained, or the model would never learn to stop).
        """
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for i, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
            start = find_last(ids, self._header)
            if start >= 0:
                first = start + len(self._header)
            else:
                # A target that starts with a newline merges it with the header's newline
                # ("\n\n" is one token in the hub vocabulary): skip that shared token too.
                start = find_last(ids, self._header_role)
                if start < 0:
                    raise ValueError(f"batch row {i}: no {ASSISTANT_HEADER!r} token span; "
                                     "cannot place the loss on the assistant turn")
                first = start + len(self._header_role) + 1
            try:
                end = ids.index(self._end[0], first)
            except ValueError:
                raise ValueError(f"batch row {i}: the assistant turn has no closing "
                                 f"{END_OF_TURN}") from None
            labels[i, first:end + 1] = input_ids[i, first:end + 1]
            labels[i][torch.tensor(mask) == 0] = IGNORE_INDEX
        return labels

    def _log_skip(self, row: Mapping, reason: str) -> None:
        """One line per skipped row; a single short ``write`` on an append-mode file, so lines
        from several workers and ranks do not interleave."""
        if self.skip_log is None:
            return
        line = json.dumps({"id": row.get("id"), "reason": reason}) + "\n"
        with self.skip_log.open("a") as f:
            f.write(line)

    # ----------------------------------------------------------------------------------------
    def __call__(self, rows: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """Collate ``rows``; see the class docstring for what is returned and skipped.

        Raises:
            ValueError: every row of the batch was skipped (the message gives the reasons), a
                malformed row, or a skip under ``on_* = "error"``.
            audsemthinker.audio.AudioError: broken audio under ``on_bad_audio="error"``.
        """
        from audsemthinker.audio import AudioError

        reasons: Counter = Counter()
        texts, audios, kept, n_audio = [], [], [], []
        for i, row in enumerate(rows):
            self.stats["rows"] += 1
            text, paths = self.render(row)
            try:
                wavs = [self.load(p) for p in paths]
            except AudioError as e:
                if self.on_bad_audio == "error":
                    raise
                reasons[f"skipped:audio:{e.reason}"] += 1
                self._log_skip(row, f"skipped:audio:{e.reason}")
                log.warning("skipping row %r: %s", row.get("id"), e)
                continue
            texts.append(text)
            audios += wavs
            n_audio.append(len(wavs))
            kept.append(i)
        batch = self._encode(texts, audios) if texts else None
        if batch is not None and self.max_length is not None:
            lengths = batch["attention_mask"].sum(-1).tolist()
            fits = [j for j, n in enumerate(lengths) if n <= self.max_length]
            if len(fits) < len(lengths):
                too_long = [(rows[kept[j]].get("id"), n) for j, n in enumerate(lengths)
                            if n > self.max_length]
                if self.on_overlong == "error":
                    raise ValueError(f"rows longer than max_length={self.max_length} tokens "
                                     f"(id, tokens): {too_long}")
                reasons["skipped:overlong"] += len(too_long)
                for j, n in enumerate(lengths):
                    if n > self.max_length:
                        self._log_skip(rows[kept[j]], "skipped:overlong")
                log.warning("skipping %d rows over max_length=%d tokens: %s", len(too_long),
                            self.max_length, too_long)
                offsets = np.cumsum([0] + n_audio)
                texts = [texts[j] for j in fits]
                audios = [a for j in fits for a in audios[offsets[j]:offsets[j + 1]]]
                kept = [kept[j] for j in fits]
                batch = self._encode(texts, audios) if texts else None
        self.stats.update(reasons)
        if batch is None:
            raise AllRowsSkipped(f"all {len(rows)} rows of the batch were skipped: "
                                 f"{dict(reasons)}; check the audio files and max_length "
                                 "(collator.stats has totals)")
        self.stats["kept"] += len(kept)
        self.last_kept = kept
        if not self.prompt_only:
            batch["labels"] = self.labels_for(batch["input_ids"], batch["attention_mask"])
        return batch


def read_skip_log(path: str | Path) -> dict:
    """Totals of a collator ``skip_log``: ``{"rows": unique ids skipped, "events": skips
    counted each time a row was met (epochs), "by_reason": {reason: events}, "torn_lines":
    lines that are not a skip record}``; zeros when the file does not exist (nothing was
    skipped).

    A worker or rank killed mid-write leaves a torn line; it is counted and reported, never
    raised: the report step runs after training, and failing it would rerun the training.
    """
    path = Path(path)
    by_reason: Counter = Counter()
    ids = set()
    torn = 0
    if path.exists():
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                reason, item_id = rec["reason"], rec["id"]
                hash(item_id)
            except (ValueError, KeyError, TypeError):
                torn += 1
                continue
            by_reason[str(reason)] += 1
            if item_id is not None:
                ids.add(item_id)
    if torn:
        log.warning("%s: %d torn lines (not counted as skips)", path, torn)
    return {"rows": len(ids), "events": sum(by_reason.values()), "by_reason": dict(by_reason),
            "torn_lines": torn}
