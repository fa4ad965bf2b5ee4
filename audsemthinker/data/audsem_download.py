"""Fetch the AudSem clips the hub tables name, from YouTube through yt-dlp.

The hub dataset holds text only. AudSem was cut from YouTube videos with yt-dlp
(``--download-sections`` per subtitle span; see the paper's code release, ``filtering/download``),
and a row's ``file_name`` names its clip as ``<video id> (<start>-<end>)`` with the times'
decimal points written as ``_`` (``dQw4w9WgXcQ (12_5-20_0)``). This module turns those names
back into (video, start, end) requests and saves each clip as ``<out>/<file_name>.<ext>``,
which is where the ``csv`` source looks for it (``data.kwargs.audio_dir=<out>``).

- Resumable: a clip whose file is already there is not requested again; every attempt is
  appended to ``<out>/download_log.jsonl``, and a clip that failed for good (video removed,
  private) is not retried unless asked.
- Rate-limited: at least ``min_interval_s`` between two requests (YouTube blocks bursts), and
  yt-dlp's own byte-rate limit when given.
- Every failure is counted by reason, a name that is not a clip reference too; the counts go
  to ``<out>/download_report.json`` (written atomically).

The downloader is a plain callable ``fetch(clip, dest) -> Path`` so tests (and users with
another tool) can put their own in place of yt-dlp. yt-dlp is an optional dependency:
``pip install -e ".[download]"`` (it also needs ``ffmpeg`` on the PATH to cut and convert).
"""

from __future__ import annotations

import glob
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from audsemthinker.data.audsem_layouts import AUDIO_EXTS, FIELDS, clip_name, csv_tables
from audsemthinker.data.readers import read_csv

CLIP_REF = re.compile(r"^(?P<video_id>[A-Za-z0-9_-]{11})[ _]\(?(?P<start>\d+(?:[._]\d+)?)"
                      r"-(?P<end>\d+(?:[._]\d+)?)\)?$")
"""A clip reference: an 11-character YouTube id, then ``(start-end)`` in seconds."""

PERMANENT = frozenset({"unavailable", "private", "removed", "age_restricted", "not_a_clip"})
"""Failure reasons a retry cannot fix; such clips are skipped on a resumed run."""

LOG_NAME, REPORT_NAME, PARTIAL_DIR = "download_log.jsonl", "download_report.json", ".partial"


@dataclass(frozen=True)
class Clip:
    """One clip to fetch: ``name`` is the table's file reference (the saved file's stem)."""

    name: str
    video_id: str
    start: float
    end: float

    @property
    def url(self) -> str:
        return f"https://www.youtube.com/watch?v={self.video_id}"


