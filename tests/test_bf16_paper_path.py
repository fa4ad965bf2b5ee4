"""The real run's precision on CPU: bf16 weights, LoRA SFT steps, export, evaluation.

A real run loads the thinker in bf16 and trains LoRA under bf16 autocast; every other test runs
the tiny model in float32. Here the tiny model runs the same path in bf16 (CPU torch has bf16
matmuls) and each stage is checked to really compute in bf16 and to stay finite. The export's
recorded gap between the merged weights and the adapter (``export_info.json``) must equal a
direct comparison of the two, loaded afresh. (GRPO in bf16: ``test_sampler_mismatch``.)
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_sft import build_synthetic, compose_sft


@pytest.fixture(scope="module")
def bf16_sft(tmp_path_factory, tiny_full_dir):
    """Two bf16 LoRA SFT steps (bf16 matmuls are slow on most CPUs: kept small), saved, with
    the dtypes of the final hidden states seen while training (TRL's fused head reads those)."""
    from audsemthinker.model.processor import save_processor
    from audsemthinker.train.sft import build_sft_trainer

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("bf16")
    data = build_synthetic(tmp / "data", n_train=4, n_test=2)
    cfg = compose_sft(tmp / "run", tiny_full_dir, data, [
        "model.dtype=bfloat16", "train.sft.bf16=true", "train.sft.max_steps=2",
        "train.sft.per_device_train_batch_size=2", "train.sft.save_strategy=no",
        "train.sft.learning_rate=0.02", "train.sft.logging_steps=1", "eval.batch_size=2",
        "eval.decoding.max_new_tokens=4"])
    trainer, info = build_sft_trainer(cfg)
    seen = set()
    norm = trainer.model.get_base_model().model.language_model.norm
    norm.register_forward_hook(lambda _m, _a, out: seen.add(out.dtype))
    result = trainer.train()
    final = info["run_dir"] / "final"
    trainer.save_model(str(final))
    save_processor(info["processor"], final)
    return cfg, trainer, result, seen, final


@pytest.fixture(scope="module")
def bf16_export(bf16_sft, tmp_path_factory):
    """The bf16 run's adapter merged into its bf16 base (``export_merged``)."""
    from audsemthinker.train.export import export_merged

    cfg, _, _, _, final = bf16_sft
    return export_merged(final, cfg.model, tmp_path_factory.mktemp("bf16_export") / "merged")


def test_bf16_lora_sft_steps_train_in_bf16_and_stay_finite(bf16_sft):
    _, trainer, result, seen, _ = bf16_sft
    model = trainer.model
    base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert base == {torch.bfloat16}
    assert seen == {torch.bfloat16}  # the activations, not just the stored weights
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert math.isfinite(result.training_loss)
    moved = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert moved and all(torch.isfinite(p).all() for p in moved)
    assert any(p.abs().max() > 0 for p in moved)  # the adapter trained


def _gap_by_hand(adapter_logps, merged_logps, probe, threshold):
    """The export's numbers from their definitions (numpy, float64)."""
    mask = probe["score_mask"].bool().numpy()
    target = probe["input_ids"][:, 1:].numpy()
    a_all, m_all = adapter_logps.double().numpy(), merged_logps.double().numpy()
    a = np.take_along_axis(a_all, target[..., None], -1)[..., 0][mask]
    m = np.take_along_axis(m_all, target[..., None], -1)[..., 0][mask]
    kl = (np.exp(a_all) * (a_all - m_all)).sum(-1)[mask]
    return {"tokens": int(mask.sum()), "mean_abs_diff": np.abs(a - m).mean(),
            "max_abs_diff": np.abs(a - m).max(), "share_above_threshold":
            (np.abs(a - m) > threshold).mean(), "kl": kl.mean()}


def test_bf16_export_records_the_merge_gap_a_direct_comparison_finds(bf16_sft, bf16_export):
    from peft import PeftModel
    from safetensors import safe_open

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.processor import build_processor
    from audsemthinker.train.merge_gap import probe_batch, token_logps

    cfg, _, _, _, final = bf16_sft
    out = bf16_export
    info = json.loads((out / "export_info.json").read_text())
    gap = info["merge_gap"]
    assert info["dtype"] == "bfloat16" and info["kind"] == "adapter"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}

    # direct: the adapter on a fresh bf16 base against the export loaded from disk
    base = load_thinker(ModelConfig(name_or_path=cfg.model.name_or_path, dtype="bfloat16"))
    adapter = PeftModel.from_pretrained(base, str(final))
    merged = load_thinker(ModelConfig(name_or_path=str(out), dtype="bfloat16"))
    probe = probe_batch(build_processor(out))
    want = _gap_by_hand(token_logps(adapter, probe), token_logps(merged, probe), probe,
                        gap["threshold"])
    assert gap["tokens"] == want.pop("tokens") > 20
    for key, value in want.items():
        assert gap[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # bf16 rounds part of the update away in the merge: the two computations differ
    assert gap["mean_abs_diff"] > 0 and gap["kl"] > 0


def test_bf16_export_generates_and_scores_held_out_rows(bf16_sft, bf16_export):
    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.processor import build_processor
    from audsemthinker.train.sft import heldout_accuracy, load_split

    cfg, out = bf16_sft[0], bf16_export
    model = load_thinker(ModelConfig(name_or_path=str(out), dtype="bfloat16"))
    seen = set()
    model.lm_head.register_forward_hook(lambda _m, _a, o: seen.add(o.dtype))
    rows = load_split(cfg, "test")
    held = heldout_accuracy(model, build_processor(out), rows, cfg)
    assert seen == {torch.bfloat16}
    assert held["n"] == len(rows) == 2 and 0.0 <= held["accuracy"] <= 100.0
