"""Overlap report between a training row file and benchmark row files (argparse, not Hydra:
it takes file paths and thresholds, no model or training config).

    python scripts/contamination.py --train data/audsem_semantic/mc_qa/train.jsonl \
        --bench mmau_test_mini=data/benchmarks/mmau/test-mini.jsonl \
        --bench muchomusic=data/benchmarks/muchomusic/muchomusic.jsonl \
        --out outputs/contamination

Writes contamination.json, contamination.md and contamination_pairs.jsonl under --out (exact
file/PCM hashes, shared source ids, fingerprint near-duplicates, near-duplicate questions).
CLAP embeddings need code (``contamination_report(..., embed_fn=...)``), not this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from audsemthinker.data.contamination import contamination_report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="training rows (JSONL)")
    p.add_argument("--bench", action="append", required=True,
                   help="benchmark rows as NAME=PATH or PATH (named by its stem); repeatable")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--audio-threshold", type=float, default=0.75)
    p.add_argument("--text-threshold", type=float, default=0.8)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--max-examples", type=int, default=20)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    benches = {}
    for spec in a.bench:
        name, sep, path = spec.partition("=")
        benches[name if sep else Path(spec).stem] = path if sep else spec
    result = contamination_report(a.train, benches, a.out, audio_threshold=a.audio_threshold,
                                  text_threshold=a.text_threshold, max_seconds=a.max_seconds,
                                  candidates=a.candidates, max_examples=a.max_examples,
                                  progress=True)
    for name, s in result["benchmarks"].items():
        print(f"{name}: {s['contaminated_items']}/{s['rows']} items matched by audio "
              f"({100 * s['contaminated_rate']:.2f}%), near-duplicate questions on "
              f"{s['bench_items']['near_question']} items")
    print(f"report: {Path(a.out) / 'contamination.md'}")
    return result


if __name__ == "__main__":
    main()
