"""Where AudSem-schema samples come from: WebDataset tars, local JSONL/CSV records, the hub
(the hub's current CSV tables are read by :mod:`audsemthinker.data.audsem_layouts`).

Every reader yields ``(split, key, meta, audio)`` where ``meta`` is the sample's JSON (or the
parse error, so the builder can count it), and ``audio`` is ``(bytes, extension)`` from a tar or
the hub, a ``Path`` for records, or None when the sample has none; or a
:class:`~audsemthinker.data.registry.Skip` for a broken shard; and a
:class:`~audsemthinker.data.audsem_layouts.SplitStart` before each split's items.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audsemthinker.data.audsem_layouts import (
    AUDIO_EXTS,
    AUDIO_HINT,
    SplitStart,
    check_columns,
    file_ref,
    from_json_split,
    join_audio,
    join_rows,
)
from audsemthinker.data.examples import RowError
from audsemthinker.data.paths import confined
from audsemthinker.data.readers import iter_json_lines, read_csv
from audsemthinker.data.registry import IncompleteBuild, Skip


def iter_tar(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]] | Skip]:
    """WebDataset samples of one tar: ``(key, {ext: bytes})``, grouped like webdataset does.

    A truncated or corrupt tar ends with one :class:`Skip` (reason ``corrupt_shard``); the
    sample being read when it broke is dropped, never paired with another sample's files.
    """
    key, files = None, {}
    try:
        with tarfile.open(str(path), "r|*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                folder, base = os.path.split(m.name.removeprefix("./"))
                stem, _, ext = base.partition(".")
                k = f"{folder}/{stem}" if folder else stem
                if k != key and files:
                    yield key, files
                    files = {}
                key = k
                files[ext.lower()] = tar.extractfile(m).read()
        if files:
            yield key, files
    except (tarfile.TarError, EOFError, OSError) as e:
        yield Skip(f"{Path(path).name}:{key}", "corrupt_shard", str(e))


def _shard_files(shards: Any, splits: tuple[str, ...]) -> dict[str, list[str]]:
    if isinstance(shards, dict):
        return {s: sorted(p for g in _as_list(v) for p in _tars(g)) for s, v in shards.items()}
    root = Path(str(shards))
    if root.is_dir() and any((root / s).is_dir() for s in splits):
        return {s: sorted(glob.glob(str(root / s / "*.tar"))) or _json_files(root / s)
                for s in splits}
    return {"train": sorted(p for g in _as_list(shards) for p in _tars(g))}


def _json_files(folder: Path) -> list[str]:
    """A split folder's JSON tables (the older layout's validation split), when it has no tars.

    Raises:
        IncompleteBuild: the folder holds files but neither tars nor JSON (a split the source
            has would be lost).
    """
    found = sorted(glob.glob(str(folder / "*.json")) + glob.glob(str(folder / "*.jsonl")))
    found = [p for p in found if Path(p).name not in ("sizes.json", "_info.json")]
    if not found and folder.is_dir() and any(p.is_file() for p in folder.iterdir()):
        names = sorted(p.name for p in folder.iterdir())[:8]
        raise IncompleteBuild(f"audsem: split folder {folder} has no .tar or .json/.jsonl "
                              f"tables (it holds {names})")
    return found


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _tars(pattern: str) -> list[str]:
    p = Path(str(pattern))
    return glob.glob(str(p / "*.tar")) if p.is_dir() else glob.glob(str(pattern))


def from_shards(shards: Any, splits: tuple[str, ...], audio_dir: str | Path | None = None,
                cmap: dict | None = None, allow_outside: bool = False) -> Iterator:
    """Samples of WebDataset tars; a split folder with JSON tables instead of tars (the older
    layout's ``valid/*.json``) is read as rows joined to clips in ``audio_dir`` or, without
    one, beside the JSON."""
    files = _shard_files(shards, splits)
    if not any(files.values()):
        raise FileNotFoundError(f"audsem: no .tar shards found for {shards!r}")
    for split, paths in files.items():
        if paths:
            yield SplitStart(split)
        if paths and not paths[0].endswith(".tar"):
            yield from from_json_split(paths, split, audio_dir, cmap or {}, allow_outside)
            continue
        for path in paths:
            for sample in iter_tar(path):
                if isinstance(sample, Skip):
                    yield sample
                    continue
                key, parts = sample
                meta = parts.get("json")
                if meta is not None:
                    meta = _json_or_error(meta)
                ext = next((e for e in AUDIO_EXTS if e in parts), None)
                yield split, key, meta, (parts[ext], ext) if ext else None


def _json_or_error(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return e
    except RecursionError:
        return ValueError("nested too deeply to parse")


def _read_records(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix.lower() == ".csv":
        yield from read_csv(path)[1]
    else:
        yield from iter_json_lines(path)


def _find_audio(audio_dir: Path, meta: dict, allow_outside: bool) -> Path | None:
    """The clip a record names, confined to ``audio_dir`` (the path as named when no file
    matches: ``load_audio`` reports it as missing).

    Raises:
        RowError: the name leaves ``audio_dir`` (or is not a usable path).
    """
    name = file_ref(meta)
    if not name:
        return None
    return join_audio(audio_dir, name, allow_outside) or confined(audio_dir, name, allow_outside)


def record_files(records: Any, splits: tuple[str, ...]) -> dict[str, Path]:
    """``{split: table}`` from a mapping, a path with ``{split}`` in it, a folder holding
    ``<split>.jsonl`` / ``<split>.csv``, or one file (read as ``train``).

    Raises:
        IncompleteBuild: a template or folder that holds none of ``splits``.
    """
    if isinstance(records, dict):
        return {s: Path(str(p)) for s, p in records.items()}
    text = str(records)
    if "{split}" in text:
        found = {s: Path(text.format(split=s)) for s in splits}
    elif Path(text).is_dir():
        found = {s: next((Path(text) / f"{s}.{e}" for e in ("jsonl", "json", "csv")
                          if (Path(text) / f"{s}.{e}").is_file()), Path(text) / f"{s}.jsonl")
                 for s in splits}
    else:
        return {"train": Path(text)}
    found = {s: p for s, p in found.items() if p.is_file()}
    if not found:
        raise IncompleteBuild(f"audsem: records {text!r} holds none of the splits {list(splits)}")
    return found


def from_records(records: Any, audio_dir: str | Path | None,
                 allow_outside: bool = False, splits: tuple[str, ...] = ("train",)) -> Iterator:
    if audio_dir is None:
        raise ValueError("audsem: records need audio_dir (the folder holding the clips)")
    for split, path in record_files(records, splits).items():
        yield SplitStart(split)
        for n, meta in _read_records(path):
            key = f"{path.stem}:{n}"
            if not isinstance(meta, dict):
                yield split, key, meta, None
                continue
            key = str(meta.get("id") or meta.get("__key__") or key)
            try:
                audio = _find_audio(Path(str(audio_dir)), meta, allow_outside)
            except RowError as e:
                yield Skip(key, e.reason, e.detail)
                continue
            yield split, key, meta, audio


def from_hub(hub: str, config: str, splits: tuple[str, ...], hub_kwargs: dict,
             audio_dir: str | Path | None = None, allow_outside: bool = False,
             cmap: dict | None = None, variant: str = "semantic") -> Iterator:
    """Samples of a hub dataset, per split. A split without an audio column (the current
    ``gijs/audsem`` tables) is joined by file reference to the clips in ``audio_dir``.

    Raises:
        RuntimeError: the hub cannot be reached.
        IncompleteBuild: a text-only split and no ``audio_dir``; missing columns.
    """
    try:
        from datasets import Audio, Value, load_dataset
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise RuntimeError("audsem: the hub source needs the `datasets` package") from e
    kwargs = {"name": config, "streaming": True, **hub_kwargs}
    for split in splits:
        try:
            ds = load_dataset(hub, split=split, **kwargs)
        except Exception as e:
            raise RuntimeError(f"audsem: cannot load {hub!r} split {split!r} from the hub "
                               f"({type(e).__name__}: {e}); download the tables and pass "
                               "csv=<folder> (or shards=<folder> for tars) instead") from e
        feats = ds.features or {}
        audio_cols = [k for k, v in feats.items() if isinstance(v, Audio)]
        if audio_cols:  # raw bytes: decoding here would need torchcodec and waste a pass
            ds = ds.cast(type(feats)({**feats, **{k: Value("binary") for k in audio_cols}}))
        yield SplitStart(split)
        examples = iter(ds)
        first = next(examples, None)  # streamed tables may not declare their features
        examples = itertools.chain([first] if first is not None else [], examples)
        columns = list(feats) or list(first or {})
        if columns and "json" not in columns and not set(columns) & {*AUDIO_EXTS, "audio"}:
            yield from _text_only(examples, f"{hub} {config}/{split}", split, audio_dir,
                                  cmap or {}, config, variant, columns, allow_outside)
            continue
        for n, ex in enumerate(examples):
            meta = ex.get("json", ex)
            key = str(ex.get("__key__") or (meta.get("id") if isinstance(meta, dict) else None)
                      or f"{split}:{n}")
            audio = next((ex[c] for c in (*AUDIO_EXTS, "audio") if ex.get(c)), None)
            if isinstance(audio, dict) and audio.get("bytes"):
                ext = Path(str(audio.get("path") or "x.flac")).suffix.lstrip(".") or "flac"
                audio = (audio["bytes"], ext)
            elif isinstance(audio, dict) and audio.get("path"):
                try:  # a path without bytes names a local file: only under audio_dir
                    if audio_dir is None and not allow_outside:
                        raise RowError("path_outside_root", f"{str(audio['path'])[:200]!r}: "
                                       "hub audio given as a path needs audio_dir")
                    audio = confined(audio_dir or ".", str(audio["path"]), allow_outside)
                except RowError as e:
                    yield Skip(key, e.reason, e.detail)
                    continue
            yield split, key, meta, audio


def _text_only(ds: Any, where: str, split: str, audio_dir: str | Path | None, cmap: dict,
               config: str, variant: str, columns: list[str], allow_outside: bool) -> Iterator:
    """A hub split without audio, joined to ``audio_dir`` by each row's file reference."""
    if audio_dir is None:
        raise IncompleteBuild(f"audsem: {where} has no audio column ({columns}) and "
                              f"data.kwargs.audio_dir is not set; {AUDIO_HINT}")
    check_columns(columns, cmap, config, variant, where)
    yield from join_rows(enumerate(ds, 1), where, split, audio_dir, cmap, allow_outside)
