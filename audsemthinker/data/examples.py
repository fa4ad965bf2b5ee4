"""Example rows on disk: JSON lines with audio paths, and the two row shapes every builder emits.

A row file is one JSON object per line. Audio is always a *path* (never an array: a waveform
that goes through a `datasets` table comes back as a list the processor rejects), stored relative
to the JSONL file's folder so a dataset folder can move; :func:`load_examples` hands rows back
with absolute paths.

Two shapes, built only by :func:`to_sft_row` and :func:`to_grpo_row` so the prompt and target
strings always come from :mod:`audsemthinker.format`:

- SFT: ``id, audio, task, variant, question, answer, choices, messages, duration, source``;
  ``messages`` = system + user (audio part, text part) + assistant target.
- GRPO: the same with ``prompt`` (system + user) instead of ``messages``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.data.readers import RowError

SFT_KEYS = ("id", "audio", "task", "variant", "question", "answer", "choices", "messages",
            "duration", "source")
GRPO_KEYS = ("id", "audio", "task", "variant", "question", "answer", "choices", "prompt",
             "duration", "source")


# --------------------------------------------------------------------------------------------
# Row shapes
# --------------------------------------------------------------------------------------------
def _prompt_messages(audio: str, user_text: str) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "audio", "audio": str(audio)},
                                     {"type": "text", "text": user_text}]},
    ]


def gold_answer(answer: str, choices: list[str] | None) -> str:
    """The stored gold answer: for multiple choice the training-data form ``"B. text"``.

    Raises:
        RowError: ``answer_not_in_choices`` when the answer names no option (by letter, text or
            both); a row whose gold is not an option would teach and reward nonsense.
        RowError: ``empty_answer`` for an empty answer.
    """
    answer = str(answer or "").strip()
    if not answer:
        raise RowError("empty_answer")
    if not choices:
        return answer
    idx = fmt.match_option(answer, choices)
    if idx is None:
        raise RowError("answer_not_in_choices", f"{answer!r} not in {choices!r}")
    return fmt.mc_answer(choices, idx)


def _common(id: str, audio: str | Path, task: str, question: str, answer: str,
            choices: list[str] | None, variant: str, prepend_instruction: bool,
            length_budget: int | None, source: str, extra: dict) -> tuple[dict, str]:
    fmt.check_variant(variant)
    question = str(question or "").strip()
    if not question:
        raise RowError("missing_field", "question")
    choices = [str(c) for c in choices] if choices else None
    if choices is not None and len(choices) < 2:
        raise RowError("bad_choices", f"{len(choices)} choice(s)")
    row = {"id": str(id), "audio": str(audio), "task": str(task), "variant": variant,
           "question": question, "answer": gold_answer(answer, choices), "choices": choices,
           "duration": None, "source": str(source), **extra}
    text = fmt.user_prompt(question, choices, variant=variant,
                           prepend_instruction=prepend_instruction, length_budget=length_budget)
    return row, text


def to_sft_row(*, id: str, audio: str | Path, task: str, question: str, answer: str, think: str,
               semantic_elements: str | None = None, choices: list[str] | None = None,
               variant: str = "semantic", prepend_instruction: bool = True,
               length_budget: int | None = None, source: str = "", **extra: Any) -> dict:
    """An SFT row: chat messages ending in the assistant target.

    Args:
        id: unique item id (predictions and skips are keyed by it).
        audio: the clip's path.
        task: ``aac`` / ``qa`` / ``mc_qa`` / ``creative_qa`` or a synthetic task name.
        question: the bare question (for multiple choice without its choices block).
        answer: gold answer; for multiple choice a letter, an option text or ``"B. text"``.
        think: the ``<think>`` text.
        semantic_elements: the ``<semantic_elements>`` text (required by ``variant="semantic"``).
        choices: option texts for multiple choice, else None.
        variant: ``semantic`` or ``simple``.
        prepend_instruction: put the instruction prefix before the question.
        length_budget: thinking length asked for in the prefix (None: not mentioned).
        source: where the row came from (``audsem``, ``synthetic``, ...).
        **extra: more columns kept on the row (source ids, generating parameters).

    Returns:
        A dict with :data:`SFT_KEYS` (plus ``extra``); ``duration`` is filled in by the build.

    Raises:
        RowError: ``missing_field``, ``empty_answer``, ``bad_choices`` or
            ``answer_not_in_choices``.
    """
    row, text = _common(id, audio, task, question, answer, choices, variant, prepend_instruction,
                        length_budget, source, extra)
    think = str(think or "").strip()
    if not think:
        raise RowError("missing_field", "thinking")
    elements = str(semantic_elements or "").strip() or None
    if variant == "semantic" and elements is None:
        raise RowError("missing_field", "semantic_elements")
    target = fmt.render_target(think, row["answer"], elements, variant=variant)
    row["messages"] = [*_prompt_messages(row["audio"], text),
                       {"role": "assistant", "content": [{"type": "text", "text": target}]}]
    return row


def to_grpo_row(*, id: str, audio: str | Path, task: str, question: str, answer: str,
                choices: list[str] | None = None, variant: str = "semantic",
                prepend_instruction: bool = True, length_budget: int | None = None,
                source: str = "", think: str | None = None,
                semantic_elements: str | None = None, **extra: Any) -> dict:
    """A GRPO row: the prompt (system + user) and the gold answer, no target.

    Takes the same arguments as :func:`to_sft_row` so builders call either one; ``think`` and
    ``semantic_elements`` are accepted and dropped (GRPO learns them from rewards).

    Raises:
        RowError: as :func:`to_sft_row`.
    """
    row, text = _common(id, audio, task, question, answer, choices, variant, prepend_instruction,
                        length_budget, source, extra)
    row["prompt"] = _prompt_messages(row["audio"], text)
    return row


ROW_KINDS = {"sft": to_sft_row, "grpo": to_grpo_row}


def row_maker(kind: str):
    """``to_sft_row`` or ``to_grpo_row`` by name; ValueError naming the choices otherwise."""
    if kind not in ROW_KINDS:
        raise ValueError(f"unknown row kind {kind!r}; expected one of {sorted(ROW_KINDS)}")
    return ROW_KINDS[kind]


# --------------------------------------------------------------------------------------------
# Audio paths inside rows
# --------------------------------------------------------------------------------------------
def _map_audio(row: dict, fn) -> dict:
    """A copy of ``row`` with ``fn`` applied to ``audio`` and every message audio part."""
    out = dict(row)
    if out.get("audio"):
        out["audio"] = fn(out["audio"])
    for key in ("messages", "prompt"):
        if isinstance(out.get(key), list):
            out[key] = [_map_message(m, fn) for m in out[key]]
    return out


def _map_message(message: Any, fn) -> Any:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return message
    parts = [dict(p, audio=fn(p["audio"])) if isinstance(p, dict) and p.get("type") == "audio"
             and p.get("audio") else p for p in message["content"]]
    return {**message, "content": parts}


def map_audio(row: dict, fn) -> dict:
    """A copy of ``row`` with ``fn`` applied to every audio path it names."""
    return _map_audio(row, fn)


def audio_paths(row: dict) -> list[str]:
    """Every audio path a row names (the ``audio`` column and message audio parts)."""
    seen: list[str] = []
    _map_audio(row, lambda p: seen.append(str(p)) or p)
    return seen


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------
def load_examples(jsonl_path: str | Path) -> list[dict]:
    """Read a row file, resolving audio paths against the file's folder.

    Args:
        jsonl_path: a file written by :func:`write_examples` or a build.

    Returns:
        The rows, in file order, with absolute audio paths.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a JSON object (with its line number): a damaged row
            file is an error here; builders reading *source* data count such lines instead.
    """
    path = Path(jsonl_path)
    folder = path.resolve().parent
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append(_map_audio(row, lambda p: str((folder / p).resolve())))
    return rows


class ExampleWriter:
    """Stream rows to ``<path>.tmp`` and move it into place on a clean close.

    A build that dies half-way leaves the previous file (or none), never a truncated one that
    a resumed training run would read as complete. Audio paths are stored relative to the
    file's folder (absolute paths and paths relative to the working directory are accepted).
    """

    def __init__(self, jsonl_path: str | Path):
        self.path = Path(jsonl_path)
        self.folder = self.path.resolve().parent
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.count = 0
        self._f = None

    def __enter__(self) -> ExampleWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._f = open(self.tmp, "w", encoding="utf-8")
        return self

    def _relative(self, p: str) -> str:
        return Path(os.path.relpath(os.path.abspath(p), self.folder)).as_posix()

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(_map_audio(row, self._relative), ensure_ascii=False) + "\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_examples(jsonl_path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (temporary file + ``os.replace``); returns the number written."""
    with ExampleWriter(jsonl_path) as w:
        for row in rows:
            w.write(row)
    return w.count
