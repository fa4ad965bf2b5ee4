"""MuchoMusic tracks where the benchmark's own tooling puts them.

The official evaluation code (github.com/mulab-mir/muchomusic, ``muchomusic_eval/utils.py``)
resolves a question's audio from two metadata files:

- Song Describer (``dataset == "sdd"``): ``dataset_identifier`` is ``"<track_id>.json"``; the
  row of ``song_describer.csv`` with that ``track_id`` gives ``path`` (e.g. ``00/415600.mp3``),
  and the file used is its 2-minute cut, ``<sdd>/audio/00/415600.2min.mp3``;
- MusicCaps (``dataset == "musiccaps"``): ``dataset_identifier`` is ``"<ytid>_<n>.json"``
  (the YouTube id may itself hold underscores; the last ``_`` part is dropped); the first row
  of ``musiccaps-public.csv`` with that ``ytid`` gives ``start_s`` and ``end_s``, and the file
  is ``<musiccaps>/audio/[<ytid>]-[<start_s>-<end_s>].wav``.

``<sdd>`` and ``<musiccaps>`` are the folders holding the two CSVs. Names taken from the CSVs
are data, so every path is confined to its ``audio`` folder (:mod:`audsemthinker.data.paths`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audsemthinker.data.examples import RowError
from audsemthinker.data.paths import confined
from audsemthinker.data.readers import read_csv

SDD_COLUMNS = ("track_id", "path")
MUSICCAPS_COLUMNS = ("ytid", "start_s", "end_s")


def _int(value) -> int:
    """``"415600"``, ``"415600.0"`` -> 415600 (pandas reads these columns as numbers)."""
    return int(float(str(value).strip()))


def _table(path: str | Path, needed: tuple[str, ...]) -> list[dict]:
    columns, reader = read_csv(path)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (columns: {columns})")
    return [rec for _, rec in reader if not isinstance(rec, RowError)]


@dataclass
class TrackIndex:
    """Song Describer ``track_id -> path`` and MusicCaps ``ytid -> (start_s, end_s)``; the first
    row of each id wins, as the official lookups take it."""

    sdd_dir: Path | None = None
    musiccaps_dir: Path | None = None
    sdd: dict[int, str] = field(default_factory=dict)
    musiccaps: dict[str, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, song_describer_csv: str | None, musiccaps_csv: str | None) -> TrackIndex:
        """Read the two metadata files (either may be None: that dataset is not resolved here).

        Raises:
            ValueError: a file without the columns the lookup needs.
        """
        index = cls()
        if song_describer_csv:
            index.sdd_dir = Path(song_describer_csv).parent
            for rec in _table(song_describer_csv, SDD_COLUMNS):
                try:
                    index.sdd.setdefault(_int(rec["track_id"]), str(rec["path"]))
                except ValueError:
                    continue
        if musiccaps_csv:
            index.musiccaps_dir = Path(musiccaps_csv).parent
            for rec in _table(musiccaps_csv, MUSICCAPS_COLUMNS):
                try:
                    span = (_int(rec["start_s"]), _int(rec["end_s"]))
                except ValueError:
                    continue
                index.musiccaps.setdefault(str(rec["ytid"]), span)
        return index

    def track(self, row: dict, allow_outside: bool = False) -> Path | None:
        """The audio file of a MuchoMusic CSV row, or None when its dataset is not indexed.

        Raises:
            RowError: ``bad_identifier`` (not of the dataset's form), ``unknown_track`` (not
                in the metadata file), ``bad_path`` / ``path_outside_root``.
        """
        dataset = str(row.get("dataset") or "").strip()
        ident = str(row.get("dataset_identifier") or "").strip().removesuffix(".json")
        if dataset == "sdd" and self.sdd_dir is not None:
            try:
                track_id = _int(ident)
            except ValueError:
                raise RowError("bad_identifier", f"sdd {ident[:100]!r} is not a track id") from None
            if track_id not in self.sdd:
                raise RowError("unknown_track", f"track_id {track_id} not in song_describer.csv")
            rel = self.sdd[track_id].replace(".mp3", ".2min.mp3")
            return confined(self.sdd_dir / "audio", rel, allow_outside)
        if dataset == "musiccaps" and self.musiccaps_dir is not None:
            ytid = "_".join(ident.split("_")[:-1])
            if not ytid:
                raise RowError("bad_identifier", f"musiccaps {ident[:100]!r} is not <ytid>_<n>")
            if ytid not in self.musiccaps:
                raise RowError("unknown_track", f"ytid {ytid!r} not in musiccaps-public.csv")
            start, end = self.musiccaps[ytid]
            return confined(self.musiccaps_dir / "audio", f"[{ytid}]-[{start}-{end}].wav",
                            allow_outside)
        return None
