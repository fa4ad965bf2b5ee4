"""One prompt forward per distinct prompt gives the stock per-token log-probs.

Inputs are built as GRPO builds them: prompts rendered by ``AudioCollator(prompt_only=True)``
(left padding, one clip per row, prompts and clips of different lengths), G completions per
prompt with right padding, rows shuffled so a prompt's rows are not adjacent. The reference is
the stock computation: the thinker's full forward on every row, ``logits[:, -C-1:-1] / T``,
log-softmax, gather.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audsemthinker import format as fmt
from audsemthinker.fast.prefix_share import group_rows, shared_prompt_logps
from audsemthinker.model.tokens import ADDED_TOKENS

SR = 16000
G = 3


# ---------------------------------------------------------------------------------------------
# group_rows (milliseconds)
# ---------------------------------------------------------------------------------------------
def test_group_rows_joins_non_adjacent_equal_rows_in_order_of_first_appearance():
    ids = torch.tensor([[5, 6], [1, 2], [5, 6], [1, 2], [9, 9]])
    first, inverse = group_rows(ids, torch.ones_like(ids))
    assert first.tolist() == [0, 1, 4]
    assert inverse.tolist() == [0, 1, 0, 1, 2]


def test_group_rows_keeps_same_text_with_different_clips_apart():
    ids = torch.tensor([[5, 6]] * 3)
    feats = torch.zeros(3, 2, 4)
    feats[1, 1, 3] = 1e-30  # one value differs in row 1
    first, inverse = group_rows(ids, torch.ones_like(ids), feats,
                                torch.ones(3, 4, dtype=torch.long))
    assert inverse.tolist() == [0, 1, 0]
    assert first.tolist() == [0, 1]


def test_group_rows_compares_features_bit_for_bit_and_masks_too():
    ids = torch.tensor([[5, 6]] * 2)
    feats = torch.tensor([[[0.0]], [[-0.0]]])  # equal as floats, different bits
    _, inverse = group_rows(ids, torch.ones_like(ids), feats, torch.ones(2, 1, dtype=torch.long))
    assert inverse.tolist() == [0, 1]
    mask = torch.tensor([[0, 1], [1, 1]])  # same ids, different padding
    _, inverse = group_rows(ids, mask)
    assert inverse.tolist() == [0, 1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1)),
                min_size=1, max_size=12))
def test_group_rows_merges_exactly_the_rows_equal_in_every_part(rows):
    ids = torch.tensor([[a, b] for a, b, _ in rows])
    feats = torch.tensor([[[float(c)]] for _, _, c in rows])
    first, inverse = group_rows(ids, torch.ones_like(ids), feats,
                                torch.ones(len(rows), 1, dtype=torch.long))
    for i in range(len(rows)):
        assert int(first[inverse[i]]) == rows.index(rows[i])
        for j in range(len(rows)):
            assert bool(inverse[i] == inverse[j]) == (rows[i] == rows[j])


# ---------------------------------------------------------------------------------------------
# The tiny thinker
# ---------------------------------------------------------------------------------------------
def _load(model_dir, lora: str | None = None):
    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.lora import LoraSettings, apply_lora

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_thinker(ModelConfig(name_or_path=str(model_dir), dtype="float32"))
    if lora is None:
        return model
    model = apply_lora(model, LoraSettings(preset=lora, r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # random B matrices, so the adapter changes the numbers
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def _prompt_rows(folder, specs: list[tuple[float, float, str]]) -> list[dict]:
    """One GRPO row per (pitch Hz, seconds, question) spec; clips written under ``folder``."""
    rows = []
    for k, (hz, seconds, question) in enumerate(specs):
        t = np.arange(int(SR * seconds)) / SR
        path = folder / f"clip{k}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
        rows.append({"id": f"p{k}", "audio": str(path), "prompt": [
            {"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "audio", "audio": str(path)},
                                         {"type": "text", "text": question}]}]})
    return rows


PROMPT_CLIPS = [(220, 0.5, "what?"), (440, 0.9, "which instrument plays the long melody here?"),
         (330, 0.3, "and now?"), (660, 0.7, "what?")]


def _batch(processor, rows, seed: int = 0, completion_len: int = 6):
    """Prompt+completion rows as TRL builds them, G per prompt, shuffled.

    Returns (inputs, prompt_of_row): inputs for shared_prompt_logps.
    """
    from audsemthinker.data.collate import AudioCollator

    enc = AudioCollator(processor, prompt_only=True)(rows)
    gen = torch.Generator().manual_seed(seed)
    tok = processor.tokenizer
    top = min(tok.convert_tokens_to_ids(t) for t in ADDED_TOKENS)  # text ids lie below
    n = len(rows) * G
    order = torch.randperm(n, generator=gen)
    prompt_of = torch.arange(len(rows)).repeat_interleave(G)[order]
    completion = torch.randint(0, top, (n, completion_len), generator=gen)
    lengths = torch.randint(1, completion_len + 1, (n,), generator=gen)
    lengths[1] = 0  # a row whose completion is all padding
    lengths[2] = completion_len  # and one with none
    cmask = (torch.arange(completion_len) < lengths[:, None]).long()
    completion = completion.masked_fill(cmask == 0, tok.pad_token_id)
    inputs = dict(
        input_ids=torch.cat([enc["input_ids"][prompt_of], completion], dim=1),
        attention_mask=torch.cat([enc["attention_mask"][prompt_of], cmask], dim=1),
        logits_to_keep=completion_len,
        input_features=enc["input_features"][prompt_of],
        feature_attention_mask=enc["feature_attention_mask"][prompt_of])
    return inputs, prompt_of


def _stock(model, input_ids, attention_mask, logits_to_keep, input_features,
           feature_attention_mask, temperature=1.0):
    out = model(input_ids=input_ids, attention_mask=attention_mask, input_features=input_features,
                feature_attention_mask=feature_attention_mask)
    logits = out.logits[:, -logits_to_keep - 1:-1] / temperature
    ids = input_ids[:, -logits_to_keep:]
    return logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _spy(thinker) -> list[tuple[int, ...]]:
    """Shapes of the input_ids the backbone (thinker.model) receives, call by call."""
    seen: list[tuple[int, ...]] = []
    thinker.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    return seen


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, tiny_processor):
    return _prompt_rows(tmp_path_factory.mktemp("clips"), PROMPT_CLIPS)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logps_equal_stock_and_each_prompt_runs_once(tiny_full_dir, tiny_processor, prompts,
                                                     temperature):
    model = _load(tiny_full_dir)
    inputs, prompt_of = _batch(tiny_processor, prompts)
    assert len(set(inputs["attention_mask"][:, :-6].sum(1).tolist())) > 1  # prompts differ
    assert prompt_of[:G].unique().numel() > 1  # a prompt's rows are not adjacent
    seen = _spy(model)
    with torch.no_grad():
        got = shared_prompt_logps(model, **inputs, temperature=temperature)
        calls = list(seen)
        want = _stock(model, **inputs, temperature=temperature)
    width = inputs["input_ids"].shape[1] - 6
    assert calls == [(len(PROMPT_CLIPS), width), (len(PROMPT_CLIPS) * G, 6)]
    assert got.shape == (len(PROMPT_CLIPS) * G, 6)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_same_text_different_clips_are_not_merged(tiny_full_dir, tiny_processor, tmp_path):
    rows = _prompt_rows(tmp_path, [(220, 0.5, "what?"), (880, 0.5, "what?")])
    model = _load(tiny_full_dir)
    inputs, prompt_of = _batch(tiny_processor, rows, seed=1)
    a, b = int((prompt_of == 0).nonzero()[0]), int((prompt_of == 1).nonzero()[0])
    assert torch.equal(inputs["input_ids"][a, :-6], inputs["input_ids"][b, :-6])  # same text
    seen = _spy(model)
    with torch.no_grad():
        got = shared_prompt_logps(model, **inputs)
        assert seen[0][0] == 2  # two distinct prompts although their ids are equal
        want = _stock(model, **inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["lm_attn+audio_proj", "none"])
def test_gradients_equal_stock(tiny_full_dir, tiny_processor, prompts, preset):
    model = _load(tiny_full_dir, preset)
    model.train()
    inputs, _ = _batch(tiny_processor, prompts[:3], seed=2)
    weights = torch.randn(inputs["input_ids"].shape[0], 6,
                          generator=torch.Generator().manual_seed(3))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def grads(fn):
        model.zero_grad(set_to_none=True)
        logps = fn(model, **inputs, temperature=0.9)
        (logps * weights).sum().backward()
        return logps.detach(), {n: p.grad.clone() for n, p in params.items()
                                if p.grad is not None}

    got, got_grads = grads(shared_prompt_logps)
    want, want_grads = grads(_stock)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    assert any("audio_tower" in n for n in want_grads)  # the audio path is trained and checked
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=1e-5, rtol=1e-4,
                                   msg=name)


def test_reference_pass_with_the_adapter_disabled_equals_the_base(tiny_full_dir, tiny_processor,
                                                                 prompts):
    model = _load(tiny_full_dir, "lm_attn")
    base = _load(tiny_full_dir)
    inputs, _ = _batch(tiny_processor, prompts[:2], seed=4)
    with torch.no_grad(), model.disable_adapter():
        got = shared_prompt_logps(model, **inputs)
    with torch.no_grad():
        want = _stock(base, **inputs)
        adapted = shared_prompt_logps(model, **inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (adapted - want).abs().max() > 1e-3  # the adapter does change the numbers


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------
def test_gradient_checkpointing_is_refused_only_when_it_would_drop_the_cache(
        tiny_full_dir, tiny_processor, prompts):
    model = _load(tiny_full_dir)
    model.gradient_checkpointing_enable()
    model.train()
    inputs, _ = _batch(tiny_processor, prompts[:2], seed=5)
    with pytest.raises(NotImplementedError, match="gradient checkpointing"):
        shared_prompt_logps(model, **inputs)
    with torch.no_grad():  # nothing is checkpointed without gradients: the cache is kept
        torch.testing.assert_close(shared_prompt_logps(model, **inputs), _stock(model, **inputs),
                                   atol=1e-5, rtol=1e-5)


def test_bad_inputs_and_models_are_refused(tiny_full_dir, tiny_processor, prompts):
    model = _load(tiny_full_dir)
    inputs, _ = _batch(tiny_processor, prompts[:2], seed=6)
    with pytest.raises(NotImplementedError, match="Qwen2_5OmniThinkerForConditionalGeneration"):
        shared_prompt_logps(torch.nn.Linear(2, 2), **inputs)
    bad = dict(inputs, input_ids=inputs["input_ids"].clone())
    bad["input_ids"][0, -6] = model.config.audio_token_id
    bad["attention_mask"] = bad["attention_mask"].clone()
    bad["attention_mask"][0, -6] = 1
    with pytest.raises(ValueError, match="audio placeholder"):
        shared_prompt_logps(model, **bad)
    bad["input_ids"][0, -6] = model.config.image_token_id
    with pytest.raises(NotImplementedError, match="images and video"):
        shared_prompt_logps(model, **bad)
    with pytest.raises(ValueError, match="one clip per row"):
        shared_prompt_logps(model, **dict(inputs, input_features=inputs["input_features"][:1]))
    with pytest.raises(ValueError, match="logits_to_keep"):
        shared_prompt_logps(model, **dict(inputs, logits_to_keep=inputs["input_ids"].shape[1]))
    with pytest.raises(ValueError, match="temperature"):
        shared_prompt_logps(model, **inputs, temperature=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selected_logps_is_log_softmax_then_gather(dtype):
    from audsemthinker.fast.prefix_share import selected_logps

    logits = torch.randn(3, 4, 50, generator=torch.Generator().manual_seed(0)).to(dtype) * 5
    ids = torch.randint(0, 50, (3, 4), generator=torch.Generator().manual_seed(1))
    want = logits.float().log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    got = selected_logps(logits, ids)
    assert got.shape == (3, 4)
    assert got.dtype == dtype  # the stock path's dtype
    # bfloat16 keeps 8 significant bits: the result may differ by its rounding, no more.
    tol = dict(atol=1e-5, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-3, rtol=2**-7)
    torch.testing.assert_close(got.float(), want, **tol)


def test_an_older_transformers_layout_is_refused(tiny_full_dir, tiny_processor, prompts):
    """Before transformers' Qwen2_5OmniThinkerModel (5.17 on the GPU box), ``thinker.model`` is
    the text decoder: it would take the features and ignore them, so the prompt pass would run
    without the audio. Simulated by putting the text decoder in that place."""
    model = _load(tiny_full_dir)
    model.model = model.model.language_model
    inputs, _ = _batch(tiny_processor, prompts)
    with pytest.raises(NotImplementedError, match="does not scatter the audio"):
        shared_prompt_logps(model, **inputs)
