"""Whole ``AudioGRPOTrainer`` steps, ``fast=stock`` against ``fast=default``, in one run.

    python bench/grpo_step.py                  # CPU size: 2 prompts x 4 samples x 16 tokens
    python bench/grpo_step.py --size 7b        # the 7B thinker shape, 8 x 8 x 128, on a GPU
    OUT=/some/dir python bench/grpo_step.py    # also writes grpo_step.json there

``bench/train_speed.py`` times the phases of a GRPO step on the bare model; this runs the real
trainer (TRL 1.16's loop with our overrides), so what it times is what a run pays per optimizer
step: rollout, rewards, reference pass, policy passes, optimizer. Both arms build the same random
thinker (``train_speed.build_model``: the real 152k vocabulary, LoRA r=8 on q/k/v/o and
``audio_tower.proj``), the paper's GRPO settings (beta 0.01, loss ``grpo``, T 0.9, top-k 50, no
gradient checkpointing) and the paper's rewards, on P prompts with distinct 10 s clips (random
audio: the trainer's clip loader is replaced, so no audio files or librosa are needed).

Token ids come from the tiny tokenizer, whose vocabulary is ~1k: sampled ids above it are
suppressed in both arms (``suppress_tokens``), so the completions decode for the rewards.

Needs torch, transformers, peft, accelerate, trl and datasets (``make gpu-wheels`` carries the
last two and the pinned transformers to a bare GPU box); no hydra, omegaconf or librosa.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_speed  # noqa: E402  (bench/ sibling: model shapes, timing, table)

SHAPES = {"7b": dict(prompts=8, group=8, new=128, micro=8),
          "cpu": dict(prompts=2, group=4, new=16, micro=4),
          "smoke": dict(prompts=2, group=2, new=4, micro=2)}


def rows(prompts: int) -> list[dict]:
    """GRPO rows as the builders write them: a system turn, a user turn with one clip."""
    from audsemthinker import format as fmt

    out = []
    for k in range(prompts):
        question = fmt.mc_question(f"Is the tone in clip {k} low or high?", ["low", "high"])
        out.append({"id": f"p{k}", "answer": "A. low", "choices": ["low", "high"],
                    "task": "pitch", "prompt": [
                        {"role": "system", "content": [{"type": "text",
                                                        "text": fmt.SYSTEM_PROMPT}]},
                        {"role": "user", "content": [{"type": "audio", "audio": f"clip{k}.wav"},
                                                     {"type": "text", "text": question}]}]})
    return out


class StepTimer(TrainerCallback):
    """The wall time of each optimizer step (device synced at both ends)."""

    def __init__(self, device: str):
        self.device, self.times, self._t0 = device, [], 0.0

    def on_step_begin(self, args, state, control, **kw):
        train_speed.sync(self.device)
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        train_speed.sync(self.device)
        self.times.append(time.perf_counter() - self._t0)


def run_arm(fast_on: bool, size: str, device: str, dtype, steps: int, out_dir: Path) -> dict:
    """Build a fresh model and trainer, train ``steps`` optimizer steps, return timings."""
    from datasets import Dataset
    from trl import GRPOConfig

    from audsemthinker.model.processor import build_processor
    from audsemthinker.model.tiny import build_tiny_tokenizer
    from audsemthinker.model.unwrap import unwrap
    from audsemthinker.rewards import build_rewards
    from audsemthinker.schemas import GRPOFast
    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer, grpo_trainer_class

    shape = SHAPES[size]
    tokenizer = build_tiny_tokenizer()
    processor = build_processor(tokenizer=tokenizer)
    model, _ = train_speed.build_model(size, device, dtype, "sdpa", tokenizer=tokenizer)
    vocab = unwrap(model, peft=True).config.get_text_config().vocab_size
    seconds = train_speed.SIZES[size]["seconds"]

    fast = GRPOFast() if fast_on else GRPOFast(
        merged_rollouts=False, audio_dedup=False, audio_cache=False, decode_loop=False,
        shared_prompt=False, group_batches=False)
    base = grpo_trainer_class(fast)  # fast=stock: the stock trainer, no fast code at all

    class Trainer(base):
        def _load_clip(self, path):  # random audio, one fixed clip per path
            seed = sum(map(ord, str(path)))
            return np.random.default_rng(seed).normal(0, 0.1, int(16000 * seconds)) \
                .astype(np.float32)

    per_step = shape["prompts"] * shape["group"]
    args = GRPOConfig(
        output_dir=str(out_dir), num_generations=shape["group"],
        per_device_train_batch_size=shape["micro"],
        gradient_accumulation_steps=per_step // shape["micro"], max_steps=steps,
        max_completion_length=shape["new"], temperature=0.9, top_k=50, top_p=1.0, beta=0.01,
        loss_type="grpo", learning_rate=1e-6, num_iterations=1, gradient_checkpointing=False,
        bf16=dtype == torch.bfloat16, use_cpu=device == "cpu", report_to="none",
        save_strategy="no", logging_steps=1, seed=0, disable_dropout=True,
        generation_kwargs={"suppress_tokens": list(range(len(tokenizer), vocab))})
    funcs, weights = build_rewards([
        dict(name="accuracy", mode="option"), dict(name="format", variant="semantic", value=0.5),
        dict(name="length", shape="linear", budget=25, alpha=0.1, delta=0.5)])
    args.reward_weights = weights
    timer = StepTimer(device)
    trainer = Trainer(model=model, reward_funcs=funcs, args=args,
                      train_dataset=Dataset.from_list(rows(shape["prompts"])),
                      processing_class=processor, callbacks=[timer],
                      **({"fast": fast} if base is FastAudioGRPOTrainer else {}))
    for quiet in (PrinterCallback, ProgressCallback):  # this script prints its own lines
        trainer.remove_callback(quiet)
    mem: dict = {}
    with train_speed.peak_memory(device, mem):
        trainer.train()
    logs = [r for r in trainer.state.log_history if "reward" in r]
    result = dict(times=timer.times, peak_gib=mem["peak_gib"],
                  mean_length=statistics.mean(r["completions/mean_length"] for r in logs),
                  fast_off=dict(trainer.fast_off),
                  shared=dict(getattr(trainer, "shared_prompt_stats",
                                      {"passes": 0, "rows": 0, "prompt_forwards": 0})),
                  loop_calls=getattr(trainer, "decode_loop_stats", {"calls": 0})["calls"])
    del trainer, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SHAPES), default=None,
                    help="7b on CUDA, cpu otherwise (default)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per arm")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = args.size or ("7b" if device == "cuda" else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cpu":
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    import tempfile

    import transformers
    import trl

    s = SHAPES[size]
    head = (f"torch {torch.__version__}, transformers {transformers.__version__}, trl "
            f"{trl.__version__}, {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}, "
            f"size {size}, {dtype}; {s['prompts']} prompts x {s['group']} samples x "
            f"{s['new']} new tokens per step")
    print(head, flush=True)
    table_rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, on in (("stock", False), ("ours", True)):
            t0 = time.perf_counter()
            r = run_arm(on, size, device, dtype, args.steps + 1, Path(tmp) / name)
            results[name] = r
            timed = r["times"][1:]  # the first step warms up (and compiles, where compiled)
            print(f"{name}: steps {[round(t, 3) for t in r['times']]} s, mean completion "
                  f"{r['mean_length']:.1f} tokens, off {r['fast_off']}, shared-prompt "
                  f"{r['shared']}, decode-loop calls {r['loop_calls']} "
                  f"({time.perf_counter() - t0:.0f} s with building)", flush=True)
            sec = statistics.median(timed)
            table_rows.append(dict(
                phase=f"GRPO trainer step {s['prompts']}x{s['group']}x{s['new']}",
                path=name, seconds=sec, peak_gib=r["peak_gib"],
                new_tok_per_s=s["prompts"] * s["group"] * r["mean_length"] / sec))
    text = train_speed.table(table_rows)
    print("\n" + head + "\n\n" + text, flush=True)
    result = dict(header=head, rows=table_rows, arms=results, table=text)
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "grpo_step.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(path)
    return result


if __name__ == "__main__":
    main()
