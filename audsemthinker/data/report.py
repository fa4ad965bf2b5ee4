"""The build report: what a build kept, what it skipped and why, how long the clips are.

Written beside the rows as ``build_report.json`` (machine-readable), ``build_report.md`` (for a
person) and ``build_report_durations.png``. Skips are grouped by reason with counts and a few
example ids, so "412 items skipped: 400 undecodable, 12 answer_not_in_choices" is one glance.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audsemthinker.redact import redact

EXAMPLES_PER_REASON = 5
DURATION_EDGES = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, math.inf)


@dataclass
class BuildReport:
    """Counts and statistics of one :func:`audsemthinker.data.registry.build_dataset` call."""

    name: str
    out_dir: str
    kwargs: dict = field(default_factory=dict)
    strict: bool = False
    kept: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    audio_checks: dict[str, Any] = field(default_factory=dict)
    at_max_seconds: int = 0
    capped: int = 0
    durations: list[float] = field(default_factory=list)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    report_path: str = ""

    @property
    def total_kept(self) -> int:
        return sum(self.kept.values())

    @property
    def total_skipped(self) -> int:
        return sum(v["count"] for v in self.skipped.values())

    def skip_counts(self) -> dict[str, int]:
        """``{reason: count}``."""
        return {r: v["count"] for r, v in self.skipped.items()}

    def add_skip(self, item_id: str, reason: str, detail: str = "") -> None:
        entry = self.skipped.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < EXAMPLES_PER_REASON:
            entry["examples"].append({"id": str(item_id), "detail": str(detail)[:300]})

    def add_kept(self, split: str, duration: float, tokens: dict[str, int] | None) -> None:
        self.kept[split] = self.kept.get(split, 0) + 1
        self.durations.append(float(duration))
        for k, v in (tokens or {}).items():
            self.tokens.setdefault(k, []).append(int(v))

    # ----------------------------------------------------------------------------------------
    def duration_histogram(self) -> list[dict]:
        """Counts per duration bin (seconds): ``[{"bin": "1-2", "count": n}, ...]``."""
        counts, _ = np.histogram(np.asarray(self.durations, dtype=float), bins=DURATION_EDGES)
        return [{"bin": f"{_fmt(lo)}-{_fmt(hi)}", "count": int(c)}
                for lo, hi, c in zip(DURATION_EDGES[:-1], DURATION_EDGES[1:], counts)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kwargs"], d["meta"] = redact(d["kwargs"]), redact(d["meta"])  # resolved env secrets
        d.pop("durations")
        d["tokens"] = {k: _stats(v) for k, v in self.tokens.items()}
        d["total_kept"], d["total_skipped"] = self.total_kept, self.total_skipped
        d["durations"] = {**_stats(self.durations), "histogram": self.duration_histogram()}
        return d

    def write(self, out_dir: str | Path, plot: bool = True, stem: str = "build_report") -> Path:
        """Write ``<stem>.json``, ``<stem>.md`` and (``plot``) ``<stem>_durations.png``.

        Returns:
            The JSON path.
        """
        out = Path(out_dir)
        path = out / f"{stem}.json"
        tmp = out / f"{stem}.json.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        os.replace(tmp, path)
        self.report_path = str(path)
        (out / f"{stem}.md").write_text(self.markdown())
        if plot and self.durations:
            plot_durations(self.durations, out / f"{stem}_durations.png", self.name)
        return path

    def markdown(self) -> str:
        d = self.to_dict()
        splits = ", ".join(f"{k} {v}" for k, v in self.kept.items())
        lines = [f"# Build report: {self.name}", "",
                 f"- output: `{self.out_dir}`", f"- strict: {self.strict}",
                 f"- kept: {self.total_kept} ({splits})",
                 f"- skipped: {self.total_skipped}",
                 f"- clips at the max_seconds limit: {self.at_max_seconds} "
                 f"({self.capped} longer sources stored cut to it)",
                 f"- build time: {self.elapsed_s:.1f} s", ""]
        if self.meta:
            lines += ["## Source", ""] + [f"- {k}: {v}" for k, v in d["meta"].items()] + [""]
        if self.skipped:
            lines += ["## Skipped by reason", "", "| reason | count | example ids |",
                      "|---|---|---|"]
            for reason, v in sorted(self.skipped.items(), key=lambda kv: -kv[1]["count"]):
                ids = ", ".join(f"`{e['id']}`" for e in v["examples"])
                lines.append(f"| {reason} | {v['count']} | {ids} |")
            lines.append("")
        lines += ["## Durations (s)", "", _stats_line(d["durations"]), "",
                  "| bin | count |", "|---|---|"]
        lines += [f"| {b['bin']} | {b['count']} |" for b in d["durations"]["histogram"]
                  if b["count"]]
        if d["tokens"]:
            lines += ["", "## Tokens per example", "", "| part | " + " | ".join(_STAT_KEYS) + " |",
                      "|---|" + "---|" * len(_STAT_KEYS)]
            for k, s in d["tokens"].items():
                lines.append(f"| {k} | " + " | ".join(_num(s[x]) for x in _STAT_KEYS) + " |")
        return "\n".join(lines) + "\n"


_STAT_KEYS = ("count", "min", "mean", "p50", "p95", "max", "sum")


def _stats(values) -> dict:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {k: 0 for k in _STAT_KEYS}
    return {"count": int(a.size), "min": float(a.min()), "mean": float(a.mean()),
            "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "sum": float(a.sum())}


def _stats_line(s: dict) -> str:
    return ", ".join(f"{k} {_num(s[k])}" for k in _STAT_KEYS)


def _num(x) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.2f}"


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:g}"


def plot_durations(durations: list[float], path: Path, title: str) -> Path:
    """A histogram PNG of clip durations (matplotlib Agg, imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(durations, bins=min(50, max(5, len(set(durations)))), color="#4477aa")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("examples")
    ax.set_title(f"{title}: {len(durations)} clips")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
