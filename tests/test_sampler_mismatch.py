"""The sampler/trainer mismatch is measured from the sampler's own log-probs and can be corrected.

- the sampler (our decode loop, and ``generate`` where the loop does not serve) records the
  log-prob of each token under the distribution it drew it from;
- a bf16 LoRA GRPO step (merged rollouts, unmerged log-prob pass) logs ``sampling/mismatch/*``
  equal to an independent computation from that step's own tensors;
- with ``sampler.correction`` the loss is TRL's with each token weighted by the capped ratio
  ``min(exp(old - sampler), cap)``; without it, the ratio is not applied.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_decode import _config, _inputs
from test_grpo_audio import _args, tone_rows

from audsemthinker.config import ConfigError
from audsemthinker.schemas import SamplerSettings, sampler_settings
from audsemthinker.train.sampler_mismatch import SamplerLogps, finish, mismatch_stats


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    from test_prefix_share import PROMPT_CLIPS, _prompt_rows

    return _prompt_rows(tmp_path_factory.mktemp("clips"), PROMPT_CLIPS[:3])


def _numpy_stats(sampler, trainer, mask, threshold):
    """The three numbers by their definitions, in float64 numpy."""
    d = (np.asarray(trainer, np.float64) - np.asarray(sampler, np.float64))[np.asarray(mask) > 0]
    return {"mean_abs_diff": np.abs(d).mean(), "kl": (np.exp(d) - 1 - d).mean(),
            "share_above_threshold": (np.abs(d) > threshold).mean()}


def test_mismatch_stats_follow_their_definitions_on_a_fixed_batch():
    sampler = torch.tensor([[-1.0, -2.0, -0.5, 0.0], [-3.0, -0.1, -7.0, -1.0]])
    trainer = torch.tensor([[-1.05, -1.5, -0.5, 9.0], [-3.2, -0.1, -6.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])  # the last column is padding
    got = finish(mismatch_stats(sampler, trainer, mask, threshold=0.1))
    want = _numpy_stats(sampler, trainer, mask, 0.1)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert got["share_above_threshold"] == pytest.approx(3 / 6)  # 0.5, 0.2, 1.0 of 6 tokens


@pytest.mark.parametrize("bad, match", [({"mode": "token"}, "sampler.mode"),
                                        ({"cap": 0.0}, "sampler.cap"),
                                        ({"correction": True, "measure": False}, "measure"),
                                        ({"capp": 2.0}, "sampler.capp")])
def test_bad_sampler_settings_fail_naming_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        sampler_settings({"sampler": bad})


def test_the_shipped_config_measures_and_the_sampler_section_reaches_the_trainer(
        tmp_path, tiny_full_dir):
    from test_sft import build_synthetic, compose_sft

    from audsemthinker.train.grpo import build_grpo_trainer

    data = build_synthetic(tmp_path / "data", n_train=4, n_test=0)
    cfg = compose_sft(tmp_path, tiny_full_dir, data, ["reward=simple", "lora=lm_attn"])
    assert sampler_settings(cfg) == SamplerSettings()  # measure, do not correct
    cfg = compose_sft(tmp_path, tiny_full_dir, data, [
        "reward=simple", "lora=lm_attn", "sampler.correction=true", "sampler.cap=3",
        "sampler.mode=sequence_truncate"])
    trainer, _ = build_grpo_trainer(cfg)
    assert trainer.mismatch.settings == SamplerSettings(correction=True, cap=3.0,
                                                       mode="sequence_truncate")
    assert (trainer.vllm_importance_sampling_mode, trainer.vllm_importance_sampling_clip_max) \
        == ("sequence_truncate", 3.0)
    assert not trainer.use_vllm


def test_run_reports_carry_the_mismatch_curve(tmp_path):
    from audsemthinker.train.sampler_mismatch import mismatch_curves

    lines = [{"step": 1, "loss": 0.1, "sampling/mismatch/kl": 0.2,
              "sampling/mismatch/mean_abs_diff": 0.3},
             {"step": 2, "loss": 0.1},
             {"step": 3, "sampling/mismatch/kl": 0.05, "sampling/mismatch/mean_abs_diff": 0.1}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "sampl')
    assert mismatch_curves(path) == {"kl": {"steps": [1, 3], "values": [0.2, 0.05]},
                                     "mean_abs_diff": {"steps": [1, 3], "values": [0.3, 0.1]}}


# --------------------------------------------------------------------------------------------
# The sampler's log-probs
# --------------------------------------------------------------------------------------------
def _forward_logps(model, inputs, sequences, cfg) -> torch.Tensor:
    """Log-probs of the new tokens from one full forward, with the sampler's processing
    (temperature, suppressed tokens; top-k/p off): what the sampler should have recorded."""
    width = inputs["input_ids"].size(1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(sequences[:, width:])], 1)
    with torch.no_grad():
        logits = model(input_ids=sequences, attention_mask=mask,
                       input_features=inputs["input_features"],
                       feature_attention_mask=inputs["feature_attention_mask"]).logits
    logits = logits[:, width - 1:-1].float() / cfg.temperature
    logits[..., cfg.suppress_tokens] = -math.inf
    return logits.log_softmax(-1).gather(-1, sequences[:, width:, None]).squeeze(-1)


@pytest.mark.parametrize("path", ["decode_loop", "generate"])
def test_the_sampler_records_the_log_probs_it_drew_from(tiny_model, tiny_processor, prompts,
                                                        path):
    from audsemthinker.fast.grpo_switches import loop_generate
    from audsemthinker.schemas import GRPOFast

    inputs, _ = _inputs(tiny_processor, prompts, copies=2)
    cfg = _config(tiny_processor, do_sample=True, temperature=0.7, top_k=0, top_p=1.0,
                  eos_token_id=[])  # every row runs all steps: each position is checked
    recorder = SamplerLogps()
    if path == "decode_loop":
        stats = {"calls": 0}
        generate = loop_generate(tiny_model, GRPOFast(), set(), stats, recorder)
        torch.manual_seed(0)
        sequences = generate(**inputs, generation_config=cfg)
        assert stats["calls"] == 1
    else:
        torch.manual_seed(0)
        sequences = recorder.generate(tiny_model, **inputs, generation_config=cfg)
    torch.manual_seed(0)  # recording changes nothing about what is drawn
    plain = tiny_model.generate(**inputs, generation_config=cfg)
    assert torch.equal(sequences, plain)
    new = sequences.size(1) - inputs["input_ids"].size(1)
    got = recorder.take([[0] * new] * sequences.size(0))
    want = _forward_logps(tiny_model, inputs, sequences, cfg)
    torch.testing.assert_close(torch.tensor(got), want, atol=2e-4, rtol=1e-4)
    assert recorder.last is None  # taken once


def test_take_fails_clearly_when_nothing_was_recorded():
    with pytest.raises(RuntimeError, match="recorded no sampler log-probs"):
        SamplerLogps().take([[1, 2]])


# --------------------------------------------------------------------------------------------
# A bf16 LoRA GRPO step
# --------------------------------------------------------------------------------------------
def _index_reward(completions, **kw):
    """0, 1, 0, 1, ...: each group of 2 gets one of each, so every advantage is nonzero."""
    return [float(i % 2) for i in range(len(completions))]


def _trainer(tmp_path, model_dir, processor, settings: SamplerSettings, dtype="bfloat16",
             **args_kw):
    from datasets import Dataset
    from test_fast_grpo import _model

    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    tmp_path.mkdir(exist_ok=True)
    rows = tone_rows(tmp_path, 2)
    bf16 = dtype == "bfloat16"
    args = _args(tmp_path, **{**dict(max_steps=1, logging_steps=1, num_iterations=1, beta=0.0,
                                     bf16=bf16, max_completion_length=6), **args_kw})
    trainer = AudioGRPOTrainer(model=_model(model_dir, "lm_attn", std=0.3, dtype=dtype),
                               reward_funcs=[_index_reward], args=args,
                               train_dataset=Dataset.from_list(rows),
                               processing_class=processor, sampler=settings)
    return trainer, rows


def _capture_scored(trainer) -> list[dict]:
    seen = []
    inner = trainer._generate_and_score_completions

    def wrapped(inputs):
        out = inner(inputs)
        seen.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v
                     for k, v in out.items()})
        return out

    trainer._generate_and_score_completions = wrapped
    return seen


def test_bf16_lora_step_logs_the_mismatch_of_its_own_rollouts(tmp_path, tiny_full_dir,
                                                              tiny_processor):
    trainer, _ = _trainer(tmp_path, tiny_full_dir, tiny_processor, SamplerSettings())
    seen = _capture_scored(trainer)
    dtypes = set()
    head = trainer.model.get_base_model().lm_head
    head.register_forward_hook(lambda _m, _a, out: dtypes.add(out.dtype))
    trainer.train()
    # really bf16: base weights stored in bf16, logits come out of the head in bf16
    base = trainer.model.get_base_model().model.language_model.layers[0].self_attn.q_proj
    assert base.base_layer.weight.dtype == torch.bfloat16 and dtypes == {torch.bfloat16}
    assert trainer._lora_snapshot is not None and trainer.decode_loop_stats["calls"] == 1
    (out,) = seen
    sampler, old = out["sampling_per_token_logps"], out["old_per_token_logps"]
    mask = out["completion_mask"]
    assert torch.isfinite(old[mask.bool()]).all() and torch.isfinite(sampler[mask.bool()]).all()
    assert "importance_sampling_ratio" not in out  # measured, not applied
    logs = next(r for r in trainer.state.log_history if "loss" in r)
    assert math.isfinite(logs["loss"]) and math.isfinite(logs["grad_norm"])
    want = _numpy_stats(sampler, old, mask, 0.1)
    for key, value in want.items():
        assert logs[f"sampling/mismatch/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # TRL's own vLLM metric, computed by TRL from the same tensors, agrees
    assert logs["sampling/sampling_logp_difference/mean"] == pytest.approx(
        want["mean_abs_diff"], rel=1e-5)
    # the sampler renormalises over the non-suppressed tokens, the trainer does not, and bf16
    # merged vs unmerged rounding adds to it: never exactly equal
    assert want["mean_abs_diff"] > 0 and want["kl"] > 0


def _hand_made_step(tmp_path, model_dir, processor, correction: bool, monkeypatch):
    """One generation batch scored with hand-made sampler log-probs, and the loss on it."""
    trainer, rows = _trainer(tmp_path, model_dir, processor,
                             SamplerSettings(correction=correction, cap=2.0), dtype="float32",
                             per_device_train_batch_size=4, gradient_accumulation_steps=1)
    recorder = trainer.mismatch.recorder

    def hand_made(completion_ids):
        recorder.last = None
        # -12 nats: far less likely than the trainer says (ratio >> cap, truncated);
        # -1 nat: far more likely (ratio << 1, kept as is)
        return [[-12.0 if t % 2 == 0 else -1.0 for t in range(len(ids))]
                for ids in completion_ids]

    monkeypatch.setattr(recorder, "take", hand_made)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = [r for r in trainer.train_dataset for _ in range(2)]  # 2 prompts x 2 samples
    out = trainer._generate_and_score_completions(inputs)
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, out)
    return trainer, out, float(loss)


def _grpo_loss(advantages, ratio, mask) -> float:
    """TRL's "grpo" loss when the policy equals the old policy (coefficient 1), beta 0."""
    per_token = -advantages[:, None] * ratio
    return float(((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean())


@pytest.mark.parametrize("correction", [True, False])
def test_the_correction_weights_the_loss_by_the_capped_ratio(tmp_path, tiny_full_dir,
                                                             tiny_processor, monkeypatch,
                                                             correction):
    trainer, out, loss = _hand_made_step(tmp_path, tiny_full_dir, tiny_processor, correction,
                                         monkeypatch)
    mask = out["completion_mask"].float()
    old = out["old_per_token_logps"]
    hand = torch.tensor([[-12.0 if t % 2 == 0 else -1.0 for t in range(old.size(1))]] *
                        old.size(0))
    torch.testing.assert_close(out["sampling_per_token_logps"] * mask, hand * mask)
    ratio = torch.exp(old - hand)
    capped = ratio.clamp(max=2.0)
    assert bool(((ratio > 2.0) & mask.bool()).any()) and bool(((ratio < 1) & mask.bool()).any())
    advantages = out["advantages"]
    assert bool((advantages != 0).all())
    if correction:
        got = out["importance_sampling_ratio"]
        torch.testing.assert_close(got * mask, capped * mask)
        assert loss == pytest.approx(_grpo_loss(advantages, capped, mask), rel=1e-4, abs=1e-6)
        assert loss != pytest.approx(_grpo_loss(advantages, ratio, mask), rel=1e-2)
    else:
        assert "importance_sampling_ratio" not in out
        assert loss == pytest.approx(_grpo_loss(advantages, torch.ones_like(mask), mask),
                                     rel=1e-4, abs=1e-6)
    assert not trainer.use_vllm  # TRL's switch is back off after scoring and loss


def test_trl_still_gates_its_sampling_correction_as_we_drive_it():
    """Canary: what :class:`SamplerMismatch` relies on in TRL's private code (trl 1.16)."""
    import inspect

    from trl import GRPOTrainer

    gate = "self.use_vllm and self.vllm_importance_sampling_correction"
    score = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for needle in (gate, "sampling_per_token_logps", "old_per_token_logps",
                   "self.vllm_importance_sampling_mode", "self.vllm_importance_sampling_clip_max",
                   'output["importance_sampling_ratio"]',
                   '"sampling/sampling_logp_difference/mean"'):
        assert needle in score, needle
    assert gate in inspect.getsource(GRPOTrainer._compute_loss)
    assert 'per_token_loss * inputs["importance_sampling_ratio"]' in \
        inspect.getsource(GRPOTrainer._compute_loss)
    assert "return completion_ids, logprobs" in \
        inspect.getsource(GRPOTrainer._generate_single_turn)
