"""The shared-prefill decode loop gives ``model.generate``'s tokens.

Batches are built as GRPO builds them (``AudioCollator(prompt_only=True)``: left padding, one clip
per row, prompts and clips of different lengths), G copies per prompt, shuffled so a prompt's
rows are not adjacent. The reference is ``model.generate`` on the same rows and config.
"""

from __future__ import annotations

import pytest
import torch
from test_prefix_share import PROMPT_CLIPS, _load, _prompt_rows
from transformers import GenerationConfig

from audsemthinker.fast.decode import decode_blocker, sample_shared
from audsemthinker.model.tokens import PLACEHOLDER_TOKENS

G = 3
NEW = 10


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, tiny_processor):
    return _prompt_rows(tmp_path_factory.mktemp("clips"), PROMPT_CLIPS[:3])


def _inputs(processor, rows, copies: int = G, seed: int = 0):
    """Prompt rows, ``copies`` per prompt, shuffled; returns (generate kwargs, prompt of row)."""
    from audsemthinker.data.collate import AudioCollator

    enc = AudioCollator(processor, prompt_only=True)(rows)
    n = len(rows) * copies
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    prompt_of = torch.arange(len(rows)).repeat_interleave(copies)[order]
    keys = ("input_ids", "attention_mask", "input_features", "feature_attention_mask")
    return {k: enc[k][prompt_of] for k in keys}, prompt_of


def _config(processor, **kw) -> GenerationConfig:
    """The config TRL builds (do_sample, pad/bos/eos, sampling knobs, suppressed placeholders)."""
    tok = processor.tokenizer
    base = dict(max_new_tokens=NEW, do_sample=False, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id],
                suppress_tokens=[tok.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS],
                disable_compile=True)
    return GenerationConfig(**{**base, **kw})


def _generate(model, inputs, cfg, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(**inputs, generation_config=cfg)


def _ours(model, inputs, cfg, seed=None, **kw):
    if seed is not None:
        torch.manual_seed(seed)
    return sample_shared(model, **inputs, generation_config=cfg, **kw)


@pytest.fixture(scope="module")
def greedy(tiny_full_dir, tiny_processor, prompts):
    """The model, shared inputs, and generate's greedy tokens with no EOS ever hit."""
    model = _load(tiny_full_dir).eval()
    inputs, prompt_of = _inputs(tiny_processor, prompts)
    assert prompt_of[:G].unique().numel() > 1  # a prompt's rows are not adjacent
    assert inputs["attention_mask"].sum(1).unique().numel() == len(prompts)  # left padding
    never = [tiny_processor.tokenizer.pad_token_id]  # pad as EOS: never sampled (suppressed)
    ref = _generate(model, inputs, _config(tiny_processor, eos_token_id=never,
                                           suppress_tokens=never + _config(
                                               tiny_processor).suppress_tokens))
    return model, inputs, ref


@pytest.mark.parametrize("static_cache", [False, True])
def test_greedy_equals_generate_up_to_max_new_tokens(greedy, tiny_processor, static_cache):
    model, inputs, _ = greedy
    cfg = _config(tiny_processor)
    want = _generate(model, inputs, cfg)
    got = _ours(model, inputs, cfg, static_cache=static_cache)
    assert got.shape == want.shape
    assert torch.equal(got, want)
    assert torch.equal(got[:, :inputs["input_ids"].shape[1]], inputs["input_ids"])


@pytest.mark.parametrize("static_cache", [False, True])
def test_greedy_eos_pads_finished_rows_and_stops_when_all_are_done(greedy, tiny_processor,
                                                                   static_cache):
    model, inputs, ref = greedy
    width = inputs["input_ids"].shape[1]
    new = ref[:, width:]
    # A step k where every row emits a token it has not emitted before: those tokens as EOS
    # end every row at step k; one of them alone ends only some rows.
    k = next(k for k in range(1, NEW - 1)
             if not set(new[:, k].tolist()) & set(new[:, :k].flatten().tolist())
             and new[:, k].unique().numel() > 1)
    stops = new[:, k].unique().tolist()
    pad = tiny_processor.tokenizer.pad_token_id
    for eos in (stops[:1], stops):
        cfg = _config(tiny_processor, eos_token_id=eos)
        want = _generate(model, inputs, cfg)
        got = _ours(model, inputs, cfg, static_cache=static_cache)
        assert torch.equal(got, want), eos
        early = torch.isin(new[:, k], torch.tensor(eos))
        assert bool(early.any())
        assert (got[early, width + k + 1:] == pad).all()  # pad after the EOS
    assert got.shape[1] == width + k + 1  # every row done: no further column


@pytest.mark.parametrize("static_cache", [False, True])
def test_step_logits_equal_the_stock_forward_of_the_output(greedy, tiny_processor, monkeypatch,
                                                           static_cache):
    """Every decode step's logits equal the thinker's full forward on the returned rows: the
    positions, the shared cache and the mask of each step are those of the stock model."""
    import audsemthinker.fast.decode as decode

    model, inputs, _ = greedy
    steps = []
    original = decode._one_token_step
    monkeypatch.setattr(decode, "_one_token_step",
                        lambda *a: steps.append(original(*a)) or steps[-1])
    got = _ours(model, inputs, _config(tiny_processor), static_cache=static_cache)
    width = inputs["input_ids"].shape[1]
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(got[:, width:])], dim=1)
    with torch.no_grad():
        stock = model(input_ids=got, attention_mask=mask, input_features=inputs["input_features"],
                      feature_attention_mask=inputs["feature_attention_mask"]).logits
    assert len(steps) == got.shape[1] - width - 1 == NEW - 1
    torch.testing.assert_close(torch.stack(steps, 1), stock[:, width:-1].float(),
                               atol=1e-5, rtol=1e-5)


