"""The layouts AudSem has been published in, mapped onto one sample schema.

- ``csv`` (the hub dataset ``gijs/audsem`` today): one folder per config (``aac``,
  ``creative_qa``, ``mc_qa``, ``qa``) holding ``train.csv`` and ``valid.csv``. The tables are
  text only; each row names its clip in ``file_name`` and the clip is looked up in a folder the
  user gives (``audio_dir``), see ``docs/audsem_data.md`` for how to get the clips.
- shards (the paper's code release and the older hub layout): WebDataset tars per split, and
  in the older layout the validation split as JSON (``valid/*.json``) instead of tars.

Column names differ between configs: the release stored the ``aac`` target as ``caption``
where the QA configs have ``answer``. :func:`column_map` gives each config's default map
(from the release's field names), which a user overrides per field
(``data.kwargs.columns={answer: my_col}``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from audsemthinker.data.examples import RowError
from audsemthinker.data.paths import confined
from audsemthinker.data.readers import iter_json_lines, read_csv
from audsemthinker.data.registry import IncompleteBuild, Skip

FIELDS = ("file_name", "question", "thinking", "semantic_elements", "answer", "choices")
"""The sample fields the builder reads, named as the release's shards name them."""

AUDIO_EXTS = ("flac", "wav", "mp3", "ogg", "opus", "m4a")
MEDIA_EXTS = (*AUDIO_EXTS, "mp4", "webm", "mkv")

AUDIO_HINT = ("the AudSem tables are text only: each row's file_name names a YouTube clip; fetch "
              "the clips with `python scripts/download_audsem_audio.py --csv-root <tables> "
              "--out <clips>` (docs/audsem_data.md) and set data.kwargs.audio_dir=<clips>")


class SplitStart:
    """Marker a source yields before the items of one split (the build checks none is lost)."""

    def __init__(self, split: str):
        self.split = str(split)


def column_map(config: str, columns: dict | None = None) -> dict[str, str]:
    """``{field: source column}`` for ``config``: the release's names, ``columns`` on top.

    Raises:
        ValueError: ``columns`` names a field the builder does not read.
    """
    cmap = {f: f for f in FIELDS}
    if config == "aac":
        cmap["answer"] = "caption"
    unknown = sorted(set(columns or {}) - set(cmap))
    if unknown:
        raise ValueError(f"audsem: columns: unknown field(s) {unknown}; fields are {list(cmap)}")
    cmap.update({k: str(v) for k, v in (columns or {}).items()})
    return cmap


def remap(meta: dict, cmap: dict[str, str]) -> dict:
    """``meta`` with each field read from its mapped column (a column already under the
    field's own name is used when the mapped one is absent: ``aac`` rows with ``answer``)."""
    out = dict(meta)
    for field, col in cmap.items():
        if col != field and col in meta:
            out[field] = meta[col]
    return out


def required_fields(config: str, variant: str) -> list[str]:
    need = ["file_name", "thinking", "answer"]
    if config != "aac":
        need.insert(1, "question")
    if variant == "semantic":
        need.append("semantic_elements")
    return need


def check_columns(available: Iterable[str], cmap: dict[str, str], config: str, variant: str,
                  where: str) -> None:
    """Refuse a table that lacks a column the rows need, before reading any row.

    Raises:
        IncompleteBuild: naming the missing columns and listing the available ones.
    """
    have = set(available)
    missing = [f for f in required_fields(config, variant) if cmap[f] not in have
               and f not in have]
    if missing:
        wanted = ", ".join(f"{f!r}" if cmap[f] == f else f"{f!r} (column {cmap[f]!r})"
                           for f in missing)
        raise IncompleteBuild(
            f"audsem: {where} has no {wanted} for config {config} ({variant}); available "
            f"columns: {sorted(have)}; map yours with data.kwargs.columns.<field>=<column>")


def clip_name(ref: str) -> str:
    """The clip a file reference names: its last part, without a media extension."""
    name = PurePosixPath(str(ref).replace("\\", "/")).name
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and ext.lower() in MEDIA_EXTS else name


def file_ref(meta: dict) -> str:
    """The clip a row names: ``audio`` / ``audio_path`` (a path) or ``file_name`` (a clip)."""
    for col in ("audio", "audio_path", "file_name"):
        value = meta.get(col)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def join_audio(audio_dir: str | Path, ref: str, allow_outside: bool = False) -> Path | None:
    """The file in ``audio_dir`` that ``ref`` names, or None when there is none.

    Tried in order: ``ref`` itself, ``ref.<ext>`` for each audio extension, ``ref`` with its
    media extension swapped (a ``.mp4`` reference to a downloaded ``.flac``), and the bare
    clip name at the top of ``audio_dir`` (a ``tar/<clip>.mp4`` reference).

    Raises:
        RowError: ``bad_path`` / ``path_outside_root``: the reference leaves ``audio_dir``.
    """
    base = confined(audio_dir, ref, allow_outside)
    clip = confined(audio_dir, clip_name(ref), allow_outside)
    cands = [base, *(base.with_name(f"{base.name}.{e}") for e in AUDIO_EXTS)]
    if base.name != clip.name or base != clip:
        cands += [clip.with_name(f"{clip.name}.{e}") for e in AUDIO_EXTS]
        if base.parent != clip.parent:
            cands.append(clip)
    try:
        return next((c for c in cands if c.is_file()), None)
    except OSError as e:  # a name past the file system's limit: stat raises, not False
        raise RowError("bad_path", f"{ref[:100]!r}: {e.strerror}") from None


