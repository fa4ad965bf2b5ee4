"""A built data folder is keyed by the settings that built it.

Two runs whose data configs differ (a 25-word and a 100-word prompt budget, another variant,
another source) must never read each other's rows. Every config build therefore ends by
writing a completion marker, ``.<report_name>.complete.json``, holding the builder settings
and their hash. It is written LAST, after every split file and the report, so its presence
means the folder is complete:

- marker present, same settings: the folder is used as it is;
- marker present, other settings: the run gets a folder of its own beside it,
  ``<out_dir>-<hash>``, built there if needed (the differing settings are logged);
- no marker and no build report: a build that died half-way, rebuilt in place;
- no marker but a complete build report: a folder built outside a config (``build_dataset``
  called from Python, or an older version of this package); used as it is, with a warning. A
  report of a build refused as incomplete does not count.

A rebuild removes the split files (``*.jsonl`` at the top of the folder) that it did not write
and that no other build sharing the folder claims (MMAU test-mini and test share one folder,
each with its own report and marker), so a split of an older build never survives next to the
new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SETTINGS_KEYS = ("builder", "kwargs", "audio", "strict")
"""What a build's rows depend on (``tokenizer`` only adds statistics to the report)."""


def plain_config(data_cfg: Any) -> dict:
    """A data config node as a resolved plain dict."""
    if isinstance(data_cfg, dict):
        return dict(data_cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(data_cfg, resolve=True)


def build_settings(cfg: dict) -> dict:
    """The settings a folder is keyed by: builder, its kwargs, audio checks, strict."""
    return {"builder": cfg.get("builder"), "kwargs": dict(cfg.get("kwargs") or {}),
            "audio": dict(cfg.get("audio") or {}), "strict": bool(cfg.get("strict", False))}


def settings_hash(settings: dict) -> str:
    """A stable hash of :func:`build_settings` (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def marker_path(out_dir: str | Path, report_name: str = "build_report") -> Path:
    return Path(out_dir) / f".{report_name}.complete.json"


def read_marker(out_dir: str | Path, report_name: str = "build_report") -> dict | None:
    """The completion marker of a folder, or None (absent or unreadable)."""
    try:
        data = json.loads(marker_path(out_dir, report_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "settings_hash" in data else None


def write_marker(out_dir: str | Path, report_name: str, settings: dict, files: list[str]) -> Path:
    """Write the marker atomically; call it after everything else of the build is written."""
    path = marker_path(out_dir, report_name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"settings_hash": settings_hash(settings), "settings": settings,
                               "files": sorted(files)}, indent=2, default=str))
    os.replace(tmp, path)
    return path


def settings_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["kwargs.length_budget: 25 -> 100", ...]``: every leaf that differs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, f"{name}.")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def claimed_files(out_dir: Path, except_report: str) -> set[str]:
    """Split file names that other builds sharing ``out_dir`` wrote (their markers/reports)."""
    names: set[str] = set()
    for marker in out_dir.glob(".*.complete.json"):
        if marker.name == marker_path(out_dir, except_report).name:
            continue
        try:
            names.update(json.loads(marker.read_text(encoding="utf-8")).get("files") or [])
        except (OSError, ValueError, AttributeError):
            continue
    for report in out_dir.glob("build_report*.json"):
        if report.stem == except_report:
            continue
        try:
            files = json.loads(report.read_text(encoding="utf-8")).get("files") or {}
            names.update(Path(p).name for p in files.values())
        except (OSError, ValueError, AttributeError):
            continue
    return names


def remove_stale_splits(out_dir: Path, written: list[str], report_name: str,
                        inputs: dict) -> list[str]:
    """Remove the top-level ``*.jsonl`` (and leftover ``*.jsonl.tmp``) of ``out_dir`` that this
    build did not write, no other build of the folder claims, and no builder argument names
    (a records file kept in the folder is an input, not a split). Returns the removed names."""
    keep = set(written) | claimed_files(out_dir, report_name)
    input_paths = {os.path.abspath(str(v)) for v in inputs.values() if isinstance(v, str)}
    removed = []
    for path in sorted([*out_dir.glob("*.jsonl"), *out_dir.glob("*.jsonl.tmp")]):
        if path.name in keep or os.path.abspath(path) in input_paths:
            continue
        path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        log.info("%s: removed split files of an older build: %s", out_dir, removed)
    return removed


def report_complete(path: Path) -> bool:
    """Whether a build report exists and records a complete build (not one refused as
    incomplete: no rows where the builder requires some, or a source split that kept none)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    meta, kept = report.get("meta") or {}, report.get("kept") or {}
    if meta.get("require_rows") and not sum(kept.values()):
        return False
    return all(kept.get(s) for s in meta.get("source_splits") or ())


def keyed_folder(out_dir: str | Path, settings: dict) -> Path:
    """The folder of a build whose settings differ from those already in ``out_dir``."""
    out = Path(out_dir)
    return out.with_name(f"{out.name}-{settings_hash(settings)[:12]}")


def resolve_folder(cfg: dict) -> tuple[Path, bool]:
    """Where a data config's rows are, and whether they still have to be built.

    Returns:
        ``(folder, needs_build)``; see the module docstring for the rules.
    """
    out = Path(str(cfg["out_dir"]))
    report_name = cfg.get("report_name") or "build_report"
    settings = build_settings(cfg)
    want = settings_hash(settings)
    marker = read_marker(out, report_name)
    if marker is None:
        if report_complete(out / f"{report_name}.json"):
            log.warning("%s has no completion marker (built outside a data config, or by an "
                        "older version); using it as it is. Delete the folder to rebuild it "
                        "from the config.", out)
            return out, False
        return out, True
    if marker["settings_hash"] == want:
        return out, False
    alt = keyed_folder(out, settings)
    log.warning("%s was built with other settings (%s); this run uses %s", out,
                "; ".join(settings_diff(marker.get("settings") or {}, settings)) or "?", alt)
    alt_marker = read_marker(alt, report_name)
    return alt, not (alt_marker and alt_marker["settings_hash"] == want)
