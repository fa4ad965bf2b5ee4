"""The tiny thinker learns the synthetic pitch task from the audio, not from the text.

Two runs of the same SFT config (full fine-tuning, multiple choice, short simple-variant
targets) on a balanced 2-way task: with the clips, held-out accuracy from generated text reaches
at least 90%; with every clip replaced by silence it stays near chance (50%). The runs go in two
processes at one thread each (the 2-core budget), about a minute each on an idle machine.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest
from omegaconf import OmegaConf
from test_sft import build_synthetic, compose_sft

STEPS, LR = 300, 1.5e-3


def _train(cfg: dict, audio_override: str | None) -> dict:
    """One SFT run in a fresh process (module level: spawn pickles it by name)."""
    import torch

    from audsemthinker.train.sft import run_sft

    torch.set_num_threads(1)
    start = time.perf_counter()
    report = run_sft(OmegaConf.create(cfg), audio_override=audio_override)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    return report


@pytest.mark.slow
def test_tiny_model_learns_pitch_from_audio_and_stays_at_chance_on_silence(tmp_path,
                                                                           tiny_full_dir):
    from audsemthinker.data.examples import load_examples

    data = build_synthetic(tmp_path / "data", n_train=512, n_test=64)
    test_rows = load_examples(data / "test.jsonl")
    assert Counter(r["label"] for r in test_rows) == {"low": 32, "high": 32}  # chance = 50%
    assert all(r["choices"] and r["answer"][:3] in ("A. ", "B. ") for r in test_rows)
    cfgs = {}
    for name in ("audio", "silence"):
        cfg = compose_sft(tmp_path / name, tiny_full_dir, data, [
            "lora=none", f"train.sft.max_steps={STEPS}", f"train.sft.learning_rate={LR}",
            "train.sft.per_device_train_batch_size=8", "train.sft.save_strategy=no",
            "eval.batch_size=32", "eval.decoding.max_new_tokens=40"])
        cfgs[name] = OmegaConf.to_container(cfg, resolve=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {name: pool.submit(_train, cfgs[name], None if name == "audio" else "silence")
                for name in cfgs}
        reports = {name: job.result() for name, job in jobs.items()}
    wall = time.perf_counter() - start
    audio, silence = reports["audio"], reports["silence"]
    print(f"\nlearning test: both runs {wall:.0f} s wall; audio {audio['wall_seconds']} s "
          f"-> {audio['heldout']['accuracy']:.1f}%, silence {silence['wall_seconds']} s -> "
          f"{silence['heldout']['accuracy']:.1f}%")
    for report in (audio, silence):
        assert report["global_step"] == STEPS and report["heldout"]["n"] == 64
    assert audio["heldout"]["accuracy"] >= 90.0, audio["heldout"]["examples"]
    assert silence["heldout"]["accuracy"] <= 70.0, silence["heldout"]["examples"]
    assert silence["audio_override"] == "silence" and audio["audio_override"] is None