def test_suppressed_token_never_appears_even_as_the_argmax(greedy, tiny_processor):
    model, inputs, ref = greedy
    width = inputs["input_ids"].shape[1]
    top = int(ref[0, width])  # greedy's first token of row 0: the argmax there
    cfg = _config(tiny_processor)
    cfg.suppress_tokens = cfg.suppress_tokens + [top]
    got = _ours(model, inputs, cfg)
    assert not (got[:, width:] == top).any()
    assert torch.equal(got, _generate(model, inputs, cfg))


def test_each_distinct_clip_is_encoded_once(greedy, tiny_processor):
    model, inputs, _ = greedy
    backbone = model.model
    seen: list[int] = []
    original = backbone.get_audio_features

    def counting(features, *args, **kwargs):
        seen.append(features.shape[0])
        return original(features, *args, **kwargs)

    backbone.get_audio_features = counting
    try:
        _ours(model, inputs, _config(tiny_processor, max_new_tokens=3))
    finally:
        del backbone.get_audio_features
    assert seen == [3]  # one tower call for the 3 distinct clips of 9 rows


@pytest.mark.parametrize("shared", [False, True])
def test_sampling_with_a_seed_equals_generate(tiny_full_dir, tiny_processor, prompts, shared):
    model = _load(tiny_full_dir).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(15.0)  # peaked: a wrong temperature or top-k changes tokens
    inputs, _ = _inputs(tiny_processor, prompts, copies=G if shared else 1, seed=1)
    cfg = _config(tiny_processor, do_sample=True, temperature=0.5, top_k=4, top_p=0.95,
                  max_new_tokens=8)
    want = _generate(model, inputs, cfg, seed=123)
    got = _ours(model, inputs, cfg, seed=123)
    assert torch.equal(got, want)
    assert not torch.equal(got, _ours(model, inputs, cfg, seed=124))  # the seed matters


