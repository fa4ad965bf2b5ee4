"""Audio reaches every GRPO forward, and each row's features are its own prompt's clip.

The public release's GRPO never gave the policy its audio (vLLM got text only, the log-prob
forward got no ``input_features``). A spy on the thinker's inner model records every forward:
generation, old-policy and policy log-probs, and the reference (LoRA: adapter disabled; full
fine-tuning: the separately loaded reference). Each prompt has a clip of its own length and
pitch, so a row paired with another prompt's audio has a different frame count or values.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from audsemthinker import format as fmt
from audsemthinker.model.tokens import PLACEHOLDER_TOKENS, audio_tokens_for_frames
from audsemthinker.train.grpo_audio import AudioRows, prompt_audio_paths

SR = 16000


def tone_rows(folder, n: int) -> list[dict]:
    """``n`` GRPO rows; row k: a tone of its own pitch and length, the text names ``item k``."""
    rows = []
    for k in range(n):
        t = np.arange(int(SR * (0.4 + 0.2 * k))) / SR
        path = folder / f"tone{k}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + 110 * k) * t)).astype(np.float32), SR)
        rows.append({
            "id": f"row-{k}", "audio": str(path), "answer": f"answer-{k}", "choices": None,
            "prompt": [{"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
                       {"role": "user", "content": [{"type": "audio", "audio": str(path)},
                                                    {"type": "text", "text": f"item {k}: what?"}]}],
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Unit tests (milliseconds)
# ---------------------------------------------------------------------------------------------
def _rows(frames: list[int]) -> AudioRows:
    mask = torch.zeros(len(frames), max(frames), dtype=torch.long)
    for i, f in enumerate(frames):
        mask[i, :f] = 1
    return AudioRows(torch.randn(len(frames), 128, max(frames)), mask)


def _ids(counts: list[int], audio_id: int = 7) -> torch.Tensor:
    out = torch.zeros(len(counts), max(counts) + 3, dtype=torch.long)
    for i, c in enumerate(counts):
        out[i, 2:2 + c] = audio_id
    return out


def test_check_accepts_rows_whose_placeholders_match_their_features():
    frames = [100, 200, 160]
    _rows(frames).check(_ids([audio_tokens_for_frames(f) for f in frames]), 7)


def test_check_rejects_swapped_rows():
    frames = [100, 200]  # 25 and 50 audio tokens
    with pytest.raises(ValueError, match="placeholder / feature count mismatch"):
        _rows(frames).check(_ids([50, 25]), 7)


def test_check_rejects_a_row_count_mismatch():
    with pytest.raises(ValueError, match="audio rows"):
        _rows([100, 100]).check(_ids([25, 25, 25]), 7)


def test_rows_trim_to_the_chunk_longest_clip():
    audio = _rows([100, 300, 200])
    part = audio.rows(0, 1)
    assert part["input_features"].shape == (1, 128, 100)
    assert part["feature_attention_mask"].sum().item() == 100
    assert torch.equal(part["input_features"], audio.input_features[:1, :, :100])


def test_prompt_audio_paths_reads_audio_parts_in_order():
    prompt = [{"role": "system", "content": "sys"},
              {"role": "user", "content": [{"type": "text", "text": "q", "audio": None},
                                           {"type": "audio", "audio": "a.wav", "text": None}]}]
    assert prompt_audio_paths(prompt) == ["a.wav"]


# ---------------------------------------------------------------------------------------------
# Training runs with a spy on every forward
# ---------------------------------------------------------------------------------------------
def _args(tmp_path, **kw):
    from trl import GRPOConfig

    # Two prompts per generation batch (num_generations 2, batch 2 x accumulation 2), so a row
    # paired with the other prompt's clip would show.
    base = dict(output_dir=str(tmp_path / "out"), num_generations=2, max_completion_length=5,
                per_device_train_batch_size=2, gradient_accumulation_steps=2, num_iterations=2,
                max_steps=2, temperature=1.0, learning_rate=1e-3, loss_type="grpo", beta=0.05,
                report_to="none", use_cpu=True, bf16=False, save_strategy="no",
                gradient_checkpointing=False, seed=0, disable_dropout=True)
    base.update(kw)
    return GRPOConfig(**base)


def _reward(completions, **kw):
    return [float(len(fmt.normalize(str(c))) % 3) for c in completions]


def _build(model_dir, processor, rows, args, lora: bool):
    from datasets import Dataset

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.lora import apply_lora
    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    mcfg = ModelConfig(name_or_path=str(model_dir), dtype="float32")
    torch.manual_seed(0)
    model = load_thinker(mcfg)
    if lora:
        return AudioGRPOTrainer(model=apply_lora(model, _lora()), reward_funcs=[_reward],
                                args=args, train_dataset=Dataset.from_list(rows),
                                processing_class=processor)
    return AudioGRPOTrainer(model=model, reward_funcs=[_reward], args=args,
                            train_dataset=Dataset.from_list(rows), processing_class=processor,
                            ref_model=load_thinker(mcfg))


def _lora():
    from audsemthinker.model.lora import LoraSettings

    return LoraSettings(preset="lm_attn", r=4, alpha=8, dropout=0.0)


def _expected_features(processor, rows):
    """Each clip's features computed alone: what its row must carry in any batch."""
    from audsemthinker.audio import load_audio

    out = {}
    for k, row in enumerate(rows):
        enc = processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"],
                        audio=[load_audio(row["audio"])], return_tensors="pt", padding=True)
        n = int(enc["feature_attention_mask"].sum())
        out[k] = enc["input_features"][0, :, :n]
    return out


