"""SFT trainer: config checks, wandb switch, resume discovery, metrics log, and one real step
(audio reaches the loss forward; the audio projection or its adapter moves).

Helpers here (``compose_sft``, ``build_synthetic``) are imported by the other SFT test files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audsemthinker.config import ConfigError
from audsemthinker.train.common import (
    MetricsLogger,
    configure_wandb,
    find_resume_checkpoint,
    read_metrics,
    resolve_resume,
    wandb_mode,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def compose_sft(out_dir, model_dir, data_dir, overrides=()):
    """The shipped root config with the tiny model, a given data folder and run folder.

    LoRA (``lora=tiny``) unless the overrides pick another ``lora`` (the root default is full
    fine-tuning, which the tiny pipeline needs to learn).
    """
    if not any(str(o).startswith("lora=") for o in overrides):
        overrides = ["lora=tiny", *overrides]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"paths.output_dir={out_dir}", f"paths.root_dir={out_dir}",
            f"model.name_or_path={model_dir}", "model.tiny=false", f"data.out_dir={data_dir}",
            "logging.wandb=off", "resume=false", *overrides])


def build_synthetic(out_dir, **kwargs):
    """The synthetic pitch task, multiple choice, short (simple-variant) targets."""
    from audsemthinker.data.registry import build_dataset

    args = dict(tasks=["pitch"], question_types=["mc_qa"], variant="simple", n_train=16,
                n_valid=0, n_test=4, plot=False)
    build_dataset("synthetic", out_dir, **{**args, **kwargs})
    return Path(out_dir)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, env, want", [
    ("off", {"WANDB_API_KEY": "k"}, "off"),
    ("auto", {}, "offline"),
    ("auto", {"WANDB_API_KEY": "k"}, "online"),
    ("auto", {"WANDB_API_KEY": "k", "WANDB_MODE": "disabled"}, "off"),
    ("on", {}, "online"),
    ("offline", {"WANDB_API_KEY": "k"}, "offline"),
    (False, {"WANDB_API_KEY": "k"}, "off"),  # YAML's unquoted `off`
])
def test_wandb_mode_is_never_inverted(setting, env, want):
    assert wandb_mode(setting, env) == want


def test_wandb_off_means_no_reporting_and_auto_without_key_is_offline(tmp_path):
    env = {"WANDB_API_KEY": "k"}
    assert configure_wandb({"wandb": "off"}, tmp_path, env) == []
    assert env["WANDB_MODE"] == "disabled"
    env = {}
    assert configure_wandb({"wandb": "auto", "project": "p"}, tmp_path, env) == ["wandb"]
    assert env["WANDB_MODE"] == "offline" and env["WANDB_PROJECT"] == "p"
    with pytest.raises(ValueError, match="logging.wandb"):
        wandb_mode("sometimes", {})


def _checkpoint(run, step, state="{}"):
    """A checkpoint folder as the Trainer leaves it: adapter, optimizer and RNG state, and
    ``trainer_state.json`` (written last; ``state=None`` leaves it out)."""
    from safetensors.torch import save_file

    d = run / f"checkpoint-{step}"
    d.mkdir(parents=True)
    save_file({"w": torch.full((64,), float(step))}, str(d / "adapter_model.safetensors"))
    torch.save({"state": {0: torch.zeros(64)}}, d / "optimizer.pt")
    torch.save({"cpu": torch.get_rng_state()}, d / "rng_state.pth")
    if state is not None:
        (d / "trainer_state.json").write_text(state)
    return d


def test_resume_auto_takes_the_newest_complete_checkpoint(tmp_path):
    assert resolve_resume("auto", tmp_path) is None
    good = _checkpoint(tmp_path, 5)
    _checkpoint(tmp_path, 40)  # complete, older than 100 but newer than 5
    _checkpoint(tmp_path, 100, state=None)  # killed while saving: no trainer_state.json
    _checkpoint(tmp_path, 120, state='{"global_st')  # torn write
    (tmp_path / "checkpoint-final").mkdir()
    assert find_resume_checkpoint(tmp_path) == str(tmp_path / "checkpoint-40")
    assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-40")
    assert resolve_resume(False, tmp_path) is None
    assert resolve_resume(str(good), tmp_path) == str(good)
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-100"), tmp_path)


def test_metrics_log_drops_records_past_the_resumed_step(tmp_path):
    from transformers import TrainerControl, TrainerState

    cb = MetricsLogger(tmp_path)
    state, control = TrainerState(), TrainerControl()
    for step in (1, 2, 3, 4):
        state.global_step = step
        cb.on_log(None, state, control, logs={"loss": float(step), "grad_norm": float("nan")})
    state.global_step = 2  # resumed from checkpoint-2: steps 3 and 4 will be logged again
    cb.on_train_begin(None, state, control)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["grad_norm"] is None  # strict JSON
    cb.on_train_end(None, state, control)
    assert (tmp_path / "loss.png").stat().st_size > 0


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------
def test_paper_recipe_is_the_papers(tmp_path):
    from trl import SFTConfig

    from audsemthinker.config import check_fields

    cfg = compose_sft(tmp_path, tmp_path, tmp_path, ["train/sft=paper"])
    sft = OmegaConf.to_container(cfg.train.sft, resolve=True)
    check_fields(sft, SFTConfig, "train.sft")
    assert (sft["learning_rate"], sft["num_train_epochs"], sft["per_device_train_batch_size"],
            sft["seed"], sft["bf16"], sft["max_grad_norm"]) == (2e-4, 1, 4, 42, True, 0.0)
    assert sft["activation_checkpointing"] is True and sft["eval_strategy"] == "steps"
    assert "output_dir" not in sft and "report_to" not in sft
    # TRL accepts every value (bf16 needs a GPU, so this CPU check turns it off).
    from audsemthinker.train.sft import sft_args

    cpu = compose_sft(tmp_path, tmp_path, tmp_path, ["train/sft=paper", "train.sft.bf16=false",
                                                     "+train.sft.use_cpu=true"])
    args = sft_args(cpu, tmp_path / "run", [])
    assert args.max_grad_norm == 0.0 and args.eval_steps == 500 and args.save_steps == 500
    assert args.activation_checkpointing is True and args.lr_scheduler_type == "linear"


@pytest.mark.parametrize("override, match", [
    ("+train.sft.learning_rat=0.1", "train.sft.learning_rat: not a field of SFTConfig; did you "
                                    "mean 'learning_rate'"),
    ("+train.sft.output_dir=x", "train.sft.output_dir: set by the trainer"),
    ("+train.sft.remove_unused_columns=true", "remove_unused_columns"),
])
def test_bad_sft_section_fails_at_start_up(tmp_path, override, match):
    from audsemthinker.train.sft import check_sft_section

    cfg = compose_sft(tmp_path, tmp_path, tmp_path, [override])
    with pytest.raises(ConfigError, match=match):
        check_sft_section(cfg)


def test_tiny_args_force_the_audio_settings(tmp_path):
    from audsemthinker.train.sft import sft_args

    cfg = compose_sft(tmp_path, tmp_path, tmp_path)
    args = sft_args(cfg, tmp_path / "run", [])
    assert args.remove_unused_columns is False
    assert args.dataset_kwargs == {"skip_prepare_dataset": True}
    assert args.output_dir == str(tmp_path / "run") and args.report_to == []
    assert args.activation_checkpointing is False


# --------------------------------------------------------------------------------------------
# One real step
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pitch_data(tmp_path_factory):
    return build_synthetic(tmp_path_factory.mktemp("pitch"), n_train=8, n_valid=4, n_test=0)


@pytest.mark.parametrize("preset, param", [
    ("lm_attn_audio_proj", "model.audio_tower.proj.lora_B.default.weight"),
    ("none", "model.audio_tower.proj.weight"),
])
def test_one_step_feeds_audio_to_the_loss_and_moves_the_audio_projection(
        tmp_path, tiny_full_dir, pitch_data, preset, param):
    from audsemthinker.train.sft import build_sft_trainer

    torch.set_num_threads(2)
    cfg = compose_sft(tmp_path, tiny_full_dir, pitch_data, [
        f"lora={preset}", "train.sft.max_steps=1", "train.sft.per_device_train_batch_size=4",
        "train.sft.save_strategy=no", "train.sft.eval_strategy=no"])
    trainer, info = build_sft_trainer(cfg)
    model = trainer.model
    named = dict(model.named_parameters())
    key = next(k for k in named if k.endswith(param))
    before = named[key].detach().clone()
    seen = {}

    def spy(module, args, kwargs):  # the thinker's backbone, as the loss forward calls it
        seen["input_features"] = kwargs.get("input_features")
        seen["feature_attention_mask"] = kwargs.get("feature_attention_mask")

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    handle = inner.model.register_forward_pre_hook(spy, with_kwargs=True)
    loss_inputs = {}
    compute_loss = trainer.compute_loss

    def recording(model_, inputs, *a, **kw):
        loss_inputs.update(inputs)
        return compute_loss(model_, inputs, *a, **kw)

    trainer.compute_loss = recording
    trainer.train()
    handle.remove()
    feats = seen["input_features"]
    assert feats is not None and feats.shape == (4, 128, 100)  # 4 clips of 1 s
    assert seen["feature_attention_mask"].sum().item() == 400
    assert feats.abs().sum() > 0
    assert (loss_inputs["labels"] != -100).any() and (loss_inputs["labels"] == -100).any()
    after = dict(model.named_parameters())[key].detach()
    assert not torch.equal(before, after), f"{key} did not change after one step"
    assert info["trainable"] > 0
    records = read_metrics(Path(info["run_dir"]) / "metrics.jsonl")
    assert records and records[-1]["step"] == 1


@pytest.mark.parametrize("preset", ["tiny", "none"])
def test_checkpointing_accumulation_clipping_and_eval_steps_run_together(
        tmp_path, tiny_full_dir, pitch_data, preset):
    from audsemthinker.train.sft import build_sft_trainer

    torch.set_num_threads(2)
    cfg = compose_sft(tmp_path, tiny_full_dir, pitch_data, [
        f"lora={preset}", "train.sft.max_steps=2", "train.sft.per_device_train_batch_size=2",
        "train.sft.gradient_accumulation_steps=2", "train.sft.activation_checkpointing=true",
        "train.sft.max_grad_norm=0.5", "train.sft.eval_strategy=steps",
        "+train.sft.eval_steps=1", "train.sft.logging_steps=1", "train.sft.save_strategy=no"])
    trainer, info = build_sft_trainer(cfg)
    trainer.train()
    base = trainer.model.get_base_model() if preset != "none" else trainer.model
    assert base.is_activation_checkpointing  # switched on by Trainer.train
    records = read_metrics(Path(info["run_dir"]) / "metrics.jsonl")
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["eval_loss"])) for r in evals)
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(r["grad_norm"] is not None for r in records if "loss" in r)


# --------------------------------------------------------------------------------------------
# Held-out generation where weights are sharded
# --------------------------------------------------------------------------------------------
def _fake_trainer(processes: int, zero_stage=None, fsdp: bool = False):
    from types import SimpleNamespace

    plugin = None if zero_stage is None else SimpleNamespace(zero_stage=zero_stage)
    state = SimpleNamespace(deepspeed_plugin=plugin)
    return SimpleNamespace(accelerator=SimpleNamespace(num_processes=processes, state=state),
                           is_fsdp_enabled=fsdp)


@pytest.mark.parametrize("processes, zero_stage, fsdp, blocked", [
    (1, 3, False, False),   # one process: nothing to wait for
    (8, None, False, False),  # DDP: every rank holds the whole model
    (8, 2, False, False),   # ZeRO-2 shards optimizer state only
    (8, 3, False, True),    # ZeRO-3: parameters are gathered from every rank per forward
    (8, None, True, True),  # FSDP: likewise
])
def test_rank0_generation_is_refused_only_where_weights_are_sharded(processes, zero_stage,
                                                                    fsdp, blocked):
    from audsemthinker.train.common import rank0_generation_blocker

    reason = rank0_generation_blocker(_fake_trainer(processes, zero_stage, fsdp))
    assert (reason is not None) == blocked
    if blocked:
        assert "shards the weights" in reason


def test_a_sharded_run_saves_and_reports_without_generating(tmp_path, tiny_full_dir,
                                                            pitch_data, monkeypatch):
    """Under ZeRO-3/FSDP the run must finish with its weights and a report, not hang in a
    rank-0-only ``generate``: the held-out rows go through the every-rank pass instead."""
    from audsemthinker.train import sft

    monkeypatch.setattr(sft, "rank0_generation_blocker", lambda trainer: "ZeRO-3 (simulated)")

    def no_generation(*a, **kw):
        raise AssertionError("held-out generation ran although the weights are sharded")

    monkeypatch.setattr(sft, "heldout_accuracy", no_generation)
    cfg = compose_sft(tmp_path, tiny_full_dir, pitch_data, [
        "train.sft.max_steps=1", "train.sft.save_strategy=no", "lora=tiny"])
    report = sft.run_sft(cfg)
    assert report["heldout"]["n"] == 4 and report["heldout"]["accuracy"] is not None
    assert (Path(report["final"]) / "adapter_model.safetensors").exists()
    assert json.loads((Path(report["run_dir"]) / "sft_report.json").read_text()) == report


def test_skips_in_dataloader_workers_reach_the_report(tmp_path, tiny_full_dir):
    """The training collator runs in DataLoader worker processes, whose counters the main
    process never sees; the run's report must still count a row whose audio broke after the
    build (here: overwritten with junk), once per time it was met."""
    from audsemthinker.data.examples import load_examples
    from audsemthinker.train.sft import SKIP_LOG, run_sft

    data = build_synthetic(tmp_path / "data", n_train=8, n_test=2)
    broken = load_examples(data / "train.jsonl")[3]
    Path(broken["audio"]).write_bytes(b"not audio at all" * 64)
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "train.sft.max_steps=4", "train.sft.per_device_train_batch_size=4",
        "train.sft.dataloader_num_workers=2", "train.sft.save_strategy=no",
        "eval.decoding.max_new_tokens=4"])
    report = run_sft(cfg)  # 4 steps x 4 rows over 8 rows: two epochs, the row met twice
    skipped = report["skipped_rows"]
    assert skipped["rows"] == 1 and skipped["events"] == 2, skipped
    [(reason, n)] = skipped["by_reason"].items()
    assert reason.startswith("skipped:audio:") and n == 2
    lines = (Path(report["run_dir"]) / SKIP_LOG).read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [broken["id"]] * 2
    assert not any(k.startswith("skipped") for k in report["collator"])  # workers' counts
