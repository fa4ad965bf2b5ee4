"""Result files and human-readable reports: atomic writes, Markdown tables, a per-task bar chart.

Atomic writes live in :mod:`audsemthinker.files`. The tables take the dicts returned by
:mod:`audsemthinker.eval.scoring`.
"""

from __future__ import annotations

import os
from pathlib import Path

from audsemthinker.eval.scoring import MMAU_GROUPS
from audsemthinker.files import (  # noqa: F401 (re-exported: older imports read them here)
    sha256_file,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------
def fmt(value: float | None, signed: bool = False) -> str:
    """A percentage with two decimals (``+`` sign if asked), or ``-`` when missing."""
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; cells are rendered with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_MMAU_COLS = ["accuracy (%)", "correct", "scored", "skipped"]


def _mmau_row(name: str, c: dict) -> list:
    return [name, fmt(c["accuracy"]), c["correct"], c["scored"], c["skipped"]]


def mmau_markdown(result: dict, title: str = "MMAU") -> str:
    """Markdown tables of a :func:`score_mmau` result: total, then one table per group.

    Args:
        result: the dict returned by ``score_mmau``.
        title: the section heading (e.g. "MMAU test-mini (v05.15.25)").

    Returns:
        Markdown text; skipped items appear in every table so a reader sees the denominator.
    """
    total = result["total"]
    parts = [f"## {title}", "",
             f"Scoring: {result['method']}; {result['n_items']} items, {total['skipped']} "
             "skipped (never generated; not in the denominator), "
             f"{total.get('empty', 0)} empty answers (scored wrong).", "",
             "### Total", "", markdown_table(["", *_MMAU_COLS], [_mmau_row("total", total)])]
    for group in MMAU_GROUPS:
        rows = [_mmau_row(k, c) for k, c in result["groups"].get(group, {}).items()]
        parts += ["", f"### Per {group}", "", markdown_table([group, *_MMAU_COLS], rows)]
    return "\n".join(parts) + "\n"


_MUCHO_COLS = ["accuracy (%)", "instruction following (%)", "correct", "unanswered", "n"]


def _mucho_row(name: str, c: dict) -> list:
    return [name, fmt(c["accuracy"]), fmt(c["instruction_following"]), c["correct"],
            c["unanswered"], c["n"]]


def muchomusic_markdown(result: dict, title: str = "MuchoMusic") -> str:
    """Markdown tables of a :func:`score_muchomusic` (or judged) result.

    Returns:
        Markdown text naming the scoring method (official rule or LLM judge), with the total,
        the knowledge / reasoning subsets and the per-dataset split.
    """
    method = {"official_rule": "official rule (letter characters, then option text)",
              "word_boundary_rule": "word-boundary letters, then option text (variant)",
              "llm_judge": "LLM judge (0/1)"}.get(result["method"], result["method"])
    parts = [f"## {title}", "",
             f"Scoring: {method}; {result['n_items']} items; unanswered count as wrong.", "",
             "### Total", "", markdown_table(["", *_MUCHO_COLS], [_mucho_row("total",
                                                                           result["total"])])]
    for group, label in (("subset", "Per subset"), ("dataset", "Per dataset")):
        rows = [_mucho_row(k, c) for k, c in result["groups"].get(group, {}).items()]
        parts += ["", f"### {label}", "", markdown_table([group, *_MUCHO_COLS], rows)]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------
def plot_task_bars(result: dict, path: str | os.PathLike, group: str = "task",
                   title: str | None = None) -> Path:
    """Save a PNG bar chart of accuracy per value of ``group`` (default: per MMAU task).

    matplotlib is imported here, with the non-interactive Agg backend, so scoring and tables
    work without it and no display is ever needed.

    Args:
        result: a ``score_mmau`` / ``score_muchomusic`` result.
        path: the PNG to write (atomically).
        group: which ``result["groups"]`` entry to plot.
        title: the chart title; defaults to the benchmark and group.

    Returns:
        The path written.

    Raises:
        ValueError: the result has no such group or it is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = result.get("groups", {}).get(group)
    if not counts:
        raise ValueError(f"result has no non-empty group {group!r}; has "
                         f"{sorted(result.get('groups', {}))}")
    names = list(counts)
    values = [counts[n]["accuracy"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names)), 3.5))
    try:
        bars = ax.bar(names, values, color="#4C72B0")
        for bar, name in zip(bars, names):
            ax.annotate(fmt(counts[name]["accuracy"]), (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title or f"{result.get('benchmark', '')} accuracy per {group}")
        fig.tight_layout()
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)
