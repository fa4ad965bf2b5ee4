"""Build the paper's tables (main results, ablations, peers, per task) from our result files.

    python scripts/reproduce.py --run "AudSemThinker (SFT)=outputs/eval/sft" \
        --run "AudSemThinker-QA GRPO=outputs/eval/grpo" \
        --run "SFT with semantic elements=outputs/eval/sft_semantic" \
        --score "AudSemThinker (SFT):mmau_test=64.2" --out outputs/paper

Each --run names a row (use the paper's row names to line up with its numbers; other names are
added as new rows of the main table) and a run folder written by scripts/eval.py. --score adds a
number we have no result file for (MMAU test is scored by the benchmark's server). Writes
paper_tables.md and paper_tables.json: for every cell the paper's number, ours and the difference.
"""

from __future__ import annotations

import argparse

from audsemthinker.eval.tables import write_paper_tables


def _pair(text: str, sep: str, last: bool = True) -> tuple[str, str]:
    if sep not in text:
        raise argparse.ArgumentTypeError(f"expected NAME{sep}VALUE, got {text!r}")
    name, value = text.rsplit(sep, 1) if last else text.split(sep, 1)
    return name.strip(), value.strip()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", default=[], type=lambda s: _pair(s, "=", last=False),
                   help='"ROW NAME=RUN FOLDER" (repeatable)')
    p.add_argument("--score", action="append", default=[], type=lambda s: _pair(s, "="),
                   help='"ROW NAME:COLUMN=ACCURACY" for numbers without a result file')
    p.add_argument("--out", required=True, help="folder for paper_tables.md / .json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.run and not args.score:
        raise SystemExit("give at least one --run or --score")
    scores: dict[str, dict[str, float]] = {}
    for key, value in args.score:
        row, column = _pair(key, ":")
        scores.setdefault(row, {})[column] = float(value)
    out = write_paper_tables(dict(args.run), args.out, scores)
    print(open(out["markdown"], encoding="utf-8").read())
    return out


if __name__ == "__main__":
    main()
