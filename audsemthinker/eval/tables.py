"""Reports of one evaluation (Markdown, JSON, bar chart) and the paper's tables from result files.

Formatting lives in :mod:`audsemthinker.eval.report` and the paper's numbers in
:mod:`audsemthinker.eval.paper`; this module decides which table and chart each result gets and
where the files go.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from audsemthinker.eval.paper import PAPER_TABLES, comparison_rows, comparison_table
from audsemthinker.eval.report import (
    fmt,
    markdown_table,
    mmau_markdown,
    muchomusic_markdown,
    plot_task_bars,
)
from audsemthinker.files import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
_PLOT_GROUP = {"mmau": ("task",), "muchomusic": ("subset", "dataset"), "accuracy": ("task",)}


def accuracy_markdown(score: dict, title: str) -> str:
    """Markdown tables of an option-accuracy score (``harness.score_accuracy``)."""
    def row(name, c):
        return [name, fmt(c["accuracy"]), c["correct"], c["n"]]
    header = ["accuracy (%)", "correct", "n"]
    parts = [f"## {title}", "", f"Scoring: {score['method']} (option letter/text vs gold); "
             f"{score['n_items']} items.", "", "### Total", "",
             markdown_table(["", *header], [row("total", score["total"])]), "", "### Per task",
             "", markdown_table(["task", *header],
                                [row(k, c) for k, c in score["groups"]["task"].items()])]
    return "\n".join(parts) + "\n"


def _markdown(name: str, result: dict) -> str:
    title = f"{name} ({result.get('version')})"
    score = result["score"]
    if score is None:
        body = (f"## {title}\n\nAnswers withheld: scored by the benchmark server. "
                f"{result['n_predicted']} of {result['n_items']} items predicted; submission: "
                f"`{result.get('submission')}`.\n")
    elif result["scorer"] == "mmau":
        body = mmau_markdown(score, title)
    elif result["scorer"] == "muchomusic":
        body = muchomusic_markdown(score, title)
    else:
        body = accuracy_markdown(score, title)
    model = result["model"]
    lines = [body, f"Model: `{model['name_or_path']}`" + (f" + adapter `{model['adapter']}`"
                                                          if model.get("adapter") else ""),
             f"Prompt template: {result['prompt_template']}; metadata sha256 "
             f"`{result['metadata']['sha256']}`."]
    variants = result.get("score_variants") or {}
    if variants:
        lines += ["", "Beside the official score:", ""]
        for key, v in variants.items():
            judge = v.get("judge")
            extra = (f"; judge `{judge['model']}` at `{judge['endpoint']}`, {judge['protocol']}, "
                     f"{judge['malformed']} malformed, {judge['failed']} failed, "
                     f"{judge['not_generated']} not generated" if judge else "")
            lines.append(f"- {key}: {fmt(v['total']['accuracy'])}% ({v['method']}{extra})")
    ex = result["excluded"]
    if ex["count"]:
        lines += ["", f"Excluded (missing or broken audio): {ex['count']}", "",
                  markdown_table(["id", "reason"], [[e["id"], e["reason"]] for e in ex["items"]])]
    return "\n".join(lines) + "\n"


def write_reports(name: str, result: dict, reports_dir: str | Path, plot: bool = True) -> dict:
    """Write ``<name>.md``, ``<name>.json`` (the tables) and ``<name>_bars.png``.

    Returns:
        ``{"markdown": path, "json": path, "plot": path or None}`` as strings.
    """
    reports_dir = Path(reports_dir)
    md = write_text_atomic(reports_dir / f"{name}.md", _markdown(name, result))
    tables = {k: result.get(k) for k in ("benchmark", "version", "split", "model", "score",
                                         "score_variants", "excluded", "n_items",
                                         "n_predicted")}
    js = write_json_atomic(reports_dir / f"{name}.json", tables)
    png = None
    score = result["score"]
    if plot and score is not None:
        for group in _PLOT_GROUP[result["scorer"]]:
            if score["groups"].get(group):
                png = plot_task_bars(score, reports_dir / f"{name}_bars.png", group=group,
                                     title=f"{name}: accuracy per {group}")
                break
    return {"markdown": str(md), "json": str(js), "plot": str(png) if png else None}


def write_summary(results: Mapping[str, dict], reports_dir: str | Path) -> Path:
    """One Markdown table over all benchmarks of a run (``summary.md``)."""
    rows = [[name, r["version"], r["scorer"], fmt(r["accuracy"]), r["n_predicted"],
             r["excluded"]["count"]] for name, r in results.items()]
    text = "## Evaluation summary\n\n" + markdown_table(
        ["benchmark", "version", "scorer", "accuracy (%)", "predicted", "excluded"], rows) + "\n"
    return write_text_atomic(Path(reports_dir) / "summary.md", text)


# --------------------------------------------------------------------------------------------
# Paper tables
# --------------------------------------------------------------------------------------------
def read_results(run: str | Path) -> dict[str, dict]:
    """``{benchmark: result}`` from a run folder (or its ``results/`` folder)."""
    run = Path(run)
    folder = run / "results" if (run / "results").is_dir() else run
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no result files in {folder}")
    return {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in files}


def collect_ours(runs: Mapping[str, str | Path],
                 scores: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    """Our numbers per paper column, from result files.

    MuchoMusic takes the run's LLM-judge score when it has one (``score_variants.llm_judge``):
    the paper's MuchoMusic numbers are judge scores. Otherwise the official rule's accuracy.

    Args:
        runs: ``{row name: run folder}``; a row named as in a paper table lines up with it.
        scores: extra ``{row: {column: accuracy}}`` (e.g. MMAU test as returned by the server).

    Returns:
        ``{"benchmarks": {row: {benchmark: acc}}, "per_task": {row: {task: acc}}}``.
    """
    bench, per_task = {}, {}
    for row, run in runs.items():
        for name, r in read_results(run).items():
            # The paper's MuchoMusic numbers are LLM-judge scores: set a judged run beside them.
            judged = (r.get("score_variants") or {}).get("llm_judge")
            if judged and judged["total"]["accuracy"] is not None:
                bench.setdefault(row, {})[name] = judged["total"]["accuracy"]
            elif r.get("accuracy") is not None:
                bench.setdefault(row, {})[name] = r["accuracy"]
            if name == "mmau_test_mini" and r.get("score"):
                tasks = r["score"]["groups"].get("task", {})
                per_task[row] = {t: c["accuracy"] for t, c in tasks.items()
                                 if c["accuracy"] is not None}
    for row, cells in (scores or {}).items():
        bench.setdefault(row, {}).update(cells)
    return {"benchmarks": bench, "per_task": per_task}


def paper_comparison(ours: dict) -> dict[str, list[dict]]:
    """Which of our rows go in which paper table, as :func:`paper.comparison_rows` cells.

    A row named in a table (ablations, peers) goes there; other rows go in the main table; every
    row with MMAU test-mini per-task numbers goes in the per-task table.
    """
    named = {t: set(PAPER_TABLES[t].rows) for t in ("ablations", "peers")}
    out = {}
    for table in ("main", "ablations", "peers"):
        cols = PAPER_TABLES[table].columns
        pick = {row: {c: v for c, v in cells.items() if c in cols}
                for row, cells in ours["benchmarks"].items()
                if (row in named[table] if table != "main"
                    else not any(row in n for n in named.values()))}
        out[table] = {row: cells for row, cells in pick.items() if cells}
    out["per_task"] = dict(ours["per_task"])
    return out


def write_paper_tables(runs: Mapping[str, str | Path], out_dir: str | Path,
                       scores: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    """Write ``paper_tables.md`` and ``paper_tables.json``: the paper's numbers, ours, the diff.

    Returns:
        ``{"markdown": path, "json": path, "tables": {table: cells}}``.
    """
    placed = paper_comparison(collect_ours(runs, scores))
    md = "\n".join(comparison_table(ours, table) for table, ours in placed.items())
    cells = {table: comparison_rows(ours, table) for table, ours in placed.items()}
    out_dir = Path(out_dir)
    mdp = write_text_atomic(out_dir / "paper_tables.md", "# Paper tables: paper vs ours\n\n" + md)
    jsp = write_json_atomic(out_dir / "paper_tables.json", cells)
    return {"markdown": str(mdp), "json": str(jsp), "tables": cells}
