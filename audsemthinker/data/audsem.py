"""AudSem (``gijs/audsem``, ``gijs/audsem-simple``) as SFT or GRPO rows with audio on disk.

Three sources, one row logic:

- ``shards``: local WebDataset tars in the published schema: per sample ``__key__``
  (``<clip>_qa_<i>``), ``flac`` and ``json`` with ``file_name, question, thinking,
  semantic_elements`` (semantic variant), ``answer``, ``choices`` (``mc_qa``). A folder holds
  ``<split>/*.tar`` (the release layout) or the tars themselves.
- ``records``: a local JSONL or CSV with the same fields plus an ``audio_dir`` holding the clips
  (``<file_name>`` with or without an audio extension).
- ``hub``: a hub name through ``datasets.load_dataset`` (streaming; needs the network).

Audio from tars/hub is written to ``out_dir/audio/<key>.flac``, by default re-encoded once as
16 kHz mono FLAC (what the thinker consumes; ``store_16k=False`` keeps the source bytes), and
identical source bytes are hard-linked, since every QA pair of a clip carries the same FLAC.
Records keep pointing at their own files.
The ``mc_qa`` shards store the question with its choices block appended and the choices as a
``{"A": ...}`` mapping: the question is split and re-rendered by :mod:`audsemthinker.format`,
and the gold answer normalised to ``"B. text"``.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from audsemthinker import format as fmt
from audsemthinker.audio import AudioError
from audsemthinker.data.examples import RowError, row_maker
from audsemthinker.data.registry import Meta, Skip, holdout, register_builder
from audsemthinker.data.sources import from_hub, from_records, from_shards

CONFIGS = ("aac", "qa", "mc_qa", "creative_qa")


def safe_name(key: str) -> str:
    """A file name for an item key; keys that needed changing get a hash so none collide."""
    safe = re.sub(r"[^\w.\-]+", "_", str(key)).strip("._") or "item"
    return safe if safe == key else f"{safe}-{hashlib.sha1(str(key).encode()).hexdigest()[:8]}"


def parse_choices(value: Any) -> list[str] | None:
    """Choices as a list of texts from a list, a ``{"A": text}`` mapping or their JSON/repr string.

    A leading ``"A. "`` on every option (in letter order) is dropped: :func:`format.mc_question`
    adds the letters.
    """
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    if isinstance(value, str):
        try:
            import json

            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise RowError("bad_choices", f"cannot parse choices {value[:80]!r}") from None
    if isinstance(value, dict):
        value = [v for _, v in sorted(value.items(), key=lambda kv: str(kv[0]))]
    if not isinstance(value, (list, tuple)):
        raise RowError("bad_choices", f"choices of type {type(value).__name__}")
    out = [str(v).strip() for v in value]
    prefixes = [f"{fmt.OPTION_LETTERS[i]}. " for i in range(min(len(out), 26))]
    if out and all(c.startswith(p) for c, p in zip(out, prefixes)):
        out = [c[len(p):] for c, p in zip(out, prefixes)]
    return out


def _elements_text(value: Any) -> str | None:
    """The semantic-elements block as text (a mapping of category names is rendered)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        mapped = {fmt.category_key(k): v if isinstance(v, list) else [str(v)]
                  for k, v in value.items()}
        if None in mapped:
            raise RowError("bad_semantic_elements", f"unknown categories in {list(value)}")
        return fmt.render_semantic_elements(mapped)
    return str(value).strip()


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------
class _AudioStore:
    """Writes each item's audio once per content (hard links for repeats).

    With ``to_16k`` the clip is decoded once here and stored as what the thinker consumes
    (16 kHz mono 16-bit FLAC): a third of the 48 kHz source's size, and every training epoch
    skips the resampling and two thirds of the decoding.
    """

    def __init__(self, folder: Path, to_16k: bool):
        self.folder, self.to_16k = folder, to_16k
        self.by_hash: dict[str, Path] = {}

    def path_for(self, key: str, ext: str) -> Path:
        return (self.folder / f"{safe_name(key)}.{'flac' if self.to_16k else ext}").resolve()

    def put(self, path: Path, data: bytes, ext: str) -> Path:
        """Write ``data`` to ``path``.

        Raises:
            AudioError: with ``to_16k``, bytes that do not decode to usable audio.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()
        first = self.by_hash.get(digest)
        path.unlink(missing_ok=True)
        if first is not None and first.exists():
            try:
                os.link(first, path)
                return path
            except OSError:
                pass
        tmp = path.with_name(f"{path.stem}.src.{ext}")
        tmp.write_bytes(data)
        try:
            if self.to_16k:
                import soundfile as sf

                from audsemthinker.audio import SAMPLE_RATE, load_audio

                wave = load_audio(tmp, min_seconds=0.0)
                out = path.with_name(path.name + ".tmp")
                sf.write(str(out), wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
                os.replace(out, path)
            else:
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.by_hash.setdefault(digest, path)
        return path


def sample_fields(meta: dict, config: str, variant: str, key: str) -> dict:
    """Question, choices, answer, think and elements of one AudSem sample.

    Raises:
        RowError: ``missing_field`` (named), ``bad_choices``, ``choices_mismatch``.
    """
    def field(name: str, required: bool = True) -> str:
        v = meta.get(name)
        v = "" if v is None or (isinstance(v, float) and v != v) else str(v).strip()
        if required and not v:
            raise RowError("missing_field", name)
        return v

    question = field("question", required=config != "aac")
    if not question:  # captioning samples may come without a prompt: pick one stably
        h = int(hashlib.sha256(key.encode()).hexdigest(), 16)
        question = fmt.CAPTION_PROMPTS[h % len(fmt.CAPTION_PROMPTS)]
    choices = parse_choices(meta.get("choices"))
    question, embedded = fmt.split_mc_question(question)
    if config == "mc_qa":
        if choices and embedded and [fmt.normalize(c) for c in choices] != \
                [fmt.normalize(c) for c in embedded]:
            raise RowError("choices_mismatch", f"{choices!r} vs question block {embedded!r}")
        choices = choices or embedded
        if not choices:
            raise RowError("missing_field", "choices")
    else:
        choices = None
    elements = _elements_text(meta.get("semantic_elements"))
    if variant == "semantic" and not elements:
        raise RowError("missing_field", "semantic_elements")
    return {"question": question, "choices": choices, "answer": field("answer"),
            "think": field("thinking"), "semantic_elements": elements}


@register_builder("audsem")
def audsem(out_dir: Path, *, config: str = "mc_qa", variant: str = "semantic",
           shards: Any = None, records: Any = None, audio_dir: str | None = None,
           hub: str | None = None, hub_kwargs: dict | None = None,
           splits: list[str] | tuple[str, ...] = ("train", "valid"), kind: str = "sft",
           prepend_instruction: bool = True, length_budget: int | None = None,
           valid_fraction: float | None = None, seed: int = 42, limit: int | None = None,
           store_16k: bool = True):
    """Yield AudSem rows of one config from shards, local records or the hub.

    Args:
        out_dir: dataset folder (tar/hub audio is extracted to ``out_dir/audio``).
        config: ``aac``, ``qa``, ``mc_qa`` or ``creative_qa`` (the row's ``task``).
        variant: ``semantic`` (needs ``semantic_elements``) or ``simple``.
        shards: a folder with ``<split>/*.tar``, a folder/glob of tars (all ``train``), or
            ``{split: folder/glob/list}``.
        records: a JSONL/CSV path (``train``) or ``{split: path}``; needs ``audio_dir``.
        audio_dir: folder of the records' clips.
        hub: hub dataset name (``gijs/audsem``, ``gijs/audsem-simple``), loaded per split with
            ``datasets.load_dataset(hub, name=config, split=..., streaming=True, **hub_kwargs)``.
        hub_kwargs: extra ``load_dataset`` arguments (``revision``, ``data_files``, ``name``).
        splits: source splits read from a shard folder or the hub.
        kind: ``sft`` or ``grpo`` rows.
        prepend_instruction, length_budget: prompt options.
        valid_fraction: if set, hold out this fraction of the *clips* (by ``file_name``, so
            QA pairs of one clip never straddle splits) of ``train`` as ``valid``, seeded.
        seed: the hold-out seed.
        limit: stop after this many rows (quick builds).
        store_16k: store tar/hub audio as 16 kHz mono FLAC (decoded once at build time)
            instead of the source bytes; records always keep pointing at their own files.

    Raises:
        ValueError: not exactly one source, an unknown config, or records without audio_dir.
        FileNotFoundError: a shard folder/glob with no tars.
        RuntimeError: the hub cannot be reached (the message says to use ``shards``).
    """
    if config not in CONFIGS:
        raise ValueError(f"audsem: unknown config {config!r}; expected one of {CONFIGS}")
    fmt.check_variant(variant)
    make_row = row_maker(kind)
    given = [n for n, v in (("shards", shards), ("records", records), ("hub", hub)) if v]
    if len(given) != 1:
        raise ValueError(f"audsem: give exactly one of shards / records / hub, got {given}")
    splits = tuple(splits)
    if shards:
        source = from_shards(shards, splits)
    elif records:
        source = from_records(records, audio_dir)
    else:
        source = from_hub(str(hub), config, splits, dict(hub_kwargs or {}))
    store = _AudioStore(Path(out_dir) / "audio", to_16k=store_16k)
    yield Meta({"config": config, "variant": variant, "source": given[0],
                "valid_fraction": valid_fraction, "seed": seed})
    n_rows, seen = 0, set()
    for item in source:
        if isinstance(item, Skip):
            yield item
            continue
        split, key, meta, audio = item
        if key in seen:  # checked before writing: a repeat must not overwrite the first's audio
            yield Skip(key, "duplicate_id", f"split {split}")
            continue
        seen.add(key)
        if isinstance(meta, Exception) or (meta is not None and not isinstance(meta, dict)):
            yield Skip(key, "malformed_json", str(meta)[:200])
            continue
        if meta is None:
            yield Skip(key, "missing_field", "json")
            continue
        if audio is None:
            yield Skip(key, "missing_audio", "no audio file in the sample")
            continue
        try:
            fields = sample_fields(meta, config, variant, key)
        except RowError as e:
            yield Skip(key, e.reason, e.detail)
            continue
        clip = str(meta.get("file_name") or key)
        if valid_fraction and split == "train" and holdout(clip, seed, valid_fraction):
            split = "valid"
        path = store.path_for(key, audio[1]) if isinstance(audio, tuple) else Path(audio).resolve()
        try:
            row = make_row(id=key, audio=str(path), task=config, variant=variant,
                           prepend_instruction=prepend_instruction, length_budget=length_budget,
                           source="audsem", file_name=clip, **fields)
        except RowError as e:
            yield Skip(key, e.reason, e.detail)
            continue
        if isinstance(audio, tuple):  # written only for rows that exist
            try:
                store.put(path, *audio)
            except AudioError as e:
                yield Skip(key, e.reason, e.detail)
                continue
        yield split, row
        n_rows += 1
        if limit is not None and n_rows >= limit:
            return
