"""The paper's reported numbers (docs/recipe.md) and tables that set ours beside them.

Numbers are accuracies in percent, stored as data so ``scripts/reproduce.py`` can print each
table with the paper's value, ours, and the difference (ours - paper). A cell the paper does not
report is simply absent.
"""

from __future__ import annotations

from dataclasses import dataclass

from audsemthinker.eval.report import fmt, markdown_table


@dataclass(frozen=True)
class PaperTable:
    """One table of reported numbers.

    Attributes:
        title: what the table shows.
        columns: ``{column key: header}`` in display order; keys are what results are filed under.
        rows: ``{row name: {column key: value}}``; absent cells are not reported.
    """

    title: str
    columns: dict[str, str]
    rows: dict[str, dict[str, float]]


_MAIN_COLUMNS = {"mmau_test_mini": "MMAU test-mini", "mmau_test": "MMAU test",
                 "muchomusic": "MuchoMusic"}

PAPER_TABLES: dict[str, PaperTable] = {
    "main": PaperTable(
        "Main results (accuracy %)",
        _MAIN_COLUMNS,
        {
            "Audio-CoT": {"mmau_test_mini": 57.80},
            "Audio-Reasoner": {"mmau_test_mini": 61.71},
            "Qwen2.5-Omni-7B": {"mmau_test_mini": 65.60, "muchomusic": 70.09},
            "AudSemThinker (SFT)": {"mmau_test_mini": 62.90, "mmau_test": 64.41},
            "AudSemThinker-QA GRPO": {"mmau_test_mini": 66.70, "mmau_test": 66.03,
                                      "muchomusic": 76.66},
        },
    ),
    "ablations": PaperTable(
        "Ablations (MMAU test-mini accuracy %)",
        {"mmau_test_mini": "MMAU test-mini"},
        {
            "SFT without semantic elements": {"mmau_test_mini": 61.5},
            "SFT with semantic elements": {"mmau_test_mini": 63.9},
            "SFT full fine-tuning (no LoRA)": {"mmau_test_mini": 15.5},
            "SFT from scratch": {"mmau_test_mini": 2.1},
        },
    ),
    "per_task": PaperTable(
        "MMAU test-mini accuracy % per task",
        {"sound": "sound", "music": "music", "speech": "speech"},
        {"Qwen2.5-Omni-7B": {"sound": 67.87, "music": 69.16, "speech": 59.76}},
    ),
    "peers": PaperTable(
        "Peers (MMAU test-mini accuracy %)",
        {"mmau_test_mini": "MMAU test-mini"},
        {
            "R1-AQA (GRPO, Qwen2-Audio)": {"mmau_test_mini": 64.50},
            "Ke-Omni-R-7B (GRPO + short think)": {"mmau_test_mini": 68.90},
        },
    ),
}


def _table(name: str) -> PaperTable:
    if name not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {name!r}; known: {sorted(PAPER_TABLES)}")
    return PAPER_TABLES[name]


def comparison_rows(ours: dict[str, dict[str, float]], table: str = "main") -> list[dict]:
    """Cell-by-cell comparison of our numbers with one paper table, for JSON.

    Args:
        ours: ``{row name: {column key: accuracy %}}``. Rows named as in the paper line up with
            the paper's; other rows (e.g. "ours: tiny run") are appended after them.
        table: a key of :data:`PAPER_TABLES` ("main", "ablations", "per_task", "peers").

    Returns:
        One dict per (row, column): ``row``, ``column``, ``paper``, ``ours`` and ``diff``
        (ours - paper), each None where missing.

    Raises:
        ValueError: an unknown table, or a column key the table does not have (a typo would
            otherwise silently drop our number).
    """
    spec = _table(table)
    for row, cells in ours.items():
        bad = sorted(set(cells) - set(spec.columns))
        if bad:
            raise ValueError(f"row {row!r}: columns {bad} not in table {table!r}; "
                             f"known: {list(spec.columns)}")
    names = list(spec.rows) + [r for r in ours if r not in spec.rows]
    out = []
    for row in names:
        for col in spec.columns:
            paper = spec.rows.get(row, {}).get(col)
            mine = ours.get(row, {}).get(col)
            diff = mine - paper if paper is not None and mine is not None else None
            out.append({"row": row, "column": col, "paper": paper, "ours": mine, "diff": diff})
    return out


def comparison_table(ours: dict[str, dict[str, float]], table: str = "main") -> str:
    """A Markdown table of one paper table with ours and the difference beside each number.

    Args:
        ours: as for :func:`comparison_rows`.
        table: which paper table.

    Returns:
        Markdown: a heading line, then per column three cells "paper", "ours", "diff"
        (``+1.23`` style), ``-`` wherever a number is missing.

    Raises:
        ValueError: as for :func:`comparison_rows`.
    """
    spec = _table(table)
    cells = comparison_rows(ours, table)
    header = ["model"]
    for label in spec.columns.values():
        header += [f"{label} (paper)", f"{label} (ours)", f"{label} (diff)"]
    rows: dict[str, list] = {}
    for c in cells:
        rows.setdefault(c["row"], [c["row"]]).extend(
            [fmt(c["paper"]), fmt(c["ours"]), fmt(c["diff"], signed=True)])
    return f"### {spec.title}\n\n{markdown_table(header, list(rows.values()))}\n"