def _generating(trainer) -> dict:
    """A flag that is True while the trainer generates (any other forward is a log-prob pass:
    TRL's fused head, or the shared-prompt pass, which runs the backbone with a cache)."""
    state = {"on": False}
    inner = trainer._generate_single_turn

    def wrapped(*args, **kwargs):
        state["on"] = True
        try:
            return inner(*args, **kwargs)
        finally:
            state["on"] = False

    trainer._generate_single_turn = wrapped
    return state


def _spy(module, calls: list, tag, generating: dict, adapters_off=lambda: False):
    def hook(_mod, args, kwargs):
        calls.append(dict(tag=tag, ids=kwargs.get("input_ids"), feats=kwargs.get("input_features"),
                          mask=kwargs.get("feature_attention_mask"),
                          logprob=not generating["on"], grad=torch.is_grad_enabled(),
                          ref=adapters_off()))

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def _item(tokenizer, ids) -> int:
    import re

    return int(re.findall(r"item (\d+):", tokenizer.decode(ids))[0])


def _check_rows(calls, tokenizer, audio_id, expected):
    """Every forward that has audio placeholders carries, per row, that row's own clip."""
    checked = 0
    for c in calls:
        if c["ids"] is None or not (c["ids"] == audio_id).any():
            continue  # a decoding step after the prompt: the audio is in the cache
        assert c["feats"] is not None, f"a {c['tag']} forward got no input_features"
        for r in range(c["ids"].size(0)):
            want = expected[_item(tokenizer, c["ids"][r])]
            n = int(c["mask"][r].sum())
            assert n == want.size(1)
            assert int((c["ids"][r] == audio_id).sum()) == audio_tokens_for_frames(n)
            torch.testing.assert_close(c["feats"][r, :, :n].float(), want, atol=1e-5, rtol=1e-4)
            checked += 1
    return checked


def test_lora_audio_reaches_policy_old_policy_and_adapter_disabled_reference(
        tmp_path, tiny_full_dir, tiny_processor):
    from peft.tuners.lora import LoraLayer

    torch.set_num_threads(1)
    rows = tone_rows(tmp_path, 4)
    trainer = _build(tiny_full_dir, tiny_processor, rows, _args(tmp_path), lora=True)
    peft_model = trainer.model
    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
    calls: list = []
    _spy(peft_model.get_base_model().model, calls, "policy", _generating(trainer),
         adapters_off=lambda: all(m.disable_adapters for m in layers))
    trainer.train()

    tok = tiny_processor.tokenizer
    audio_id = tok.convert_tokens_to_ids("<|AUDIO|>")
    assert _check_rows(calls, tok, audio_id, _expected_features(tiny_processor, rows)) > 0
    logprob = [c for c in calls if c["logprob"] and c["feats"] is not None]
    assert any(c["grad"] and not c["ref"] for c in logprob), "policy loss forward lacks audio"
    assert any(not c["grad"] and not c["ref"] for c in logprob), "old-policy forward lacks audio"
    assert any(not c["grad"] and c["ref"] for c in logprob), "reference forward lacks audio"
    assert any(not c["logprob"] and c["feats"] is not None for c in calls), "generate lacks audio"


