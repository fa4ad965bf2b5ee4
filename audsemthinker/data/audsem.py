"""AudSem (``gijs/audsem``, ``gijs/audsem-simple``) as SFT or GRPO rows with audio on disk.

Four sources, one row logic:

- ``csv`` (the default): a local copy of the hub dataset as it is published today,
  ``<root>/<config>/{train,valid}.csv``, text only; each row is joined to its clip in
  ``audio_dir`` by ``file_name`` (:mod:`audsemthinker.data.audsem_layouts`).
- ``shards``: local WebDataset tars in the published schema: per sample ``__key__``
  (``<clip>_qa_<i>``), ``flac`` and ``json`` with ``file_name, question, thinking,
  semantic_elements`` (semantic variant), ``answer``, ``choices`` (``mc_qa``). A folder holds
  ``<split>/*.tar`` (the release layout) or the tars themselves; a split folder of ``*.json``
  tables (the older hub layout's validation split) is read as rows joined to clips.
- ``records``: a local JSONL or CSV with the same fields plus an ``audio_dir`` holding the clips
  (``<file_name>`` with or without an audio extension).
- ``hub``: a hub name through ``datasets.load_dataset`` (streaming; needs the network).

Column names are mapped per config (``aac`` has ``caption`` where the others have ``answer``;
``columns`` overrides). Every clip is written to ``out_dir/audio/<key>.flac``, by default
re-encoded once as 16 kHz mono FLAC (what the thinker consumes; ``store_16k=False`` keeps tar
bytes as they are and points rows at local clips), and identical sources are hard-linked, since
every QA pair of a clip carries the same audio.
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
from audsemthinker.data.audsem_layouts import SplitStart, column_map, from_csv, remap
from audsemthinker.data.examples import RowError, row_maker
from audsemthinker.data.paths import safe_name
from audsemthinker.data.registry import Meta, Skip, holdout, register_builder
from audsemthinker.data.sources import from_hub, from_records, from_shards

CONFIGS = ("aac", "qa", "mc_qa", "creative_qa")


_NUMERIC = re.compile(r"\d+")


def _choice_order(keys: list) -> list:
    """Mapping keys in option order: letters alphabetically, numbers numerically (a string sort
    puts ``"10"`` before ``"2"``).

    Raises:
        RowError: ``bad_choices`` for keys that are neither all letters nor all numbers.
    """
    text = [str(k).strip() for k in keys]
    if all(_NUMERIC.fullmatch(k) for k in text):
        return [k for _, k in sorted(zip((int(t) for t in text), keys))]
    if all(len(k) == 1 and k.isalpha() for k in text):
        return [k for _, k in sorted(zip((t.upper() for t in text), keys))]
    raise RowError("bad_choices", f"choice keys {text[:8]!r} are neither letters nor numbers")


def parse_choices(value: Any) -> list[str] | None:
    """Choices as a list of texts from a list, a ``{"A": text}`` mapping or their JSON/repr string.

    A mapping is read in option order (``A, B, ...`` or ``1, 2, ..., 10``). A leading ``"A. "``
    on every option (in letter order) is dropped: :func:`format.mc_question` adds the letters.

    Raises:
        RowError: ``bad_choices``: unparsable text, nesting past the parser's limit, an option
            that is not a string or number, or mapping keys that are not an option order.
    """
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return None
    if isinstance(value, str):
        try:
            import json

            value = json.loads(value)
        except RecursionError:
            raise RowError("bad_choices", "choices nested too deeply") from None
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
                raise RowError("bad_choices", f"cannot parse choices {value[:80]!r}") from None
    if isinstance(value, dict):
        value = [value[k] for k in _choice_order(list(value))]
    if not isinstance(value, (list, tuple)):
        raise RowError("bad_choices", f"choices of type {type(value).__name__}")
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        kinds = sorted({type(v).__name__ for v in value})
        raise RowError("bad_choices", f"options must be texts, got {kinds}")
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
        self.owner: dict[str, str] = {}

    def path_for(self, key: str, ext: str) -> Path:
        """The file for ``key``'s audio, claimed for it alone.

        Raises:
            RowError: ``name_collision`` if another key already holds the name (file names are
                compared case-folded, as a case-insensitive file system would).
        """
        path = (self.folder / f"{safe_name(key)}.{'flac' if self.to_16k else ext}").resolve()
        holder = self.owner.setdefault(str(path).casefold(), key)
        if holder != key:
            raise RowError("name_collision", f"{path.name} already holds {holder!r}")
        return path

    def put(self, path: Path, data: bytes, ext: str) -> Path:
        """Write ``data`` to ``path``.

        Raises:
            AudioError: with ``to_16k``, bytes that do not decode to usable audio.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()
        path.unlink(missing_ok=True)
        if self._link(self.by_hash.get(digest), path):
            return path
        tmp = path.with_name(f"{path.stem}.src.{ext}")
        tmp.write_bytes(data)
        try:
            if self.to_16k:
                self._write_16k(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.by_hash.setdefault(digest, path)
        return path

    def put_file(self, path: Path, source: Path) -> Path:
        """Store a local clip (records, CSV tables) at ``path`` as 16 kHz mono FLAC, decoding
        each source file once however many rows name it.

        Raises:
            AudioError: the source is missing or does not decode to usable audio.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        src = str(Path(source).resolve())
        path.unlink(missing_ok=True)
        if not self._link(self.by_hash.get(src), path):
            self._write_16k(Path(source), path)
            self.by_hash.setdefault(src, path)
        return path

    @staticmethod
    def _link(first: Path | None, path: Path) -> bool:
        if first is None or not first.exists():
            return False
        try:
            os.link(first, path)
            return True
        except OSError:
            return False

    @staticmethod
    def _write_16k(source: Path, path: Path) -> None:
        import soundfile as sf

        from audsemthinker.audio import SAMPLE_RATE, load_audio

        wave = load_audio(source, min_seconds=0.0)
        out = path.with_name(path.name + ".tmp")
        sf.write(str(out), wave, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(out, path)


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


# Over 60 lines: the documented options, then one loop; each skip reason is one branch.
@register_builder("audsem")
def audsem(out_dir: Path, *, config: str = "mc_qa", variant: str = "semantic",
           csv: Any = None, shards: Any = None, records: Any = None,
           audio_dir: str | None = None, columns: dict | None = None,
           hub: str | None = None, hub_kwargs: dict | None = None,
           splits: list[str] | tuple[str, ...] = ("train", "valid"), kind: str = "sft",
           prepend_instruction: bool = True, length_budget: int | None = None,
           valid_fraction: float | None = None, seed: int = 42, limit: int | None = None,
           store_16k: bool = True, allow_outside_root: bool = False):
    """Yield AudSem rows of one config from the hub's CSV tables, shards, records or the hub.

    Args:
        out_dir: dataset folder (audio is stored under ``out_dir/audio``).
        config: ``aac``, ``qa``, ``mc_qa`` or ``creative_qa`` (the row's ``task``).
        variant: ``semantic`` (needs ``semantic_elements``) or ``simple``.
        csv: a local copy of the hub dataset: ``<csv>/<config>/<split>.csv`` (text only; the
            clips come from ``audio_dir``). The fallback route: used only when none of
            ``shards`` / ``records`` / ``hub`` is given.
        shards: a folder with ``<split>/*.tar`` (a split folder with ``*.json`` tables instead
            is read as rows joined to clips), a folder/glob of tars (all ``train``), or
            ``{split: folder/glob/list}``.
        records: a JSONL/CSV path (``train``), a path with ``{split}`` in it, a folder of
            ``<split>.jsonl``/``.csv``, or ``{split: path}``; needs ``audio_dir``.
        audio_dir: folder of the clips that rows name by ``file_name`` (with or without an
            audio extension).
        columns: ``{field: column}`` overriding the per-config column names (defaults: the
            release's ``file_name, question, thinking, semantic_elements, answer, choices``;
            ``aac`` reads ``answer`` from ``caption``).
        hub: hub dataset name (``gijs/audsem``, ``gijs/audsem-simple``), loaded per split with
            ``datasets.load_dataset(hub, name=config, split=..., streaming=True, **hub_kwargs)``;
            a text-only split is joined to ``audio_dir``.
        hub_kwargs: extra ``load_dataset`` arguments (``revision``, ``data_files``, ``name``).
        splits: source splits to read.
        kind: ``sft`` or ``grpo`` rows.
        prepend_instruction, length_budget: prompt options.
        valid_fraction: if set, hold out this fraction of the *clips* (by ``file_name``, so
            QA pairs of one clip never straddle splits) of ``train`` as ``valid``, seeded.
        seed: the hold-out seed.
        limit: stop after this many rows (quick builds).
        store_16k: store every clip as 16 kHz mono FLAC under ``out_dir/audio`` (decoded once at
            build time); off, tar/hub bytes are kept as they are and local clips are pointed at.
        allow_outside_root: accept file references (and hub audio paths) that are absolute or
            climb out of ``audio_dir``; off by default, such rows are skipped as
            ``path_outside_root``.

    Raises:
        ValueError: more than one of shards / records / hub, no source, an unknown config,
            records without audio_dir.
        FileNotFoundError: a shard folder/glob with no tars.
        RuntimeError: the hub cannot be reached.
        IncompleteBuild: a text-only source without ``audio_dir``, missing columns (the
            available ones listed), no table; after the build (from the build loop): 0 rows
            kept or a source split lost.
    """
    if config not in CONFIGS:
        raise ValueError(f"audsem: unknown config {config!r}; expected one of {CONFIGS}")
    fmt.check_variant(variant)
    make_row = row_maker(kind)
    cmap = column_map(config, columns)
    given = [n for n, v in (("shards", shards), ("records", records), ("hub", hub)) if v]
    if len(given) > 1:
        raise ValueError(f"audsem: give exactly one of shards / records / hub, got {given}; "
                         f"set the others to null (e.g. data.kwargs.{given[0]}=null)")
    if not given and not csv:
        raise ValueError("audsem: no source: set csv (the hub tables), shards, records or hub")
    splits = tuple(splits)
    if shards:
        source = from_shards(shards, splits, audio_dir, cmap, allow_outside_root)
    elif records:
        source = from_records(records, audio_dir, allow_outside_root, splits)
    elif hub:
        source = from_hub(str(hub), config, splits, dict(hub_kwargs or {}), audio_dir,
                          allow_outside_root, cmap, variant)
    else:
        source = from_csv(csv, config, variant, splits, audio_dir, cmap, allow_outside_root)
    store = _AudioStore(Path(out_dir) / "audio", to_16k=store_16k)
    yield Meta({"config": config, "variant": variant, "source": (given or ["csv"])[0],
                "valid_fraction": valid_fraction, "seed": seed, "require_rows": True})
    n_rows, seen, source_splits = 0, set(), []
    for item in source:
        if isinstance(item, SplitStart):
            source_splits.append(item.split)
            yield Meta({"source_splits": list(source_splits)})
            continue
        if isinstance(item, Skip):
            yield item
            continue
        split, key, meta, audio = item
        if key in seen:  # checked before writing: a repeat must not overwrite the first's audio
            yield Skip(key, "duplicate_id", f"split {split}")
            continue
        seen.add(key)
        if isinstance(meta, RowError):
            yield Skip(key, meta.reason, meta.detail)
            continue
        if isinstance(meta, Exception) or (meta is not None and not isinstance(meta, dict)):
            yield Skip(key, "malformed_json", str(meta)[:200])
            continue
        if meta is None:
            yield Skip(key, "missing_field", "json")
            continue
        if audio is None:
            yield Skip(key, "missing_audio", "no audio file in the sample")
            continue
        meta = remap(meta, cmap)
        try:
            fields = sample_fields(meta, config, variant, key)
        except RowError as e:
            yield Skip(key, e.reason, e.detail)
            continue
        clip = str(meta.get("file_name") or key)
        if valid_fraction and split == "train" and holdout(clip, seed, valid_fraction):
            split = "valid"
        stored = isinstance(audio, tuple) or store_16k
        try:
            path = store.path_for(key, audio[1] if isinstance(audio, tuple) else "flac") \
                if stored else Path(audio).resolve()
            row = make_row(id=key, audio=str(path), task=config, variant=variant,
                           prepend_instruction=prepend_instruction, length_budget=length_budget,
                           source="audsem", file_name=clip, **fields)
        except RowError as e:
            yield Skip(key, e.reason, e.detail)
            continue
        if stored:  # written only for rows that exist
            try:
                if isinstance(audio, tuple):
                    store.put(path, *audio)
                else:
                    store.put_file(path, Path(audio))
            except AudioError as e:
                yield Skip(key, e.reason, e.detail)
                continue
            except OSError as e:  # disk full, permissions: name the row, keep building
                yield Skip(key, "audio_write_failed", f"{type(e).__name__}: {e}")
                continue
        yield split, row
        n_rows += 1
        if limit is not None and n_rows >= limit:
            return
