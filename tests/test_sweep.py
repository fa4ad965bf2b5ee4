"""Hydra multirun sweeps: one folder per job, and a summary table whose rows are the swept values
against each job's own final metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_sft import ROOT, build_synthetic

from audsemthinker.distributed.sweep import summarize_sweep

LR, LORA = "train.sft.learning_rate", "lora"
PRESET = {"tiny": "lm_attn+audio_proj", "none": "none"}  # configs/lora/<name>.yaml -> preset


def _md_rows(md: str) -> list[dict[str, str]]:
    """The Markdown table of ``sweep_summary.md`` as one dict per row."""
    lines = [x for x in md.splitlines() if x.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert set(lines[1]) <= {"|", "-"}
    return [dict(zip(header, (c.strip() for c in x.strip("|").split("|")), strict=True))
            for x in lines[2:]]


def _fake_job(sweep: Path, num: str, overrides: list[str], report: dict | None) -> None:
    (sweep / num / ".hydra").mkdir(parents=True)
    (sweep / num / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if report is not None:
        (sweep / num / "sft_report.json").write_text(json.dumps(report))


def test_summary_columns_are_the_swept_keys_and_a_job_without_report_is_counted(tmp_path):
    report = {"global_step": 7, "train_loss": 1.25, "heldout": {"accuracy": 50.0}}
    _fake_job(tmp_path, "0", ["model.tiny=false", "lora=tiny"], report)
    _fake_job(tmp_path, "1", ["model.tiny=false", "lora=none"], None)
    _fake_job(tmp_path, "10", ["model.tiny=false", "lora=none"], {**report, "global_step": 9})
    rows = summarize_sweep(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "10"]  # numeric, not lexical, job order
    assert [r["status"] for r in rows] == ["ok", "no report", "ok"]
    assert [r["global_step"] for r in rows] == [7, None, 9]
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["swept"] == ["lora"] and summary["fixed"] == {"model.tiny": False}
    assert summary["n_without_report"] == 1
    md_rows = _md_rows((tmp_path / "sweep_summary.md").read_text())
    assert list(md_rows[0]) == ["job", "lora", "global_step", "train_loss", "heldout_accuracy",
                                "status"]
    assert [(r["lora"], r["train_loss"]) for r in md_rows] == [
        ("tiny", "1.25"), ("none", "-"), ("none", "1.25")]


def test_a_folder_without_jobs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folder"):
        summarize_sweep(tmp_path)


@pytest.mark.slow
def test_2x2_sft_sweep_writes_one_folder_per_job_and_a_matching_summary(tmp_path, tiny_full_dir):
    data = build_synthetic(tmp_path / "data", n_train=8, n_test=2)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "scripts" / "sft.py"), "-m",
           f"{LR}=1e-3,2e-3", f"{LORA}=tiny,none", f"hydra.sweep.dir={sweep}",
           f"model.name_or_path={tiny_full_dir}", "model.tiny=false", f"data.out_dir={data}",
           "logging.wandb=off", "train.sft.max_steps=3", "train.sft.save_steps=100",
           "train.sft.logging_steps=1", "train.sft.per_device_train_batch_size=4",
           "eval.decoding.max_new_tokens=4", "eval.batch_size=2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    reports = {p.name: json.loads((p / "sft_report.json").read_text()) for p in jobs}
    assert all(r["run_dir"] == str(sweep / name) for name, r in reports.items())
    assert {r["global_step"] for r in reports.values()} == {3}

    md_rows = _md_rows((sweep / "sweep_summary.md").read_text())
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["swept"] == [LR, LORA]
    assert [r["job"] for r in md_rows] == [r["job"] for r in summary["jobs"]] == list(reports)
    # Every (learning rate, LoRA) pair appears once ...
    assert sorted((float(r[LR]), r[LORA]) for r in md_rows) == [
        (1e-3, "none"), (1e-3, "tiny"), (2e-3, "none"), (2e-3, "tiny")]
    for md, row in zip(md_rows, summary["jobs"], strict=True):
        report = reports[row["job"]]
        config = yaml.safe_load((sweep / row["job"] / "config.yaml").read_text())
        # ... and is what that job actually trained with, not just what its folder says.
        assert float(md[LR]) == row["overrides"][LR] == config["train"]["sft"]["learning_rate"]
        assert PRESET[md[LORA]] == PRESET[row["overrides"][LORA]] == report["lora_preset"]
        # The metrics are that job's own report values (the table rounds to 6 digits).
        assert row["status"] == "ok" and row["report"] == "sft_report.json"
        assert row["global_step"] == report["global_step"] == int(md["global_step"])
        assert row["train_loss"] == report["train_loss"]
        assert row["heldout_accuracy"] == report["heldout"]["accuracy"]
        assert float(md["train_loss"]) == pytest.approx(report["train_loss"], rel=1e-5)
        assert float(md["heldout_accuracy"]) == pytest.approx(report["heldout"]["accuracy"],
                                                              rel=1e-5)
