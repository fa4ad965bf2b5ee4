"""The trainer's shared-prompt log-prob pass gives what TRL's fused-head pass gives.

The reference is TRL 1.16's own per-chunk computation, run on the same rows: the thinker patched
with ``trl.trainer.utils.add_fused_lm_head`` and called as ``GRPOTrainer
._get_per_token_logps_and_entropies`` calls it (``labels`` = completion ids, -100 elsewhere,
``fused_lm_head=True``). Batches come from ``test_prefix_share._batch``: 4 prompts of different
lengths and clips, G=3 completions each, shuffled, one completion all padding.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_prefix_share import PROMPT_CLIPS, G, _batch, _load, _prompt_rows, _spy
from trl.trainer.utils import add_fused_lm_head

from audsemthinker.train.shared_scoring import (
    group_chunks,
    group_shuffle,
    shared_logps_and_entropies,
)


# ---------------------------------------------------------------------------------------------
# group_chunks (milliseconds)
# ---------------------------------------------------------------------------------------------
def test_chunks_hold_whole_groups_in_first_appearance_order():
    inverse = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    chunks = [c.tolist() for c in group_chunks(inverse, max_rows=4)]
    assert chunks == [[0, 2, 5], [1, 4, 3, 6]]
    # a group larger than max_rows is a chunk of its own
    assert [c.tolist() for c in group_chunks(inverse, max_rows=1)] == [[0, 2, 5], [1, 4], [3],
                                                                       [6]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=20), st.integers(1, 8))
def test_chunks_cover_every_row_once_and_respect_the_bound(labels, max_rows):
    # group ids in first-appearance order, as group_rows returns them
    order = list(dict.fromkeys(labels))
    inverse = torch.tensor([order.index(x) for x in labels])
    chunks = group_chunks(inverse, max_rows)
    rows = torch.cat(chunks).tolist()
    assert sorted(rows) == list(range(len(labels)))
    largest = max(labels.count(x) for x in order)
    for chunk in chunks:
        groups = inverse[chunk].unique().tolist()
        assert len(chunk) <= max(max_rows, largest)
        for g in groups:  # whole groups only
            assert (inverse[chunk] == g).sum() == (inverse == g).sum()
    firsts = [int(inverse[c[0]]) for c in chunks]
    assert firsts == sorted(firsts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=24), st.integers(0, 2**31 - 1))
def test_group_shuffle_keeps_groups_together_and_rows_in_unison(prompts, seed):
    torch.manual_seed(seed)
    n = len(prompts)
    ids = torch.tensor([[p, p + 1] for p in prompts])
    feats = torch.tensor([[[float(p % 2)]] for p in prompts])
    batch = {"prompt_ids": ids, "input_features": feats, "row": torch.arange(n),
             "texts": [f"row {i}" for i in range(n)], "old_per_token_logps": None,
             "num_items_in_batch": torch.tensor(7)}
    out = group_shuffle(batch, ("prompt_ids", "input_features"))
    rows = out["row"].tolist()
    assert sorted(rows) == list(range(n))  # a permutation
    assert out["texts"] == [f"row {i}" for i in rows]  # every value in unison
    assert torch.equal(out["prompt_ids"], ids[rows]) and torch.equal(out["input_features"],
                                                                      feats[rows])
    assert out["old_per_token_logps"] is None and int(out["num_items_in_batch"]) == 7
    seen = [prompts[r] for r in rows]  # each prompt's rows are contiguous, in their own order
    starts = [i for i in range(n) if i == 0 or seen[i] != seen[i - 1]]
    assert len(starts) == len(set(prompts))
    for p in set(prompts):
        assert [r for r in rows if prompts[r] == p] == [i for i in range(n) if prompts[i] == p]


def test_group_shuffle_orders_groups_at_random():
    batch = {"prompt_ids": torch.arange(6).repeat_interleave(2)[:, None], "row": torch.arange(12)}
    orders = set()
    for seed in range(20):
        torch.manual_seed(seed)
        orders.add(tuple(group_shuffle(batch, ("prompt_ids",))["row"].tolist()[::2]))
    assert len(orders) > 10


# ---------------------------------------------------------------------------------------------
# Against TRL's fused-head pass on the tiny thinker
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return _prompt_rows(tmp_path_factory.mktemp("clips"), PROMPT_CLIPS)


def _trl_pass(model, input_ids, attention_mask, logits_to_keep, input_features,
              feature_attention_mask):
    """What TRL 1.16's ``_get_per_token_logps_and_entropies`` computes for one chunk."""
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-logits_to_keep] = -100
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                fused_lm_head=True, input_features=input_features,
                feature_attention_mask=feature_attention_mask)
    return out.log_probs[:, -logits_to_keep:], out.entropy[:, -logits_to_keep:]


