"""Two CPU processes (``accelerate launch``, ``configs/accelerate/cpu2.yaml``) train one run as
data-parallel ranks.

SFT: each rank sees its own rows (none twice), both end with the same weights, and rank 0's
saved adapter loads in a single process to exactly those weights. GRPO: each rank generates
for its own prompts, TRL gathers every rank's rewards before the group advantages and the
logged means, and the ranks end with the same weights. Resume: a checkpoint written by two
ranks is continued by one plain ``python`` process.

``accelerate launch --cpu --num_processes 2`` starts only ONE process (accelerate leaves
multi-CPU runs to mpirun); ``cpu2.yaml`` asks for accelerate's multi-GPU launcher (torchrun
underneath) and the scripts' ``use_cpu=true`` puts the ranks on CPU over gloo.
The ranks' row ids, rewards and weight hashes come from the ``AUDSEM_LOG_BATCH_IDS`` debug
hook (``audsemthinker/train/sft.py`` and ``grpo.traced_reward``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from test_sft import ROOT, build_synthetic

N_TRAIN, BATCH, STEPS, RANKS = 16, 4, 2, 2  # SFT: exactly one epoch over both ranks
GRPO_TRAIN, GRPO_GENS = 8, 2  # GRPO: 2 prompts x 2 completions per rank per step, one epoch
TEXT_WEIGHT = 0.5
LAUNCH = (str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
          str(ROOT / "configs" / "accelerate" / "cpu2.yaml"))


def text_length(completions, **kwargs) -> list[float]:
    """A reward that varies between random completions (the real ones are all 0 on the tiny
    model), imported by the GRPO ranks as ``_target_: test_multiprocess.text_length``."""
    from audsemthinker.rewards.registry import completion_text

    return [len(completion_text(c)) % 7 / 6 for c in completions]


def _run(script: str, launcher, run_dir: Path, model_dir, data_dir, trace: Path, log: Path,
         *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "AUDSEM_LOG_BATCH_IDS": str(trace),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [*launcher, str(ROOT / "scripts" / script), f"hydra.run.dir={run_dir}",
           f"model.name_or_path={model_dir}", "model.tiny=false", f"data.out_dir={data_dir}",
           "lora=tiny", "logging.wandb=off", "eval.decoding.max_new_tokens=4",
           "eval.batch_size=2", *extra]
    with log.open("w") as out:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            timeout=300).returncode
    assert rc == 0, f"{script} exited with {rc}:\n{log.read_text()[-3000:]}"


def _sft(run_dir, model_dir, data_dir, trace, log, *extra, launcher=LAUNCH) -> None:
    _run("sft.py", launcher, run_dir, model_dir, data_dir, trace, log,
         "train.sft.logging_steps=1", f"train.sft.per_device_train_batch_size={BATCH}",
         "train.sft.use_cpu=true", *extra)


def _rows_seen(trace: Path, rank: int) -> list[int]:
    text = Path(f"{trace}.rank{rank}").read_text()
    return [int(x) for line in text.splitlines() for x in line.split()]


def _digest(trace: Path, rank: int, suffix: str = "weights") -> str:
    return Path(f"{trace}.rank{rank}.{suffix}").read_text().strip()


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _adapter_digest(model_dir, adapter_dir: Path):
    """Digest of an adapter folder loaded in this one process (plus its lora_B tensors)."""
    import torch
    from peft import PeftModel

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.train.sft import trainable_digest

    torch.manual_seed(0)
    base = load_thinker(ModelConfig(name_or_path=str(model_dir), dtype="float32"))
    loaded = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    return trainable_digest(loaded), [p for n, p in loaded.named_parameters() if "lora_B" in n]


@pytest.fixture(scope="module")
def sft_two_ranks(tmp_path_factory, tiny_full_dir):
    """One two-rank SFT run of STEPS steps with a checkpoint at the end: (data, run, trace)."""
    tmp = tmp_path_factory.mktemp("sft_two_ranks")
    data = build_synthetic(tmp / "data", n_train=N_TRAIN, n_test=2)
    run_dir, trace = tmp / "run", tmp / "trace"
    _sft(run_dir, tiny_full_dir, data, trace, tmp / "launch.log",
         f"train.sft.max_steps={STEPS}", f"train.sft.save_steps={STEPS}")
    return data, run_dir, trace


@pytest.mark.slow
def test_two_cpu_ranks_split_the_data_and_agree_on_weights(sft_two_ranks, tiny_full_dir):
    data, run_dir, trace = sft_two_ranks

    # (a) each rank collated STEPS batches of its own rows; together they cover the epoch once.
    seen = [_rows_seen(trace, r) for r in range(RANKS)]
    assert [len(s) for s in seen] == [STEPS * BATCH] * RANKS
    assert not set(seen[0]) & set(seen[1]), f"rows trained on both ranks: {seen}"
    assert sorted(seen[0] + seen[1]) == list(range(N_TRAIN))
    report = json.loads((run_dir / "sft_report.json").read_text())
    assert report["global_step"] == STEPS
    epochs = [r["epoch"] for r in _metrics(run_dir) if "loss" in r]
    assert epochs == [0.5, 1.0]  # a global batch is RANKS * BATCH rows

    # (c) DDP kept the trainable weights identical on both ranks.
    digests = [_digest(trace, r) for r in range(RANKS)]
    assert digests[0] == digests[1]

    # (b) rank 0's saved adapter, loaded in this one process, holds exactly those weights.
    digest, lora_b = _adapter_digest(tiny_full_dir, run_dir / "final")
    assert digest == digests[0]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "adapter never trained"


def _reward_calls(trace: Path, rank: int) -> list[dict]:
    return [json.loads(x) for x in Path(f"{trace}.rank{rank}.rewards").read_text().splitlines()]


def _mean(values) -> float:
    return sum(values) / len(values)


@pytest.mark.slow
def test_two_cpu_ranks_shard_grpo_generation_and_gather_rewards(tmp_path, tiny_full_dir):
    data = build_synthetic(tmp_path / "data", n_train=GRPO_TRAIN, n_test=2)
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    rewards = f"[{{name:accuracy}},{{_target_:test_multiprocess.text_length,weight:{TEXT_WEIGHT}}}]"
    _run("grpo.py", LAUNCH, run_dir, tiny_full_dir, data, trace, tmp_path / "launch.log",
         f"reward.rewards={rewards}", f"train.grpo.max_steps={STEPS}",
         f"train.grpo.save_steps={STEPS}", "train.grpo.logging_steps=1",
         f"train.grpo.per_device_train_batch_size={BATCH}",
         f"train.grpo.num_generations={GRPO_GENS}", "train.grpo.max_completion_length=6")
    calls = [_reward_calls(trace, r) for r in range(RANKS)]

    # (a) one call per reward per step on each rank, for BATCH completions of that rank's own
    # prompts (BATCH / GRPO_GENS prompts, each GRPO_GENS times); the ranks' prompts are
    # disjoint and over the run they cover every training row once (one epoch).
    train_ids = [json.loads(x)["id"] for x in (data / "train.jsonl").read_text().splitlines()]
    assert len(train_ids) == GRPO_TRAIN == len(set(train_ids))
    for rank_calls in calls:
        assert [(c["step"], c["reward"]) for c in rank_calls] == \
            [(s, name) for s in range(STEPS) for name in ("accuracy", "text_length")]
    ids = {(r, c["step"]): c["ids"] for r in range(RANKS) for c in calls[r]}
    for key, got in ids.items():
        assert len(got) == BATCH and set(Counter(got).values()) == {GRPO_GENS}, (key, got)
    for step in range(STEPS):
        assert not set(ids[0, step]) & set(ids[1, step]), f"prompt on both ranks at {step}"
    assert Counter(i for got in ids.values() for i in got) == \
        {i: GRPO_GENS for i in train_ids}  # every row, GRPO_GENS completions each

    # (b) the means TRL logs on rank 0 are over both ranks' completions: rewards were gathered.
    logged = {r["step"]: r for r in _metrics(run_dir) if "reward" in r}
    assert sorted(logged) == list(range(1, STEPS + 1))
    values = {(c["reward"], c["step"]): [] for c in calls[0]}
    for rank_calls in calls:
        for c in rank_calls:
            values[c["reward"], c["step"]] += c["values"]
    for step in range(STEPS):
        rec = logged[step + 1]
        acc, text = values["accuracy", step], values["text_length", step]
        assert len(acc) == len(text) == RANKS * BATCH
        assert rec["rewards/accuracy/mean"] == pytest.approx(_mean(acc), abs=1e-6)
        assert rec["rewards/text_length/mean"] == pytest.approx(_mean(text), abs=1e-6)
        total = [a + TEXT_WEIGHT * t for a, t in zip(acc, text)]
        assert rec["reward"] == pytest.approx(_mean(total), abs=1e-6)
        assert rec["reward_std"] == pytest.approx(statistics.stdev(total), abs=1e-6)
        # Groups (a prompt's GRPO_GENS completions) whose total reward does not vary: TRL
        # computes it from the same per-group std as the advantages, over all ranks' groups.
        groups = {}
        for r in range(RANKS):
            call = [c for c in calls[r] if c["step"] == step]
            for k, row in enumerate(call[0]["ids"]):
                groups.setdefault((r, row), []).append(
                    call[0]["values"][k] + TEXT_WEIGHT * call[1]["values"][k])
        assert len(groups) == RANKS * BATCH // GRPO_GENS
        flat = sum(max(g) - min(g) < 1e-9 for g in groups.values()) / len(groups)
        assert rec["frac_reward_zero_std"] == pytest.approx(flat)
    rank0_only = [_mean(next(c["values"] for c in calls[0]
                             if c["step"] == s and c["reward"] == "text_length"))
                  for s in range(STEPS)]
    assert any(abs(m - logged[s + 1]["rewards/text_length/mean"]) > 1e-3
               for s, m in enumerate(rank0_only)), "rank 0 alone gives the same means"

    # (c) both ranks end with the same trainable weights, and they moved.
    digests = [_digest(trace, r) for r in range(RANKS)]
    assert digests[0] == digests[1] != _digest(trace, 0, "weights_begin")

    # (d) the checkpoint and the final adapter load in this one process to rank 0's weights.
    for folder in (f"checkpoint-{STEPS}", "final"):
        assert _adapter_digest(tiny_full_dir, run_dir / folder)[0] == digests[0], folder


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_in_one_process(sft_two_ranks, tmp_path, tiny_full_dir):
    """A DDP checkpoint written by two ranks continues in one plain ``python`` process.

    Allowed: a DDP checkpoint holds one full copy of the weights and optimizer state (rank 0
    saves; ``rng_state_<rank>.pth`` per rank), so it resumes on any process count. A count other
    than the writer's loses only RNG reproducibility (Trainer._load_rng_state looks for
    ``rng_state.pth`` alone and logs "Didn't find an RNG file") and the data position: the
    resumed run skips ``global_step`` of *its own* batches, not the rows the old ranks saw, and
    recomputes the epoch from its own batch (here 1.0 after step 2, then 0.75 at step 3).
    ZeRO and FSDP state is the engine's business: Trainer loads it after ``accelerator.prepare``
    (``deepspeed_load_checkpoint`` / accelerate's ``load_fsdp_model``). DeepSpeed ZeRO writes
    per-rank optimizer partitions that reload on the same world size only, unless converted
    with ``ds_to_universal.py`` (DeepSpeed Universal Checkpointing,
    github.com/deepspeedai/DeepSpeed/blob/master/blogs/deepspeed-ucp/README.md). FSDP
    ``FULL_STATE_DICT`` loads anywhere; ``SHARDED_STATE_DICT`` is saved through
    ``torch.distributed.checkpoint``, which "handles load-time resharding" (PyTorch DCP docs);
    ``LOCAL_STATE_DICT`` or accelerate's ``use_dcp=False`` write per-rank files that need the
    same count. None of those is exercised here (CPU, no DeepSpeed).
    """
    data, two_rank_run, first = sft_two_ranks
    run_dir, second = tmp_path / "run", tmp_path / "one"
    shutil.copytree(two_rank_run, run_dir)  # the two-rank test reads the original
    ckpt = run_dir / f"checkpoint-{STEPS}"
    assert (ckpt / "trainer_state.json").exists() and (ckpt / "optimizer.pt").exists()
    _sft(run_dir, tiny_full_dir, data, second, tmp_path / "python.log",
         f"train.sft.max_steps={2 * STEPS}", f"train.sft.save_steps={STEPS}", "resume=auto",
         launcher=(sys.executable,))

    report = json.loads((run_dir / "sft_report.json").read_text())
    assert report["resumed_from"] == str(ckpt) and report["global_step"] == 2 * STEPS
    # The one process trained STEPS more batches of its own size, on rank 0 only.
    assert len(_rows_seen(second, 0)) == STEPS * BATCH
    assert not Path(f"{second}.rank1").exists()
    # The loss log continues: the two ranks' steps, then the single process's.
    logged = [(r["step"], r["epoch"]) for r in _metrics(run_dir) if "loss" in r]
    assert logged == [(1, 0.5), (2, 1.0), (3, 0.75), (4, 1.0)]  # epochs: see the docstring
    # It started from the checkpoint's weights: those both ranks ended with, and those the
    # checkpoint folder loads to in this process; then it trained on.
    saved, _ = _adapter_digest(tiny_full_dir, ckpt)
    assert _digest(first, 0) == _digest(first, 1) == saved == _digest(second, 0, "weights_begin")
    assert _digest(second, 0) != saved
    assert _adapter_digest(tiny_full_dir, run_dir / "final")[0] == _digest(second, 0)
