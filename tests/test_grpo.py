"""GRPO wiring: the paper recipe, config checks, rows for the trainer, reward curves, and the
script end to end (checkpoints, report, reward plot, resume=auto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from test_sft import ROOT, build_synthetic, compose_sft

from audsemthinker.config import ConfigError


def _compose(tmp_path, overrides=()):
    return compose_sft(tmp_path, tmp_path / "model", tmp_path / "data", overrides)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def test_paper_recipe_is_the_papers(tmp_path):
    from audsemthinker.train.grpo import check_grpo_section

    cfg = _compose(tmp_path, ["train/grpo=paper", "reward=paper"])
    s = check_grpo_section(cfg)
    assert (s["learning_rate"], s["beta"], s["loss_type"], s["scale_rewards"]) == \
        (1e-6, 0.01, "grpo", "group")
    assert (s["num_generations"], s["per_device_train_batch_size"], s["max_completion_length"]) \
        == (4, 2, 512)
    assert (s["temperature"], s["top_p"], s["top_k"], s["epsilon"], s["num_iterations"]) == \
        (0.9, 1.0, 50, 0.2, 1)
    assert s["bf16"] is True and s["seed"] == cfg.seed
    # One GPU: the generation batch (2 x 1 x accumulation) must hold whole groups of 4.
    assert s["per_device_train_batch_size"] * s["gradient_accumulation_steps"] % 4 == 0
    rewards = OmegaConf.to_container(cfg.reward)["rewards"]
    assert [(r["name"], r["weight"]) for r in rewards] == \
        [("accuracy", 1.0), ("format", 1.0), ("length", 1.0)]


def test_grpo_args_take_weights_run_dir_and_checkpointing_from_elsewhere(tmp_path):
    from audsemthinker.train.grpo import grpo_args

    cfg = _compose(tmp_path, ["model.gradient_checkpointing=true", "train.grpo.bf16=false"])
    OmegaConf.update(cfg, "train.grpo", {k: v for k, v in cfg.train.grpo.items()
                                         if k != "activation_checkpointing"}, merge=False)
    args = grpo_args(cfg, tmp_path / "run", [], [1.0, 0.5])
    assert args.output_dir == str(tmp_path / "run") and args.reward_weights == [1.0, 0.5]
    assert args.remove_unused_columns is False and args.report_to == []
    assert args.activation_checkpointing is True and args.loss_type == "grpo"


@pytest.mark.parametrize("override, match", [
    ("+train.grpo.learning_rte=1e-5", "train.grpo.learning_rte: not a field of GRPOConfig"),
    ("+train.grpo.output_dir=x", "train.grpo.output_dir: set by the trainer"),
    ("+train.grpo.reward_weights=[1.0]", "train.grpo.reward_weights: set by the trainer"),
    ("+train.grpo.remove_unused_columns=true", "never reach the rewards"),
    ("~train.grpo.loss_type", "loss_type: set it explicitly"),
])
def test_bad_grpo_section_fails_at_start_up(tmp_path, override, match):
    from audsemthinker.train.grpo import check_grpo_section

    with pytest.raises(ConfigError, match=match):
        check_grpo_section(_compose(tmp_path, [override]))


def test_grpo_init_must_be_a_model_folder(tmp_path):
    from audsemthinker.train.grpo import init_model_config

    cfg = _compose(tmp_path, [f"grpo_init={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="grpo_init"):
        init_model_config(cfg)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "config.json").write_text("{}")
    mcfg = init_model_config(_compose(tmp_path, [f"grpo_init={tmp_path / 'sft'}"]))
    assert mcfg.name_or_path == str(tmp_path / "sft") and mcfg.tiny is False


# --------------------------------------------------------------------------------------------
# Rows and reward curves
# --------------------------------------------------------------------------------------------
def _sft_row(i, choices):
    return {"id": f"r{i}", "audio": f"/a/{i}.wav", "task": "pitch", "answer": "B. low",
            "choices": choices, "params": {"hz": 300},
            "messages": [{"role": "system", "content": [{"type": "text", "text": "sys"}]},
                         {"role": "user", "content": [{"type": "audio", "audio": f"/a/{i}.wav"},
                                                      {"type": "text", "text": "q?"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": "t"}]}]}


def test_grpo_rows_drop_the_target_and_keep_the_reward_columns():
    from audsemthinker.train.grpo import grpo_rows, to_dataset

    rows = grpo_rows([_sft_row(0, ["high", "low"]), _sft_row(1, None)])
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert rows[0]["prompt"][1]["content"][0] == {"type": "audio", "audio": "/a/0.wav"}
    assert set(rows[0]) == {"id", "audio", "task", "answer", "choices", "prompt"}
    ds = to_dataset(rows)
    assert ds[1]["choices"] is None and ds[0]["choices"] == ["high", "low"]
    assert ds[1]["id"] == "r1" and ds[1]["answer"] == "B. low"
    with pytest.raises(ValueError, match="no 'answer'"):
        grpo_rows([{**_sft_row(2, None), "answer": None}])


def test_reward_summary_and_plot_read_each_reward_from_the_metrics_log(tmp_path):
    from audsemthinker.train.grpo import plot_rewards, reward_summary

    log = tmp_path / "metrics.jsonl"
    records = [{"step": s, "reward": 0.1 * s, "rewards/accuracy/mean": 0.05 * s,
                "rewards/format/mean": 0.5, "loss": 0.0} for s in range(1, 9)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 9, "rew')
    summary = reward_summary(log)
    assert list(summary) == ["total", "accuracy", "format"]
    acc = summary["accuracy"]
    assert acc["points"] == 8 and acc["steps"] == list(range(1, 9))
    assert acc["first_quarter_mean"] == pytest.approx((0.05 + 0.10) / 2)
    assert acc["last_quarter_mean"] == pytest.approx((0.35 + 0.40) / 2)
    assert summary["total"]["last"] == pytest.approx(0.8)
    assert plot_rewards(log, tmp_path / "rewards.png").stat().st_size > 1000
    assert plot_rewards(tmp_path / "missing.jsonl", tmp_path / "none.png") is None


# --------------------------------------------------------------------------------------------
# The script: python scripts/grpo.py, checkpoints, report, resume=auto
# --------------------------------------------------------------------------------------------
def _run_script(run_dir, model_dir, data_dir, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "scripts" / "grpo.py"), f"hydra.run.dir={run_dir}",
           f"model.name_or_path={model_dir}", "model.tiny=false", f"data.out_dir={data_dir}",
           "logging.wandb=off", "reward=simple", "train.grpo.save_steps=1",
           "train.grpo.logging_steps=1", "train.grpo.per_device_train_batch_size=4",
           "train.grpo.num_generations=4", "train.grpo.max_completion_length=6",
           "eval.decoding.max_new_tokens=4", "eval.batch_size=4", *extra]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_script_trains_saves_reports_and_resumes(tmp_path, tiny_full_dir):
    data = build_synthetic(tmp_path / "data", n_train=4, n_test=4)
    run = tmp_path / "run"
    _run_script(run, tiny_full_dir, data, "lora=tiny", "train.grpo.max_steps=2")
    report = json.loads((run / "grpo_report.json").read_text())
    assert report["global_step"] == 2 and report["resumed_from"] is None
    assert report["loss_type"] == "grpo" and report["reward_names"] == \
        ["accuracy", "format", "length"]
    assert set(report["rewards"]) == {"total", "accuracy", "format", "length"}
    assert report["rewards"]["accuracy"]["steps"] == [1, 2]
    assert report["heldout"]["split"] == "test" and report["heldout"]["n"] == 4
    assert report["heldout"]["accuracy_before"] is not None
    for name in ("checkpoint-1", "checkpoint-2", "final", "merged"):
        assert (run / name).is_dir(), name
    assert (run / "checkpoint-2" / "tokenizer_config.json").exists()
    assert (run / "merged" / "config.json").exists() and (run / "rewards.png").exists()
    assert (run / "final" / "adapter_config.json").exists()  # lora=tiny: an adapter

    _run_script(run, tiny_full_dir, data, "lora=tiny", "train.grpo.max_steps=3")  # resume=auto
    report = json.loads((run / "grpo_report.json").read_text())
    assert report["resumed_from"] == str(run / "checkpoint-2")
    assert report["global_step"] == 3
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "rewards/accuracy/mean" in line]
    assert steps == [1, 2, 3]


def test_a_sharded_grpo_run_saves_and_reports_without_generating(tmp_path, tiny_full_dir,
                                                                 monkeypatch):
    """Under ZeRO-3/FSDP neither held-out pass (before or after training) may run on rank 0
    alone (the every-rank pass runs instead); the run still trains, saves, merges and
    reports."""
    import torch

    from audsemthinker.train import grpo

    torch.set_num_threads(2)
    data = build_synthetic(tmp_path / "data", n_train=4, n_test=2, kind="grpo")
    monkeypatch.setattr(grpo, "rank0_generation_blocker", lambda trainer: "FSDP (simulated)")

    def no_generation(*a, **kw):
        raise AssertionError("held-out generation ran although the weights are sharded")

    import audsemthinker.train.sft as sft
    monkeypatch.setattr(sft, "heldout_accuracy", no_generation)
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "lora=tiny", "train.grpo.max_steps=1", "train.grpo.save_strategy=no"])
    report = grpo.run_grpo(cfg)
    held = report["heldout"]
    assert held["before"]["n"] == held["after"]["n"] == 2
    assert held["accuracy_before"] is not None and held["accuracy_after"] is not None
    assert report["global_step"] == 1 and os.path.isdir(report["merged"])


def test_rows_with_unusable_audio_are_counted_and_left_out_before_training(tmp_path,
                                                                          tiny_full_dir):
    """A clip deleted or overwritten after the build would stop GRPO mid-step (a prompt's group
    cannot be dropped from a generation batch); such rows are counted and left out first."""
    import torch

    from audsemthinker.data.examples import load_examples
    from audsemthinker.train import grpo

    torch.set_num_threads(2)
    data = build_synthetic(tmp_path / "data", n_train=6, n_test=0, kind="grpo")
    rows = load_examples(data / "train.jsonl")
    os.remove(rows[0]["audio"])
    with open(rows[4]["audio"], "wb") as f:
        f.write(b"junk" * 100)
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "lora=tiny", "train.grpo.max_steps=1", "train.grpo.save_strategy=no"])
    trainer, info = grpo.build_grpo_trainer(cfg)
    assert info["skipped_rows"] == {
        "rows": 2, "ids": [rows[0]["id"], rows[4]["id"]],
        "by_reason": {"skipped:audio:missing": 1, "skipped:audio:undecodable": 1}}
    assert [r["id"] for r in trainer.train_dataset] == [r["id"] for r in rows[1:4] + rows[5:]]
    trainer.train()  # and the rest trains