def _filtered(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """softmax(logits / T), then keep the top-k, then the smallest nucleus of mass >= top_p."""
    probs = (logits / temperature).softmax(-1)
    values, index = probs.sort(descending=True)
    values[top_k:] = 0
    values = values / values.sum()
    keep = (values.cumsum(0) - values) < top_p
    values = values * keep
    return torch.zeros_like(probs).scatter(0, index, values / values.sum())


def test_shared_first_tokens_follow_the_filtered_distribution(tiny_full_dir, tiny_processor,
                                                              prompts):
    model = _load(tiny_full_dir).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(15.0)  # a peaked distribution, so T and top-k matter
    copies, temperature, top_k, top_p = 1500, 0.5, 4, 0.97
    inputs, prompt_of = _inputs(tiny_processor, prompts[:2], copies=copies, seed=2)
    distinct = _inputs(tiny_processor, prompts[:2], copies=1)[0]
    with torch.no_grad():
        logits = model(**distinct).logits[:, -1].float()
    order = [int((prompt_of == p).nonzero()[0]) for p in range(2)]
    assert [bool(torch.equal(inputs["input_ids"][order[p]], distinct["input_ids"][p]))
            for p in range(2)] == [True, True]
    cfg = _config(tiny_processor, do_sample=True, temperature=temperature, top_k=top_k,
                  top_p=top_p, max_new_tokens=1)
    got = _ours(model, inputs, cfg, seed=7)[:, -1]
    margin = 0.05  # total variation; sampling noise with <= 4 outcomes and 1500 draws ~ 0.02
    for p in range(2):
        want = _filtered(logits[p], temperature, top_k, top_p)
        counts = torch.bincount(got[prompt_of == p], minlength=want.numel()).float()
        seen = counts / counts.sum()
        assert (seen[want == 0] == 0).all()  # nothing outside top-k / the nucleus
        assert 0.5 * (seen - want).abs().sum() < margin
        # The check has power: a wrong temperature or no top-k is far outside the margin.
        for wrong in (_filtered(logits[p], 1.0, top_k, top_p),
                      _filtered(logits[p], temperature, 1000, 1.0)):
            assert 0.5 * (wrong - want).abs().sum() > 3 * margin


def test_peft_model_keeps_its_adapter(tiny_full_dir, tiny_processor, prompts):
    model = _load(tiny_full_dir, "lm_attn").eval()
    inputs, _ = _inputs(tiny_processor, prompts, seed=3)
    cfg = _config(tiny_processor)
    want = _generate(model, inputs, cfg)
    with model.disable_adapter():
        base = _generate(model, inputs, cfg)
    assert not torch.equal(want, base)  # the adapter changes the tokens
    model.train()
    got = _ours(model, inputs, cfg, static_cache=True)
    assert model.training  # mode restored
    assert torch.equal(got, want)


def test_compiled_static_step_is_traced_once_without_graph_breaks(greedy, tiny_processor):
    model, inputs, _ = greedy
    cfg = _config(tiny_processor, max_new_tokens=4)
    graphs = []

    def backend(graph_module, example_inputs):  # a cheap CPU backend that counts compilations
        graphs.append(graph_module)
        return graph_module.forward

    runs = [_ours(model, inputs, cfg, static_cache=True, compile=True, compile_backend=backend)
            for _ in range(2)]
    want = _generate(model, inputs, cfg)
    assert all(torch.equal(got, want) for got in runs)
    assert len(graphs) == 1  # one graph (no break), reused across steps and calls


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, reason", [
    (dict(num_beams=2), "beam_search"),
    (dict(do_sample=True, num_beams=2), "beam_sample"),
    (dict(penalty_alpha=0.6, top_k=4), "contrastive_search"),
    (dict(repetition_penalty=1.1), "repetition_penalty"),
    (dict(no_repeat_ngram_size=3), "no_repeat_ngram_size"),
    (dict(bad_words_ids=[[5]]), "bad_words_ids"),
    (dict(min_new_tokens=2), "min_new_tokens"),
    (dict(min_length=200), "min_length"),
    (dict(do_sample=True, typical_p=0.5), "typical_p"),
    (dict(do_sample=True, num_return_sequences=2), "num_return_sequences"),
    (dict(return_dict_in_generate=True, output_scores=True), "return_dict_in_generate"),
    (dict(stop_strings=["</answer>"]), "stop_strings"),
])
def test_unsupported_settings_are_refused(greedy, tiny_processor, setting, reason):
    model, inputs, _ = greedy
    cfg = _config(tiny_processor, **setting)
    assert reason in decode_blocker(model, cfg)
    with pytest.raises(NotImplementedError, match=reason):
        sample_shared(model, **inputs, generation_config=cfg)


def test_trl_config_is_accepted(greedy, tiny_processor):
    model, _, _ = greedy
    cfg = _config(tiny_processor, do_sample=True, temperature=0.9, top_p=1.0, top_k=0,
                  min_p=None, repetition_penalty=1.0)
    assert decode_blocker(model, cfg) is None


def test_unsupported_models_and_inputs_are_refused(tiny_full_dir, tiny_processor, prompts):
    cfg = _config(tiny_processor)
    assert "Qwen2_5OmniThinkerForConditionalGeneration" in decode_blocker(torch.nn.Linear(2, 2),
                                                                           cfg)
    model = _load(tiny_full_dir)
    inputs, _ = _inputs(tiny_processor, prompts[:2], copies=1)
    right = dict(inputs, attention_mask=inputs["attention_mask"].flip(1))
    with pytest.raises(ValueError, match="left-padded"):
        sample_shared(model, **right, generation_config=cfg)
    with pytest.raises(ValueError, match="one clip per row"):
        sample_shared(model, **dict(inputs, input_features=inputs["input_features"][:1]),
                      generation_config=cfg)
    with pytest.raises(ValueError, match="static_cache"):
        sample_shared(model, **inputs, generation_config=cfg, compile=True)
    model.model = model.model.language_model  # transformers 5.17's layout: no audio scatter
    assert "does not scatter the audio" in decode_blocker(model, cfg)
