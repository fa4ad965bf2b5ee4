"""Benchmark rows: MMAU (official JSON + audio folder) and MuchoMusic (CSV + audio folder).

Rows keep every field of the source item (the scorers group by ``task``, ``difficulty``,
``sub-category``, ``music_reasoning``, ...), add the ``audio`` path, and carry each prompt the
evaluation harness may pick by name under ``prompts``: ``audsem`` (the paper's system-prompted
instruction + ``Choices:`` layout), ``r1_aqa`` and, for MuchoMusic, ``muchomusic``. All prompt
strings come from :mod:`audsemthinker.format`.

The rows deliberately have no ``prompt`` (chat messages) column: the harness would use it as is
and ignore the template chosen in the eval config.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import numpy as np

from audsemthinker import format as fmt
from audsemthinker.data.examples import RowError
from audsemthinker.data.muchomusic_audio import TrackIndex
from audsemthinker.data.paths import confined
from audsemthinker.data.readers import read_csv
from audsemthinker.data.registry import Meta, Skip, register_builder
from audsemthinker.files import sha256_file

MMAU_KEYS = ("id", "audio_id", "question", "choices", "answer", "dataset", "task", "split",
             "category", "sub-category", "difficulty")
MMAU_REQUIRED = ("id", "audio_id", "question", "choices", "answer")
MUCHOMUSIC_REQUIRED = ("question", "dataset_identifier", "correct_answer", "distractor_1_answer",
                       "distractor_2_answer", "distractor_3_answer")
AUDIO_EXTS = ("", ".wav", ".flac", ".mp3", ".ogg")


def benchmark_prompts(question: str, options: list[str], variant: str = "semantic",
                      prepend_instruction: bool = True, length_budget: int | None = None,
                      muchomusic: bool = False) -> dict[str, str]:
    """The user texts of one benchmark item under every template name the harness knows."""
    out = {"audsem": fmt.user_prompt(question, options, variant=variant,
                                     prepend_instruction=prepend_instruction,
                                     length_budget=length_budget),
           "r1_aqa": fmt.r1_aqa_prompt(question, options)}
    if muchomusic:
        out["muchomusic"] = fmt.muchomusic_prompt(question, options)
    return out


# Over 60 lines: a registered builder: the documented source layout, then one loop over items.
@register_builder("mmau")
def mmau(out_dir: Path, *, metadata: str, audio_root: str | None = None, split: str = "test",
         version: str | None = None, variant: str = "semantic", prepend_instruction: bool = True,
         length_budget: int | None = None, limit: int | None = None,
         allow_outside_root: bool = False):
    """Yield MMAU rows (test-mini with answers, or test with empty answers).

    Args:
        out_dir: dataset folder (rows go to ``<out_dir>/<split>.jsonl``).
        metadata: the official JSON list (``mmau-test-mini.json`` / ``mmau-test.json``).
        audio_root: folder the audio archive was extracted to; each ``audio_id``
            (``./test-mini-audios/<id>.wav``) is resolved against it. Default: the JSON's folder.
        split: the output split name.
        version: which MMAU release (``original`` / ``v05.15.25``), recorded with the file's
            sha256 in the report (results must say which they used).
        variant, prepend_instruction, length_budget: options of the ``audsem`` prompt.
        limit: stop after this many rows.
        allow_outside_root: accept ``audio_id`` values that are absolute or climb out of
            ``audio_root`` (otherwise skipped as ``path_outside_root``).

    Items are checked before they become rows, so the evaluation never meets them after hours
    of generation: a null or empty ``question``, ``audio_id`` or option is ``missing_field`` /
    ``bad_choices``; a null or empty ``answer`` is ``missing_field`` unless ``split`` is
    ``test`` (whose answers MMAU withholds).

    Yields:
        ``(split, row)``: every MMAU field plus ``audio``, ``benchmark`` and ``prompts``.

    Raises:
        ValueError: the file is not a JSON list (a whole-file problem, not an item's).
    """
    meta_path = Path(metadata)
    try:
        items = json.loads(meta_path.read_text(encoding="utf-8-sig"))
    except RecursionError:
        raise ValueError(f"mmau: {meta_path} nests too deeply to parse") from None
    if not isinstance(items, list):
        raise ValueError(f"mmau: {meta_path} holds a {type(items).__name__}, expected a list")
    root = Path(audio_root) if audio_root else meta_path.parent
    answered = split != "test"  # MMAU withholds only the test split's answers
    yield Meta({"total": len(items), "metadata": str(meta_path), "version": version,
                "metadata_sha256": sha256_file(meta_path), "audio_root": str(root)})
    n = 0
    for i, item in enumerate(items):
        item_id = str(item.get("id")) if isinstance(item, dict) and item.get("id") else f"#{i}"
        if not isinstance(item, dict):
            yield Skip(item_id, "malformed_item", f"{type(item).__name__} at index {i}")
            continue
        missing = [k for k in MMAU_REQUIRED if k not in item]
        if missing:
            yield Skip(item_id, "missing_field", ",".join(missing))
            continue
        empty = [k for k in ("question", "audio_id") if not _text(item[k])]
        if answered and not _text(item["answer"]):
            empty.append("answer")
        if empty:
            yield Skip(item_id, "missing_field", ",".join(empty) + " null or empty")
            continue
        choices = item["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(map(_text, choices)):
            yield Skip(item_id, "bad_choices", repr(choices)[:100])
            continue
        answer = str(item["answer"]) if _text(item["answer"]) else ""
        if answer and answer not in choices:  # test has empty answers; test-mini verbatim
            yield Skip(item_id, "answer_not_in_choices", f"{answer!r} not in {choices!r}"[:300])
            continue
        try:
            audio = confined(root, str(item["audio_id"]), allow_outside_root)
        except RowError as e:
            yield Skip(item_id, e.reason, e.detail)
            continue
        question = str(item["question"])
        row = {**item, "id": item_id, "audio": str(audio), "benchmark": "mmau",
               "prompts": benchmark_prompts(question, [str(c) for c in choices], variant,
                                            prepend_instruction, length_budget)}
        yield split, row
        n += 1
        if limit is not None and n >= limit:
            return


def _text(value) -> str:
    """A field as text: strings and numbers, stripped; anything else (None, lists) as ""."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return str(value).strip()


def _template_fields(template: str, columns: list[str]) -> list[str]:
    """The CSV columns an ``audio_template`` names.

    Raises:
        ValueError: a field that is not a plain column name (attribute or index access) or
            names a column the CSV lacks: a config mistake that would skip every row.
    """
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"muchomusic: audio_template {template!r}: {e}") from None
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"muchomusic: audio_template field {{{name}}} must be a plain "
                             f"column name (columns: {columns})")
        if name not in columns:
            raise ValueError(f"muchomusic: audio_template names column {name!r}, which the CSV "
                             f"lacks (columns: {columns})")
    return names