def _fused(model_dir, temperature, lora="lm_attn"):
    model = _load(model_dir, lora)
    add_fused_lm_head(model.get_base_model(), temperature=temperature,
                      outputs=("log_probs", "entropy"))
    return model


@pytest.mark.parametrize("max_rows, calls", [(2, 2 * len(PROMPT_CLIPS)), (6, 4)])
def test_logps_and_entropies_equal_trl_with_one_forward_per_prompt(
        tiny_full_dir, tiny_processor, prompts, max_rows, calls):
    temperature = 0.7
    model = _fused(tiny_full_dir, temperature)
    inputs, _ = _batch(tiny_processor, prompts)
    c = inputs["logits_to_keep"]
    seen = _spy(model.get_base_model())
    with torch.no_grad():
        logps, ent, stats = shared_logps_and_entropies(
            model, inputs["input_ids"], inputs["attention_mask"], c, temperature=temperature,
            max_rows=max_rows, compute_entropy=True, input_features=inputs["input_features"],
            feature_attention_mask=inputs["feature_attention_mask"])
        shared_calls = list(seen)
        want_lp, want_ent = _trl_pass(model, **inputs)
    # each prompt forward runs its distinct prompts once; max_rows groups whole prompts
    assert len(shared_calls) == calls
    assert sum(n for n, _ in shared_calls[0::2]) == len(PROMPT_CLIPS)
    assert stats == {"rows": len(PROMPT_CLIPS) * G, "prompt_forwards": len(PROMPT_CLIPS)}
    pad = inputs["attention_mask"][:, -c:] == 0
    assert pad.any() and (logps[pad] == 0).all() and (ent[pad] == 0).all()
    torch.testing.assert_close(logps, want_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, want_ent, atol=1e-5, rtol=1e-5)


def test_gradients_equal_trl(tiny_full_dir, tiny_processor, prompts):
    model = _fused(tiny_full_dir, 1.0, lora="lm_attn+audio_proj")
    inputs, _ = _batch(tiny_processor, prompts, seed=1)
    weights = torch.randn(inputs["input_ids"].shape[0], inputs["logits_to_keep"],
                          generator=torch.Generator().manual_seed(3))

    def grads(fn):
        model.zero_grad()
        lp, ent = fn()
        ((lp * weights).sum() + 0.1 * ent.sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    got = grads(lambda: shared_logps_and_entropies(
        model, inputs["input_ids"], inputs["attention_mask"], inputs["logits_to_keep"],
        temperature=1.0, max_rows=4, compute_entropy=True,
        input_features=inputs["input_features"],
        feature_attention_mask=inputs["feature_attention_mask"])[:2])
    want = grads(lambda: _trl_pass(model, **inputs))
    assert any("audio_tower" in n for n in want) and got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)


def test_nothing_to_share_returns_none(tiny_full_dir, tiny_processor, prompts):
    model = _fused(tiny_full_dir, 1.0)
    inputs, prompt_of = _batch(tiny_processor, prompts)
    first = [prompt_of.tolist().index(p) for p in range(len(PROMPT_CLIPS))]  # one row per prompt
    with torch.no_grad():
        assert shared_logps_and_entropies(
            model, inputs["input_ids"][first], inputs["attention_mask"][first],
            inputs["logits_to_keep"], temperature=1.0, max_rows=8, compute_entropy=False,
            input_features=inputs["input_features"][first],
            feature_attention_mask=inputs["feature_attention_mask"][first]) is None
