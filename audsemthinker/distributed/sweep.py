"""Hydra multirun sweeps: one folder per job, and a summary table of swept values against metrics.

    python scripts/sft.py -m train.sft.learning_rate=1e-3,2e-3 lora=tiny,none

Hydra writes each job into ``<hydra.sweep.dir>/<job number>/`` (``configs/hydra/default.yaml``),
with the job's overrides in ``.hydra/overrides.yaml`` and the training report beside them. When
the last job returns, :class:`SweepSummaryCallback` (registered in that same file) calls
:func:`summarize_sweep`, which writes ``sweep_summary.md`` and ``sweep_summary.json`` into the
sweep folder. A job that raises is recorded as failed in its folder (``job_status.json``); a
launcher that stops at the first failure (Hydra's basic one) never reaches the summary: call
``summarize_sweep("multirun/run/<time>")``. Jobs that start their ranks through
``accelerate launch`` (``audsemthinker/distributed/cluster.py``) record a failure and return, so the
sweep completes, writes the summary with the failed rows, then exits non-zero.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Report file -> where its held-out accuracy sits. A pipeline job keeps each stage in a subfolder
# (sft/, grpo/); the last stage found wins, since its model is what the job produced.
REPORTS = (("sft_report.json", ("heldout", "accuracy")),
           ("grpo_report.json", ("heldout", "accuracy_after")))
METRICS = ("global_step", "train_loss", "heldout_accuracy")
SUMMARY_MD, SUMMARY_JSON = "sweep_summary.md", "sweep_summary.json"


def job_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The job folders of a sweep (those holding ``.hydra/overrides.yaml``), by job number."""
    found = [p.parent.parent for p in Path(sweep_dir).glob("*/.hydra/overrides.yaml")]
    return sorted(found, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit()
                                        else 0, p.name))


def read_overrides(job_dir: Path) -> dict[str, tuple[object, str]]:
    """``key -> (value, text)`` for each override of one job, parsed by Hydra's own grammar.

    Raises:
        ValueError: when ``overrides.yaml`` is not a list of override strings (a corrupt job
            folder should not become a silently empty row).
    """
    path = job_dir / ".hydra" / "overrides.yaml"
    lines = yaml.safe_load(path.read_text()) or []
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise ValueError(f"{path}: expected a list of 'key=value' strings, got {lines!r}")
    out = {}
    for o in OverridesParser.create().parse_overrides(lines):
        key = o.key_or_group + (f"@{o.package}" if o.package else "")
        out[key] = (None, "(deleted)") if o.is_delete() else (o.value(),
                                                              o.get_value_element_as_str())
    return out


def _find_report(job_dir: Path) -> tuple[Path, tuple[str, ...]] | None:
    found = None
    for name, acc_path in REPORTS:
        for path in (job_dir / name, job_dir / name.split("_")[0] / name):
            if path.is_file():
                found = (path, acc_path)
    return found


def read_metrics(job_dir: Path) -> dict:
    """Final metrics of one job: ``global_step``, ``train_loss``, ``heldout_accuracy`` (percent)
    and ``report`` (the file they came from, relative to the job folder), or a ``status`` that
    says why there are none (a job that failed or is still running has no report). A job
    recorded as failed (``job_status.json``) is ``failed: <error>`` whatever it left."""
    from audsemthinker.distributed.cluster import status_of

    status = status_of(job_dir)
    if status and status.get("status") == "failed":
        return {"report": None, "status": f"failed: {status.get('error')}",
                **dict.fromkeys(METRICS)}
    found = _find_report(job_dir)
    if found is None:
        return {"report": None, "status": "no report", **dict.fromkeys(METRICS)}
    path, acc_path = found
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"report": str(path.relative_to(job_dir)), "status": f"unreadable report: {e}",
                **dict.fromkeys(METRICS)}
    acc = report
    for part in acc_path:
        acc = acc.get(part) if isinstance(acc, dict) else None
    return {"report": str(path.relative_to(job_dir)), "status": "ok",
            "global_step": report.get("global_step"), "train_loss": report.get("train_loss"),
            "heldout_accuracy": acc}


