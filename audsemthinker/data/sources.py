"""Where AudSem-schema samples come from: WebDataset tars, local JSONL/CSV records, the hub.

Every reader yields ``(split, key, meta, audio)`` where ``meta`` is the sample's JSON (or the
parse error, so the builder can count it), and ``audio`` is ``(bytes, extension)`` from a tar or
the hub, a ``Path`` for records, or None when the sample has none; or a
:class:`~audsemthinker.data.registry.Skip` for a broken shard.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from audsemthinker.data.examples import RowError
from audsemthinker.data.paths import confined
from audsemthinker.data.readers import iter_json_lines, read_csv
from audsemthinker.data.registry import Skip

AUDIO_EXTS = ("flac", "wav", "mp3", "ogg", "opus", "m4a")


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
        return {s: sorted(glob.glob(str(root / s / "*.tar"))) for s in splits}
    return {"train": sorted(p for g in _as_list(shards) for p in _tars(g))}


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _tars(pattern: str) -> list[str]:
    p = Path(str(pattern))
    return glob.glob(str(p / "*.tar")) if p.is_dir() else glob.glob(str(pattern))


def from_shards(shards: Any, splits: tuple[str, ...]) -> Iterator:
    files = _shard_files(shards, splits)
    if not any(files.values()):
        raise FileNotFoundError(f"audsem: no .tar shards found for {shards!r}")
    for split, paths in files.items():
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
    """The clip a record names, confined to ``audio_dir``.

    Raises:
        RowError: the name leaves ``audio_dir`` (or is not a usable path).
    """
    name = str(meta.get("audio") or meta.get("audio_path") or meta.get("file_name") or "")
    if not name:
        return None
    base = confined(audio_dir, name, allow_outside)
    try:
        for cand in (base, *(base.with_name(base.name + "." + e) for e in AUDIO_EXTS)):
            if cand.is_file():
                return cand
    except OSError as e:  # a name past the file system's limit: stat raises, not False
        raise RowError("bad_path", f"{name[:100]!r}: {e.strerror}") from None
    return base  # load_audio reports it as missing


def from_records(records: Any, audio_dir: str | Path | None,
                 allow_outside: bool = False) -> Iterator:
    if audio_dir is None:
        raise ValueError("audsem: records need audio_dir (the folder holding the clips)")
    spec = records if isinstance(records, dict) else {"train": records}
    for split, path in spec.items():
        path = Path(str(path))
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
             audio_dir: str | Path | None = None, allow_outside: bool = False) -> Iterator:
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
                               f"({type(e).__name__}: {e}); download the shards and pass "
                               "shards=... instead") from e
        feats = ds.features or {}
        audio_cols = [k for k, v in feats.items() if isinstance(v, Audio)]
        if audio_cols:  # raw bytes: decoding here would need torchcodec and waste a pass
            ds = ds.cast(type(feats)({**feats, **{k: Value("binary") for k in audio_cols}}))
        for n, ex in enumerate(ds):
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
