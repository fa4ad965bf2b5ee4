"""Dynamic sampling (``grpo.dynamic_sampling``): groups whose rewards all agree never reach the
loss, refilled rows keep their own clip and gold answer, ranks agree, and with the setting off
(or with nothing to drop) training is exactly what it was."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from test_grpo_alignment import _config, item_of, tone_rows

from audsemthinker.rewards.registry import completion_text, prompt_text
from audsemthinker.schemas import GRPOOptions
from audsemthinker.train.dynamic_sampling import (
    DynamicSampling,
    PromptRefill,
    flat_groups,
    groups_to_draw,
    merge_rows,
    plan_round,
)

G = 4
FLAT_ITEMS = {0, 2, 3}  # prompts whose 4 completions always get the same reward


# --------------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------------
def test_flat_groups_uses_the_weighted_total_and_ignores_unscored_rows():
    nan = math.nan
    rewards = torch.tensor([
        [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0],   # all equal: flat
        [1.0, 0.5], [0.0, 0.5], [1.0, 0.5], [1.0, 0.5],   # accuracy varies
        [1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0],   # 1*1 == 0*1 + 0.5*2: equal totals
        [nan, nan], [1.0, 0.0], [0.0, 0.0], [nan, nan],   # two scored rows that differ
        [nan, nan], [nan, nan], [nan, nan], [1.0, 0.0],   # one scored row: nothing to compare
    ])
    assert flat_groups(rewards, torch.tensor([1.0, 0.5]), G) == [True, False, True, False, True]
    with pytest.raises(ValueError, match="groups of 4"):
        flat_groups(rewards[:6], torch.tensor([1.0, 0.5]), G)


def test_plan_round_fills_each_rank_up_to_its_need_in_order():
    # Two ranks, three groups each; rank 0 holds 1 already, rank 1 none; 2 needed.
    flat = [False, True, False, True, False, False]
    assert plan_round(flat, 2, kept=[1, 0], need=2) == [[0], [1, 2]]
    assert plan_round(flat, 2, kept=[2, 2], need=2) == [[], []]
    assert groups_to_draw(0, 8, 2, 4) == 0
    assert groups_to_draw(1, 8, 2, 4) == 4  # a quarter varied: four fresh groups for one short
    assert groups_to_draw(3, 8, 0, 4) == 4  # nothing varied yet: a full batch
    assert groups_to_draw(2, 4, 4, 4) == 2


def test_merge_rows_pads_prompts_left_and_the_rest_right():
    a = {"prompt_ids": torch.tensor([[5, 6], [7, 8]]), "prompt_mask": torch.ones(2, 2),
         "completion_ids": torch.tensor([[1, 2, 3], [4, 0, 0]]),
         "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(4),
         "input_features": torch.ones(2, 1, 3)}
    b = {"prompt_ids": torch.tensor([[9, 9, 9]]), "prompt_mask": torch.ones(1, 3),
         "completion_ids": torch.tensor([[7]]), "advantages": torch.tensor([1.0]),
         "num_items_in_batch": torch.tensor(1), "input_features": torch.full((1, 1, 5), 2.0)}
    out = merge_rows([(a, [1]), (b, [0])], pad_id=0)
    assert "num_items_in_batch" not in out
    assert out["prompt_ids"].tolist() == [[0, 7, 8], [9, 9, 9]]
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[4, 0, 0], [7, 0, 0]]
    assert out["advantages"].tolist() == [-0.5, 1.0]
    assert out["input_features"][0, 0].tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(NotImplementedError, match="num_images"):
        merge_rows([({**a, "num_images": [1, 1]}, [0])], pad_id=0)


def test_prompt_refill_is_disjoint_across_ranks_and_leaves_the_global_rng_alone():
    data = [{"id": i} for i in range(10)]
    ranks = [PromptRefill(data, seed=3, rank=r, world=2, group_size=2) for r in range(2)]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    draws = [[x["id"] for x in refill.draw(2)] for refill in ranks]
    assert torch.rand(1) == before
    assert all(d[0] == d[1] and d[2] == d[3] for d in draws)  # each prompt G times in a row
    assert not set(draws[0]) & set(draws[1])
    later = [[x["id"] for x in refill.draw(3)] for refill in ranks]  # wraps into a new epoch
    assert len(later[0]) == len(later[1]) == 6


# --------------------------------------------------------------------------------------------
# Trainer runs (tiny model)
# --------------------------------------------------------------------------------------------
def _trainer(tiny_full_dir, tiny_processor, rows, args, rewards, options, lora=False):
    from datasets import Dataset

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora
    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    torch.manual_seed(0)
    model = load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32"))
    if lora:
        model = apply_lora(model, LoraSettings(preset="lm_attn", r=4, alpha=8, dropout=0.0))
    return AudioGRPOTrainer(model=model, reward_funcs=rewards, args=args,
                            train_dataset=Dataset.from_list(rows),
                            processing_class=tiny_processor, options=options)


def _dynamic(max_rounds: int = 3) -> GRPOOptions:
    return GRPOOptions(dynamic_sampling=DynamicSampling(enabled=True, max_rounds=max_rounds))


@pytest.mark.parametrize("setup", [
    dict(lora=True, per_device_train_batch_size=2, gradient_accumulation_steps=4,
         num_iterations=2, max_steps=2, max_rounds=3),
    dict(lora=False, per_device_train_batch_size=4, gradient_accumulation_steps=2,
         num_iterations=1, max_steps=2, max_rounds=0),
], ids=["lora-ga4-iter2-refill", "full-ga2-capped"])
def test_flat_groups_never_reach_the_loss(tmp_path, tiny_full_dir, tiny_processor, setup):
    torch.set_num_threads(1)
    setup = dict(setup)
    lora, max_rounds = setup.pop("lora"), setup.pop("max_rounds")
    rows = tone_rows(tmp_path, 6)
    scored: dict[tuple[int, tuple[int, ...]], float] = {}

    def recording(prompts, completions, completion_ids, answer, id, **kw):  # noqa: A002
        out = []
        for n, (p, ids, a, i) in enumerate(zip(prompts, completion_ids, answer, id)):
            k = item_of(prompt_text(p))
            assert (a, i) == (f"answer-{k}", f"row-{k}"), "scored against another row's answer"
            out.append(1.0 if k in FLAT_ITEMS else float(n % G))  # groups are G rows in a row
            scored[k, tuple(ids)] = out[-1]
        return out

    args = _config(tmp_path, beta=0.0, **setup)
    trainer = _trainer(tiny_full_dir, tiny_processor, rows, args, [recording],
                       _dynamic(max_rounds), lora=lora)
    tok = tiny_processor.tokenizer
    reached: list[tuple[int, float, int]] = []  # (item, advantage, completion tokens in loss)
    real_loss = trainer._compute_loss

    def spy_loss(model, inputs):
        for r in range(inputs["prompt_ids"].size(0)):
            prompt = inputs["prompt_ids"][r][inputs["prompt_mask"][r].bool()]
            k = item_of(tok.decode(prompt))
            ids = inputs["completion_ids"][r][:int(inputs["completion_mask"][r].sum())]
            if int(inputs["completion_mask"][r].sum()):
                assert (k, tuple(ids.tolist())) in scored, "a row lost its completion"
            reached.append((k, float(inputs["advantages"][r]),
                            int(inputs["completion_mask"][r].sum())))
        return real_loss(model, inputs)

    trainer._compute_loss = spy_loss
    trainer.train()

    totals = trainer.dynamic_sampler.totals
    steps = setup["max_steps"]
    per_step = setup["per_device_train_batch_size"] * setup["gradient_accumulation_steps"]
    assert len(reached) == steps * per_step  # full micro-batches on every step
    assert totals["flat_groups"] > 0, "no flat group was ever drawn: the test proves nothing"
    in_loss = [(k, adv) for k, adv, n in reached if n]
    assert in_loss and not {k for k, _ in in_loss} & FLAT_ITEMS
    masked = [(k, adv) for k, adv, n in reached if not n]
    assert all(adv == 0.0 for _, adv in masked)
    if max_rounds:
        assert totals["extra_rounds"] > 0 and totals["masked_groups"] == 0 and not masked
    else:  # no refill allowed: the flat groups stay, masked
        assert totals["extra_rounds"] == 0 and totals["masked_groups"] > 0
        assert {k for k, _ in masked} & FLAT_ITEMS
    assert totals["batches"] == steps // setup["num_iterations"]  # one per generation batch
    logged = [r for r in trainer.state.log_history if "dynamic_sampling/flat_share" in r]
    shares = [r["dynamic_sampling/flat_share"] for r in logged]
    assert shares and all(0 <= x <= 1 for x in shares) and max(shares) > 0


def _varied(completions, **kw) -> list[float]:
    """Position in the group: every group varies, so dynamic sampling has nothing to drop."""
    return [float(i % G) + len(completion_text(c)) % 2 * 0.1 for i, c in enumerate(completions)]


def test_off_and_nothing_to_drop_train_exactly_as_before(tmp_path, tiny_full_dir,
                                                          tiny_processor):
    torch.set_num_threads(1)
    rows = tone_rows(tmp_path, 4)
    runs = {}
    for name, options in (("before", None), ("off", GRPOOptions()), ("on", _dynamic())):
        args = _config(tmp_path / name, beta=0.01, per_device_train_batch_size=4,
                       gradient_accumulation_steps=2, max_steps=2, num_iterations=2)
        trainer = _trainer(tiny_full_dir, tiny_processor, rows, args, [_varied], options,
                           lora=True)
        trainer.train()
        losses = [(r["loss"], r.get("reward")) for r in trainer.state.log_history if "loss" in r]
        weights = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad]
        runs[name] = (losses, weights, trainer)
    base_losses, base_weights, _ = runs["before"]
    assert len(base_losses) == 2
    assert any(not torch.equal(w, torch.zeros_like(w)) for w in base_weights)
    for name in ("off", "on"):
        losses, weights, _ = runs[name]
        assert losses == base_losses, name
        assert all(torch.equal(a, b) for a, b in zip(weights, base_weights)), name
    assert runs["on"][2].dynamic_sampler.totals["extra_rounds"] == 0
    assert runs["off"][2].dynamic_sampler is None
    think = [r for r in runs["off"][2].state.log_history if "completions/no_think" in r]
    assert think  # the statistics ride along without changing the step


# --------------------------------------------------------------------------------------------
# Two DDP ranks
# --------------------------------------------------------------------------------------------
def flat_for_even(completions, id, **kwargs) -> list[float]:  # noqa: A002
    """Constant for rows with an even synthetic number, varied otherwise (imported by the ranks
    as ``_target_: test_grpo_dynamic_sampling.flat_for_even``)."""
    out = []
    for c, i in zip(completions, id):
        even = int(str(i).split("-")[2]) % 2 == 0
        out.append(0.5 if even else len(completion_text(c)) % 7 / 6)
    return out


@pytest.mark.slow
def test_two_ranks_agree_on_what_was_dropped(tmp_path, tiny_full_dir):
    from test_multiprocess import LAUNCH, _digest, _metrics, _reward_calls, _run
    from test_sft import build_synthetic

    steps, batch, gens = 2, 4, 2
    data = build_synthetic(tmp_path / "data", n_train=8, n_test=0)  # no held-out pass
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    _run("grpo.py", LAUNCH, run_dir, tiny_full_dir, data, trace, tmp_path / "launch.log",
         "reward.rewards=[{_target_:test_grpo_dynamic_sampling.flat_for_even}]",
         "grpo.dynamic_sampling.enabled=true", "grpo.dynamic_sampling.max_rounds=2",
         f"train.grpo.max_steps={steps}", "train.grpo.save_strategy=no",
         "train.grpo.logging_steps=1", f"train.grpo.per_device_train_batch_size={batch}",
         f"train.grpo.num_generations={gens}", "train.grpo.max_completion_length=6")
    calls = [_reward_calls(trace, r) for r in range(2)]
    logged = {r["step"]: r for r in _metrics(run_dir) if "dynamic_sampling/flat_share" in r}
    assert sorted(logged) == [1, 2]
    for step in range(steps):
        rounds = [[c for c in rank_calls if c["step"] == step] for rank_calls in calls]
        # Both ranks ran the same rounds, each the same number of rows on both ranks.
        assert [len(c["ids"]) for c in rounds[0]] == [len(c["ids"]) for c in rounds[1]]
        assert len(rounds[0]) == 1 + logged[step + 1]["dynamic_sampling/extra_rounds"]
        groups = Counter()
        flat = 0
        for rank_rounds in rounds:
            for c in rank_rounds:
                for g in range(0, len(c["ids"]), gens):
                    vals = c["values"][g:g + gens]
                    groups[c["ids"][g]] += 1
                    flat += max(vals) - min(vals) < 1e-9
        generated = sum(len(c["ids"]) for r in rounds for c in r) // gens
        # The share the ranks logged is that of the union of both ranks' groups: the same
        # table on both ranks decided what was dropped.
        assert logged[step + 1]["dynamic_sampling/flat_share"] == pytest.approx(flat / generated)
        assert flat > 0
    assert _digest(trace, 0) == _digest(trace, 1) != _digest(trace, 0, "weights_begin")
    report = json.loads((run_dir / "grpo_report.json").read_text())
    assert report["dynamic_sampling"]["batches"] == steps
    assert (run_dir / "grpo_stats.png").exists()
