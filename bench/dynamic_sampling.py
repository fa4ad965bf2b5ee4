"""GRPO with and without dynamic sampling on the synthetic task: held-out accuracy per
optimizer step and per generated token, over seeds.

    python bench/dynamic_sampling.py              # 60 steps, eval every 15, seeds 0 1 2
    python bench/dynamic_sampling.py --steps 30 --eval-every 10 --seeds 0 1
    OUT=/some/dir python bench/dynamic_sampling.py    # also writes dynamic_sampling.json

The start is the GRPO learning test's (``tests/test_grpo_learning.py``): a deterministic partial
SFT of the tiny model that learns the answer format and the pitch task but not noise vs tone, so
held-out accuracy starts near 75% and GRPO (accuracy reward only, 8 samples per prompt, 4
prompts per step) can gain by listening. Many groups are then all right (pitch) or all wrong:
exactly the case dynamic sampling is for. Both arms start from the same checkpoint with the same
seeds; the "on" arm refills each step's 4 prompts from fresh ones (``grpo.dynamic_sampling``,
at most 3 extra rounds). Held-out accuracy is greedy, on the 128 validation rows, every
``--eval-every`` optimizer steps; tokens are completion tokens generated for training.
CPU only (the tiny model); two runs at a time in separate processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the learning test's starting point and config code

ARMS = {"off": "grpo.dynamic_sampling.enabled=false", "on": "grpo.dynamic_sampling.enabled=true"}


def run_arm(job: dict) -> dict:
    """One GRPO run; held-out accuracy and generated tokens at every evaluation step."""
    import torch
    from test_grpo_learning import ACCURACY_ONLY
    from test_sft import compose_sft
    from transformers import TrainerCallback

    from audsemthinker.train.grpo import build_grpo_trainer
    from audsemthinker.train.sft import heldout_accuracy

    torch.set_num_threads(1)
    cfg = compose_sft(Path(job["out"]), job["model"], job["data"], [
        *job["common"], f"seed={job['seed']}", f"grpo_init={job['init']}", ACCURACY_ONLY,
        "train.grpo.save_strategy=no", f"train.grpo.max_steps={job['steps']}",
        ARMS[job["arm"]]])
    trainer, info = build_grpo_trainer(cfg)
    rows = info["rows"]["valid"]
    points = []

    def evaluate(step: int) -> None:
        acc = heldout_accuracy(trainer.model, info["processor"], rows, cfg)["accuracy"]
        points.append({"step": step, "tokens": trainer.round_recorder.completion_tokens,
                       "accuracy": acc})

    class Eval(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step % job["eval_every"] == 0 or state.global_step == job["steps"]:
                evaluate(state.global_step)

    trainer.add_callback(Eval())
    t0 = time.perf_counter()
    evaluate(0)
    trainer.train()
    logs = [r for r in trainer.state.log_history if "frac_reward_zero_std" in r]
    return {"arm": job["arm"], "seed": job["seed"], "points": points,
            "seconds": round(time.perf_counter() - t0, 1),
            "zero_std_share": statistics.mean(r["frac_reward_zero_std"] for r in logs),
            "dynamic_sampling": trainer.dynamic_sampler.totals if trainer.dynamic_sampler
            else None}


def table(runs: list[dict]) -> str:
    """Markdown: per arm and evaluation step, accuracy mean / sd / per seed and tokens."""
    lines = ["| arm | step | completion tokens (mean) | held-out accuracy % mean | sd | "
             "per seed |", "|---|---|---|---|---|---|"]
    for arm in ARMS:
        mine = sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
        for i, point in enumerate(mine[0]["points"]):
            accs = [r["points"][i]["accuracy"] for r in mine]
            tokens = statistics.mean(r["points"][i]["tokens"] for r in mine)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            lines.append(f"| {arm} | {point['step']} | {tokens:,.0f} | "
                         f"{statistics.mean(accs):.1f} | {sd:.1f} | "
                         f"{' / '.join(f'{a:.1f}' for a in accs)} |")
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        final = [r["points"][-1] for r in mine]
        gain = [(p["accuracy"] - r["points"][0]["accuracy"]) / (p["tokens"] / 1e5)
                for r, p in zip(mine, final)]
        lines.append(f"\n{arm}: gain per 100k completion tokens "
                     f"{statistics.mean(gain):.2f} points (per seed "
                     f"{' / '.join(f'{g:.2f}' for g in gain)}); zero-variance group share "
                     f"{statistics.mean(r['zero_std_share'] for r in mine):.2f}; "
                     f"{statistics.mean(r['seconds'] for r in mine):.0f} s per run")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    ap.add_argument("--eval-every", type=int, default=15, help="held-out accuracy every N steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2, help="runs at a time")
    args = ap.parse_args(argv)
    import torch
    from test_grpo_learning import SFT_LR, SFT_STEPS, _rewrite, partial_sft

    from audsemthinker.model.tiny import write_tiny_checkpoint

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = write_tiny_checkpoint(tmp / "tiny", layout="full")
        common = ["lora=none", "eval.batch_size=32", "eval.decoding.max_new_tokens=40"]
        data, sft = partial_sft(tmp, model, _rewrite, common, SFT_STEPS, SFT_LR,
                                tasks=["pitch", "noise"], variant="simple", n_train=256,
                                n_valid=128)
        print(f"partial SFT: held-out {sft['heldout']['accuracy']:.1f}% "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        jobs = [dict(arm=arm, seed=seed, steps=args.steps, eval_every=args.eval_every,
                     out=str(tmp / f"{arm}{seed}"), model=str(model), data=str(data),
                     init=str(tmp / "sft" / "final"), common=common)
                for seed in args.seeds for arm in ARMS]
        with ProcessPoolExecutor(args.workers,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(run_arm, jobs))
    text = table(runs)
    head = (f"dynamic sampling on the synthetic task: {args.steps} steps, eval every "
            f"{args.eval_every}, seeds {args.seeds}, start {sft['heldout']['accuracy']:.1f}%, "
            f"{time.perf_counter() - t0:.0f} s in all")
    print("\n" + head + "\n\n" + text, flush=True)
    result = {"header": head, "table": text, "runs": runs}
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "dynamic_sampling.json"
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(result, indent=1))
        tmp_path.replace(path)
    return result


if __name__ == "__main__":
    main()