def _find_track(audio_dir: Path, row: dict, template: str | None, fields: list[str],
                allow_outside: bool) -> Path:
    """The track of a CSV row, confined to ``audio_dir``.

    Raises:
        RowError: ``missing_field`` (a template column empty in this row), ``bad_path``,
            ``path_outside_root``.
    """
    if template:
        empty = [f for f in fields if not str(row.get(f) or "").strip()]
        if empty:
            raise RowError("missing_field", f"{','.join(empty)} (named by audio_template)")
        return confined(audio_dir, template.format(**{f: row[f] for f in fields}),
                        allow_outside)
    ident = str(row["dataset_identifier"])
    dataset = str(row.get("dataset") or "")
    bases = [confined(audio_dir, ident, allow_outside)]
    if dataset:
        bases.insert(0, confined(audio_dir, f"{dataset}/{ident}", allow_outside))
    for base in bases:
        for ext in AUDIO_EXTS:
            cand = base.with_name(base.name + ext)
            try:
                if cand.is_file():
                    return cand
            except OSError as e:  # a name past the file system's limit
                raise RowError("bad_path", f"{ident[:100]!r}: {e.strerror}") from None
    return bases[-1]  # reported as missing by the audio check


# Over 60 lines: a registered builder: the documented source layout, then one loop over items.
@register_builder("muchomusic")
def muchomusic(out_dir: Path, *, csv_path: str, audio_dir: str, seed: int = 0,
               audio_template: str | None = None, split: str = "test",
               variant: str = "semantic", prepend_instruction: bool = True,
               length_budget: int | None = None, limit: int | None = None,
               allow_outside_root: bool = False, song_describer_csv: str | None = None,
               musiccaps_csv: str | None = None):
    """Yield MuchoMusic rows with the four options in a seeded, recorded shuffled order.

    Args:
        out_dir: dataset folder.
        csv_path: the benchmark CSV (``question, dataset, dataset_identifier, correct_answer,
            distractor_1_answer .. distractor_3_answer, genre, music_reasoning,
            music_knowledge``).
        audio_dir: folder of the tracks; a track is found as
            ``<audio_dir>/[<dataset>/]<dataset_identifier>[.wav|.flac|.mp3|.ogg]`` unless
            ``audio_template`` (e.g. ``"{dataset}/{dataset_identifier}.wav"``) says otherwise.
        seed: option-order seed; each item's order depends only on ``(seed, item id)``.
        audio_template: format string over the CSV columns giving the path under audio_dir;
            every field must be a column of the CSV (checked before any row).
        split: the output split name.
        variant, prepend_instruction, length_budget: options of the ``audsem`` prompt.
        limit: stop after this many rows.
        allow_outside_root: accept track paths that are absolute or climb out of
            ``audio_dir`` (otherwise skipped as ``path_outside_root``).
        song_describer_csv, musiccaps_csv: the benchmark tooling's layout
            (:mod:`audsemthinker.data.muchomusic_audio`): ``sdd`` tracks resolve through
            ``song_describer.csv`` to ``<its folder>/audio/<path as .2min.mp3>``, ``musiccaps``
            tracks through ``musiccaps-public.csv`` to
            ``<its folder>/audio/[<ytid>]-[<start_s>-<end_s>].wav``; a track missing from them
            is skipped as ``unknown_track``. Rows of other datasets use ``audio_dir``.

    Yields:
        ``(split, row)``: the CSV columns plus ``id``, ``audio``, ``options`` (shown order),
        ``choices`` (the same), ``answer`` (the correct text), ``answer_index``,
        ``option_seed``, ``benchmark`` and ``prompts``.
    """
    path = Path(csv_path)
    columns, reader = read_csv(path)
    fields = _template_fields(audio_template, columns) if audio_template else []
    tracks = TrackIndex.load(song_describer_csv, musiccaps_csv)
    records = list(reader)
    yield Meta({"total": len(records), "csv": str(path), "csv_sha256": sha256_file(path),
                "option_seed": seed})
    n = 0
    for i, (line, rec) in enumerate(records):
        if isinstance(rec, RowError):
            yield Skip(f"muchomusic-{i:04d} (row {line})", rec.reason, rec.detail)
            continue
        item_id = str(rec.get("id") or f"muchomusic-{i:04d}")
        missing = [k for k in MUCHOMUSIC_REQUIRED if not str(rec.get(k) or "").strip()]
        if missing:
            yield Skip(item_id, "missing_field", ",".join(missing))
            continue
        texts = [rec["correct_answer"]] + [rec[f"distractor_{k}_answer"] for k in (1, 2, 3)]
        texts = [t.strip() for t in texts]
        if len({fmt.normalize(t) for t in texts}) < 4:
            yield Skip(item_id, "duplicate_options", repr(texts)[:200])
            continue
        digest = int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:16], 16)
        order = np.random.default_rng(digest).permutation(4)
        options = [texts[j] for j in order]
        try:
            track = tracks.track(rec, allow_outside_root) or _find_track(
                Path(audio_dir), rec, audio_template, fields, allow_outside_root)
        except RowError as e:
            yield Skip(item_id, e.reason, e.detail)
            continue
        row = {**rec, "id": item_id, "audio": str(track.resolve()),
               "options": options, "choices": options, "answer": texts[0],
               "answer_index": int(np.flatnonzero(order == 0)[0]), "option_seed": seed,
               "benchmark": "muchomusic",
               "prompts": benchmark_prompts(rec["question"].strip(), options, variant,
                                            prepend_instruction, length_budget, muchomusic=True)}
        yield split, row
        n += 1
        if limit is not None and n >= limit:
            return
