"""Fetch the YouTube clips the AudSem hub tables name (argparse, not Hydra: it takes folders and
limits, no training config). Resumable: run it again to continue or to retry transient failures.

    pip install -e ".[download]"          # yt-dlp; ffmpeg must be on the PATH
    python scripts/download_audsem_audio.py --csv-root data/raw/audsem --configs mc_qa \
        --out data/raw/audsem_clips --min-interval 2
    python scripts/build_data.py data=audsem_semantic data.kwargs.audio_dir=data/raw/audsem_clips

Each clip is saved as ``<out>/<file_name>.flac``; every attempt goes to
``<out>/download_log.jsonl`` and the counts (downloaded, already present, failed by reason) to
``<out>/download_report.json``. Exits 1 when any clip failed (the report says which and why).
Details: docs/audsem_data.md.
"""

from __future__ import annotations

import argparse
import json
import sys

from audsemthinker.data.audsem_download import download_clips, table_references, yt_dlp_fetch

CONFIGS = ("aac", "creative_qa", "mc_qa", "qa")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv-root", required=True,
                   help="local copy of the hub dataset: <root>/<config>/<split>.csv")
    p.add_argument("--out", required=True, help="clip folder (the build's audio_dir)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--splits", nargs="+", default=["train", "valid"])
    p.add_argument("--column", default="file_name", help="the tables' clip reference column")
    p.add_argument("--min-interval", type=float, default=2.0,
                   help="least seconds between two requests")
    p.add_argument("--rate-limit", type=int, default=None, help="bytes per second (yt-dlp)")
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--retry-failed", action="store_true",
                   help="also retry clips an earlier run found removed or private")
    p.add_argument("--limit", type=int, default=None, help="stop after this many requests")
    p.add_argument("--format", default="flac", help="audio format ffmpeg converts to")
    p.add_argument("--cookies", default=None, help="cookies.txt for yt-dlp")
    return p.parse_args(argv)


def main(argv=None, fetch=None) -> int:
    """Run the download; ``fetch`` replaces yt-dlp (tests). Returns the exit status."""
    a = parse_args(argv)
    refs = table_references(a.csv_root, a.configs, a.splits, a.column)
    fetch = fetch or yt_dlp_fetch(a.format, a.rate_limit, a.cookies)
    summary = download_clips(refs, a.out, fetch, min_interval_s=a.min_interval,
                             retries=a.retries, retry_failed=a.retry_failed, limit=a.limit)
    print(json.dumps({k: v for k, v in summary.items() if k != "failed_examples"}))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