def _cell(value) -> str:
    if value is None:
        return "-"
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def summarize_sweep(sweep_dir: str | os.PathLike) -> list[dict]:
    """Collect every job of a sweep and write ``sweep_summary.md`` and ``sweep_summary.json``.

    Columns are the override keys whose value differs between jobs (what the sweep varied);
    keys every job shares (model path, data folder, ...) are listed once above the table, so
    the table stays readable when a sweep carries many fixed overrides. Both files are written
    atomically, so a summary is never half-written.

    Args:
        sweep_dir: the folder Hydra ran the sweep in (``hydra.sweep.dir``).

    Returns:
        One dict per job, in job order: ``job`` (folder name), ``overrides`` (every override,
        ``key -> value`` as Hydra parsed it), the metrics of :func:`read_metrics` and ``status``.

    Raises:
        FileNotFoundError: when ``sweep_dir`` holds no job folder at all (a wrong path should
            not produce an empty table).
    """
    from audsemthinker.eval.report import markdown_table
    from audsemthinker.files import write_json_atomic, write_text_atomic

    sweep_dir = Path(sweep_dir)
    dirs = job_dirs(sweep_dir)
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no job folder with .hydra/overrides.yaml")
    parsed = {d.name: read_overrides(d) for d in dirs}
    keys = list(dict.fromkeys(k for ov in parsed.values() for k in ov))
    texts = {k: [parsed[d.name].get(k, (None, "(unset)"))[1] for d in dirs] for k in keys}
    swept = [k for k in keys if len(set(texts[k])) > 1]
    first = parsed[dirs[0].name]
    fixed = {k: first[k][0] for k in keys if k not in swept}
    rows = [{"job": d.name, "overrides": {k: v for k, (v, _) in parsed[d.name].items()},
             **read_metrics(d)} for d in dirs]
    missing = sum(r["status"] != "ok" for r in rows)

    table = markdown_table(
        ["job", *swept, *METRICS, "status"],
        [[r["job"], *(_cell(parsed[r["job"]].get(k, (None, "(unset)"))[1]) for k in swept),
          *(_cell(r[m]) for m in METRICS), r["status"]] for r in rows])
    lines = [f"# Sweep summary\n\nSweep folder: `{sweep_dir}`; {len(rows)} jobs, "
             f"{missing} without a report. heldout_accuracy is in percent.\n"]
    if fixed:
        lines.append("Fixed overrides: " + ", ".join(f"`{k}={first[k][1]}`" for k in fixed)
                     + "\n")
    lines.append(table + "\n")
    write_text_atomic(sweep_dir / SUMMARY_MD, "\n".join(lines))
    write_json_atomic(sweep_dir / SUMMARY_JSON, {
        "sweep_dir": str(sweep_dir), "swept": swept, "fixed": fixed, "metrics": list(METRICS),
        "n_jobs": len(rows), "n_without_report": missing, "jobs": rows})
    if missing:
        log.warning("%d of %d sweep jobs have no usable report (see %s)", missing, len(rows),
                    sweep_dir / SUMMARY_MD)
    log.info("sweep summary: %s", sweep_dir / SUMMARY_MD)
    return rows


class SweepSummaryCallback(Callback):
    """Hydra callback: writes the sweep summary when a multirun ends, and records a sweep job
    that raised in its folder (``job_status.json``), so the summary names it even when the
    launcher stops the sweep. Single runs are untouched."""

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if job_return.status != JobStatus.FAILED or config.hydra.mode != RunMode.MULTIRUN:
            return
        from audsemthinker.distributed.cluster import write_status

        error = getattr(job_return, "_return_value", None)
        write_status(config.hydra.runtime.output_dir, "failed",
                     f"{type(error).__name__}: {error}"[:500])

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        """Summarise ``config.hydra.sweep.dir`` (the folder the jobs were written into); when a
        job failed, exit non-zero after writing the summary (SystemExit: Hydra turns a
        callback's exceptions into warnings)."""
        rows = summarize_sweep(str(config.hydra.sweep.dir))
        failed = [r["job"] for r in rows if str(r["status"]).startswith("failed")]
        if failed:
            raise SystemExit(f"sweep jobs {failed} failed; see "
                             f"{Path(str(config.hydra.sweep.dir)) / SUMMARY_MD}")