class DownloadError(RuntimeError):
    """A clip that could not be fetched; ``reason`` is what the report counts."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def parse_clip(ref: str, pattern: re.Pattern = CLIP_REF) -> Clip | None:
    """The clip ``ref`` names, or None when it is not a clip reference."""
    name = clip_name(str(ref).strip())
    m = pattern.match(name)
    if not m:
        return None
    start, end = (float(m.group(k).replace("_", ".")) for k in ("start", "end"))
    return Clip(name, m.group("video_id"), start, end) if end > start else None


def table_references(root: str | Path, configs: Iterable[str], splits: Iterable[str],
                     column: str = FIELDS[0]) -> list[str]:
    """Distinct file references of the hub tables ``<root>/<config>/<split>.csv``, in order.

    Raises:
        IncompleteBuild: a config folder with none of the tables.
        ValueError: a table without ``column`` (the available columns listed).
    """
    refs: dict[str, None] = {}
    for config in configs:
        for path in csv_tables(root, config, tuple(splits)).values():
            columns, rows = read_csv(path)
            if column not in columns:
                rows.close()
                raise ValueError(f"{path}: no column {column!r}; available: {columns}")
            for _, row in rows:
                if isinstance(row, dict) and str(row.get(column) or "").strip():
                    refs.setdefault(str(row[column]).strip(), None)
    return list(refs)


def existing_clip(out_dir: Path, name: str) -> Path | None:
    """The saved file of clip ``name`` in ``out_dir`` (any audio extension), or None."""
    for ext in AUDIO_EXTS:
        path = out_dir / f"{name}.{ext}"
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _read_log(path: Path) -> dict[str, dict]:
    """The last logged attempt per clip (a torn last line from a killed run is ignored)."""
    last: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "name" in rec:
                last[str(rec["name"])] = rec
    return last


# Over 60 lines: one resumable, rate-limited download loop; its options are documented here.
def download_clips(refs: Iterable[str], out_dir: str | Path,
                   fetch: Callable[[Clip, Path], Path], *, min_interval_s: float = 2.0,
                   retries: int = 1, retry_failed: bool = False, limit: int | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> dict:
    """Fetch every clip of ``refs`` not yet in ``out_dir``.

    Args:
        refs: the tables' file references (:func:`table_references`).
        out_dir: the clip folder (the build's ``audio_dir``).
        fetch: ``fetch(clip, dest)`` saves the clip as ``dest.<ext>`` and returns that path;
            raises :class:`DownloadError` (or any exception, counted by its type).
        min_interval_s: least time between the starts of two requests.
        retries: further attempts after a failure that may be transient.
        retry_failed: also retry clips an earlier run logged as failed for good.
        limit: stop after this many requests.
        sleep, clock: injected for tests.

    Returns:
        The summary written to ``download_report.json``: ``requested, downloaded, present,
        skipped_failed_before, failed`` (``{reason: count}``) and ``failed_examples``.
    """
    out = Path(out_dir)
    (out / PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
    before = _read_log(out / LOG_NAME)
    summary = {"requested": 0, "downloaded": 0, "present": 0, "skipped_failed_before": 0}
    failed: Counter = Counter()
    examples: dict[str, list[str]] = {}
    last_start = [None]

    def wait() -> None:
        if last_start[0] is not None:
            gap = min_interval_s - (clock() - last_start[0])
            if gap > 0:
                sleep(gap)
        last_start[0] = clock()

    def fail(name: str, reason: str, detail: str = "") -> None:
        failed[reason] += 1
        examples.setdefault(reason, [])
        if len(examples[reason]) < 5:
            examples[reason].append(f"{name}: {detail}"[:300])

    seen: set[str] = set()
    with open(out / LOG_NAME, "a", encoding="utf-8") as log:
        for ref in refs:
            clip = parse_clip(ref)
            if clip is None:
                fail(str(ref), "not_a_clip", "not '<video id> (<start>-<end>)'")
                continue
            if clip.name in seen:  # several QA rows name one clip
                continue
            seen.add(clip.name)
            if existing_clip(out, clip.name):
                summary["present"] += 1
                continue
            prior = before.get(clip.name, {})
            if prior.get("status") == "failed" and prior.get("reason") in PERMANENT \
                    and not retry_failed:
                summary["skipped_failed_before"] += 1
                continue
            if limit is not None and summary["requested"] >= limit:
                break
            summary["requested"] += 1
            record = _fetch_one(clip, out, fetch, retries, wait)
            log.write(json.dumps(record) + "\n")
            log.flush()
            if record["status"] == "ok":
                summary["downloaded"] += 1
            else:
                fail(clip.name, record["reason"], record.get("detail", ""))
    summary["failed"] = dict(failed)
    summary["failed_examples"] = examples
    tmp = out / f"{REPORT_NAME}.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / REPORT_NAME)
    return summary


def _fetch_one(clip: Clip, out: Path, fetch: Callable[[Clip, Path], Path], retries: int,
               wait: Callable[[], None]) -> dict:
    """One clip, with retries for transient failures; the file is moved into place only
    once complete (a killed run leaves nothing under the clip's name)."""
    partial = out / PARTIAL_DIR / clip.name
    reason, detail = "", ""
    for _ in range(1 + max(0, int(retries))):
        wait()
        for stale in glob.glob(glob.escape(str(partial)) + ".*"):
            Path(stale).unlink(missing_ok=True)
        try:
            got = Path(fetch(clip, partial))
            if not got.is_file() or got.stat().st_size == 0:
                raise DownloadError("empty_output", f"{got.name} is missing or empty")
            final = out / f"{clip.name}{got.suffix}"
            os.replace(got, final)
            return {"name": clip.name, "status": "ok", "file": final.name}
        except DownloadError as e:
            reason, detail = e.reason, e.detail
        except Exception as e:  # any tool error is one counted failure, never a crash
            reason, detail = type(e).__name__, str(e)
        if reason in PERMANENT:
            break
    return {"name": clip.name, "status": "failed", "reason": reason, "detail": detail[:300]}


_REASONS = (("private", "private"), ("age", "age_restricted"), ("sign in", "age_restricted"),
            ("removed", "removed"), ("terminated", "removed"), ("unavailable", "unavailable"),
            ("does not exist", "unavailable"), ("429", "rate_limited"),
            ("too many requests", "rate_limited"))


def yt_dlp_fetch(audio_format: str = "flac", rate_limit: int | None = None,
                 cookies: str | None = None) -> Callable[[Clip, Path], Path]:
    """A ``fetch`` that cuts the clip's span from its video with yt-dlp and converts it.

    Args:
        audio_format: what ffmpeg converts the audio to (``flac`` keeps it lossless).
        rate_limit: yt-dlp's download rate limit in bytes per second.
        cookies: a cookies.txt file for videos that need a signed-in session.

    Raises:
        RuntimeError: yt-dlp is not installed (the message says how to install it).
    """
    try:
        import yt_dlp
    except ImportError as e:
        raise RuntimeError("downloading AudSem clips needs yt-dlp: pip install -e "
                           "\".[download]\" (and ffmpeg on the PATH)") from e

    def fetch(clip: Clip, dest: Path) -> Path:
        opts = {"format": "bestaudio/best", "outtmpl": f"{dest}.%(ext)s", "quiet": True,
                "no_warnings": True, "noprogress": True, "force_keyframes_at_cuts": True,
                "download_ranges": lambda info, ydl: [{"start_time": clip.start,
                                                       "end_time": clip.end}],
                "postprocessors": [{"key": "FFmpegExtractAudio",
                                    "preferredcodec": audio_format}]}
        if rate_limit:
            opts["ratelimit"] = int(rate_limit)
        if cookies:
            opts["cookiefile"] = str(cookies)
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                ydl.download([clip.url])
        except yt_dlp.utils.DownloadError as e:
            text = str(e).lower()
            reason = next((r for k, r in _REASONS if k in text), "download_error")
            raise DownloadError(reason, str(e)[:300]) from None
        found = sorted(glob.glob(glob.escape(str(dest)) + f".{audio_format}")) or \
            sorted(glob.glob(glob.escape(str(dest)) + ".*"))
        if not found:
            raise DownloadError("empty_output", "yt-dlp wrote no file")
        return Path(found[0])

    return fetch