def row_key(meta: dict, clip: str, per_clip: Counter) -> str:
    """A row's id: its own key column if it has one, else ``<clip>_qa_<i>`` as the release's
    shards key their samples (so a row has the same id in every layout)."""
    own = meta.get("__key__") or meta.get("id") or meta.get("key")
    if own:
        return str(own)
    i = per_clip[clip]
    per_clip[clip] += 1
    return f"{clip}_qa_{i}"


# --------------------------------------------------------------------------------------------
# The CSV layout
# --------------------------------------------------------------------------------------------
def csv_tables(root: str | Path, config: str, splits: tuple[str, ...]) -> dict[str, Path]:
    """``{split: <root>/<config>/<split>.csv}`` (or ``<root>/<split>.csv``) that exist.

    Raises:
        IncompleteBuild: none of the asked splits is there (the message says the layout).
    """
    root = Path(str(root))
    folder = root / config if (root / config).is_dir() else root
    tables = {s: folder / f"{s}.csv" for s in splits}
    found = {s: p for s, p in tables.items() if p.is_file()}
    if not found:
        raise IncompleteBuild(
            f"audsem: no {'/'.join(f'{s}.csv' for s in splits)} in {folder}; the csv source "
            f"reads the hub layout <root>/<config>/<split>.csv (download gijs/audsem's "
            f"{config}/ folder there), or use data.kwargs.shards=<folder> for WebDataset tars")
    return found


def from_csv(root: str | Path, config: str, variant: str, splits: tuple[str, ...],
             audio_dir: str | Path | None, cmap: dict[str, str],
             allow_outside: bool = False) -> Iterator:
    """Rows of ``<root>/<config>/<split>.csv`` joined to their clips in ``audio_dir``.

    Every table's header is checked before any row is read. A row whose clip is not in
    ``audio_dir`` is a counted ``missing_audio`` skip naming the reference.

    Raises:
        IncompleteBuild: no table, no ``audio_dir`` (the tables are text only), a missing
            column (the available ones listed).
    """
    tables = csv_tables(root, config, splits)
    if audio_dir is None:
        raise IncompleteBuild(f"audsem: {next(iter(tables.values()))} has no audio and "
                              f"data.kwargs.audio_dir is not set; {AUDIO_HINT}")
    if not Path(str(audio_dir)).is_dir():
        raise IncompleteBuild(f"audsem: audio_dir {audio_dir} is not a folder; {AUDIO_HINT}")
    opened = {}
    for split, path in tables.items():
        try:
            columns, rows = read_csv(path)
        except ValueError as e:
            raise IncompleteBuild(f"audsem: {e}") from None
        check_columns(columns, cmap, config, variant, str(path))
        opened[split] = rows
    for split, rows in opened.items():
        yield SplitStart(split)
        yield from join_rows(rows, f"{config}/{split}.csv", split, audio_dir, cmap, allow_outside)


def join_rows(rows: Iterable[tuple[int, Any]], where: str, split: str, audio_dir: str | Path,
            cmap: dict[str, str], allow_outside: bool) -> Iterator:
    """``(split, key, meta, clip path)`` per table row, or a Skip naming the row."""
    per_clip: Counter = Counter()
    for n, meta in rows:
        if isinstance(meta, RowError):
            yield Skip(f"{where}:{n}", meta.reason, meta.detail)
            continue
        if not isinstance(meta, dict):
            yield Skip(f"{where}:{n}", "malformed_row", f"a {type(meta).__name__}, not a row")
            continue
        meta = remap(meta, cmap)
        ref = file_ref(meta)
        if not ref:
            yield Skip(f"{where}:{n}", "missing_field", f"file_name (column {cmap['file_name']!r})")
            continue
        key = row_key(meta, clip_name(ref), per_clip)
        try:
            path = join_audio(audio_dir, ref, allow_outside)
        except RowError as e:
            yield Skip(key, e.reason, e.detail)
            continue
        if path is None:
            yield Skip(key, "missing_audio", f"{ref[:120]!r} not in {audio_dir}; {AUDIO_HINT}")
            continue
        yield split, key, meta, path


# --------------------------------------------------------------------------------------------
# JSON tables (the older layout's validation split)
# --------------------------------------------------------------------------------------------
def iter_json_table(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(item number, value or RowError)`` of a JSON array file or a JSON-lines file."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"["):
        yield from iter_json_lines(path)
        return
    try:
        items = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        yield 1, RowError("malformed_json", f"{path.name}: {type(e).__name__}: {e}"[:300])
        return
    yield from enumerate(items, 1)


def from_json_split(files: list[str], split: str, audio_dir: str | Path | None,
                    cmap: dict[str, str], allow_outside: bool = False) -> Iterator:
    """Rows of JSON tables joined to clips in ``audio_dir``, or (without one) in the JSON
    file's own folder (the older layout kept a split's clips beside its JSON)."""
    for name in files:
        path = Path(name)
        root = audio_dir if audio_dir is not None else path.parent
        yield from join_rows(iter_json_table(path), f"{split}/{path.name}", split, root, cmap,
                           allow_outside)