@pytest.mark.parametrize("layout", ["tiny_full_dir", "tiny_thinker_dir"])
def test_full_finetuning_reference_gets_audio(tmp_path, tiny_processor, request, layout):
    torch.set_num_threads(1)
    rows = tone_rows(tmp_path, 4)
    trainer = _build(request.getfixturevalue(layout), tiny_processor, rows,
                     _args(tmp_path, gradient_accumulation_steps=1, num_iterations=1,
                           per_device_train_batch_size=4, max_steps=1), lora=False)
    calls: list = []
    generating = _generating(trainer)
    _spy(trainer.model.model, calls, "policy", generating)
    _spy(trainer.ref_model.model, calls, "ref", generating)
    trainer.train()

    tok = tiny_processor.tokenizer
    audio_id = tok.convert_tokens_to_ids("<|AUDIO|>")
    assert _check_rows(calls, tok, audio_id, _expected_features(tiny_processor, rows)) > 0
    assert any(c["tag"] == "ref" and c["feats"] is not None for c in calls)
    assert any(c["tag"] == "policy" and c["grad"] and c["feats"] is not None for c in calls)


def test_generation_never_samples_a_placeholder(tmp_path, tiny_full_dir, tiny_processor):
    """Make placeholders the most likely tokens by far: generation must still avoid them."""
    torch.set_num_threads(1)
    rows = tone_rows(tmp_path, 2)
    trainer = _build(tiny_full_dir, tiny_processor, rows,
                     _args(tmp_path, beta=0.0, gradient_accumulation_steps=1, num_iterations=1,
                           per_device_train_batch_size=4, max_steps=1), lora=False)
    tok = tiny_processor.tokenizer
    banned = [tok.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS]

    def favour_placeholders(_mod, _inp, out):
        out = out.clone()
        out[..., banned] += 1e4
        return out

    trainer.model.lm_head.register_forward_hook(favour_placeholders)
    # Sanity: without suppression the hooked model samples nothing but placeholders.
    enc = tiny_processor(text=["hello"], return_tensors="pt")
    raw = trainer.model.generate(**enc, max_new_tokens=4, do_sample=True)
    assert set(raw[0, enc["input_ids"].size(1):].tolist()) <= set(banned)

    completions: list = []
    trainer.reward_funcs = [lambda completion_ids, **kw: completions.extend(completion_ids)
                            or [0.0] * len(completion_ids)]
    trainer.train()
    assert len(completions) == 4
    assert not any(t in banned for ids in completions for t in ids)


def test_init_rejects_unsafe_setups(tmp_path, tiny_full_dir, tiny_processor):
    from datasets import Dataset

    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.lora import apply_lora
    from audsemthinker.model.processor import build_processor
    from audsemthinker.train.grpo_fast_trainer import FastAudioGRPOTrainer as AudioGRPOTrainer

    ds = Dataset.from_list(tone_rows(tmp_path, 1))
    model = load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32"))
    with pytest.raises(ValueError, match="needs ref_model"):
        AudioGRPOTrainer(model=model, reward_funcs=[_reward], args=_args(tmp_path),
                         train_dataset=ds, processing_class=tiny_processor)
    right = build_processor(tiny_full_dir, padding_side="right")
    with pytest.raises(ValueError, match="LEFT padding"):
        AudioGRPOTrainer(model=model, reward_funcs=[_reward], args=_args(tmp_path, beta=0.0),
                         train_dataset=ds, processing_class=right)
    with pytest.raises(ValueError, match="adapter disabled"):
        AudioGRPOTrainer(model=apply_lora(model, _lora()), reward_funcs=[_reward],
                         args=_args(tmp_path), train_dataset=ds, processing_class=tiny_processor,
                         ref_model=model)
    with pytest.raises(ValueError, match="use_vllm.*without hearing the audio"):
        AudioGRPOTrainer(model=model, reward_funcs=[_reward],
                         args=_args(tmp_path, beta=0.0, use_vllm=True), train_dataset=ds,
                         processing_class=tiny_processor)
