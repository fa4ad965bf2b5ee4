"""The tiny checkpoint loads through the real loader; processor, forward/backward, LoRA presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import lora_module_names
from safetensors import safe_open

from audsemthinker.model.loader import ModelConfig, check_token_ids, load_thinker
from audsemthinker.model.lora import LoraSettings, apply_lora, resolve_targets
from audsemthinker.model.tokens import audio_tokens_for_frames


def _audio_msgs(text="What is the pitch?"):
    return [{"role": "user", "content": [{"type": "audio", "audio": "clip.wav"},
                                          {"type": "text", "text": text}]}]


def test_full_layout_is_the_hub_layout(tiny_full_dir):
    cfg = json.loads((tiny_full_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_5_omni"
    assert {"thinker_config", "talker_config"} <= set(cfg)
    with safe_open(str(tiny_full_dir / "model.safetensors"), "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
    assert prefixes == {"thinker", "talker", "token2wav"}
    assert (tiny_full_dir / "spk_dict.pt").exists()
    assert (tiny_full_dir / "preprocessor_config.json").exists()


def test_both_layouts_load_to_the_same_thinker(tiny_full_dir, tiny_thinker_dir, tiny_processor):
    full = load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32"))
    thin = load_thinker(ModelConfig(name_or_path=str(tiny_thinker_dir), dtype="float32"))
    assert type(full).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert not any("talker" in n or "token2wav" in n for n, _ in full.named_modules())
    check_token_ids(full, tiny_processor.tokenizer)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(full(input_ids=ids).logits, thin(input_ids=ids).logits)


def test_bad_attention_and_dtype_are_rejected(tiny_full_dir):
    with pytest.raises(ValueError, match="attn_implementation"):
        load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), attn_implementation="flash"))
    with pytest.raises(ValueError, match="dtype"):
        load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="fp8"))


def test_two_second_clip_gives_exactly_50_audio_tokens(tiny_processor):
    tok = tiny_processor.tokenizer
    text = tiny_processor.apply_chat_template(_audio_msgs(), add_generation_prompt=True,
                                              tokenize=False)
    out = tiny_processor(text=[text], audio=[np.random.randn(32000).astype(np.float32)],
                         return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    bos, eos = ids.index(tok.audio_bos_token_id), ids.index(tok.audio_eos_token_id)
    assert ids[bos + 1:eos] == [tok.audio_token_id] * 50
    assert ids.count(tok.audio_token_id) == 50 == audio_tokens_for_frames(200)
    assert out["input_features"].shape == (1, 128, 200)  # padded to the clip, not to 300 s
    assert out["feature_attention_mask"].sum().item() == 200


def test_longest_padding_matches_stock_300s_features(tiny_processor):
    """Padding to the batch's longest clip changes no valid frame of the stock 300 s path."""
    fe = tiny_processor.feature_extractor
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * 2).astype(np.float32) * 0.1,
             rng.standard_normal(16000 * 1).astype(np.float32) * 0.3]
    ours = tiny_processor(text=["<|audio_bos|><|AUDIO|><|audio_eos|>"] * 2, audio=clips,
                          return_tensors="pt", padding=True)
    stock = fe(clips, sampling_rate=16000, padding="max_length", return_attention_mask=True,
               return_tensors="pt")
    assert stock["input_features"].shape[-1] == 30000
    for i, n in enumerate([200, 100]):
        assert ours["feature_attention_mask"][i].sum().item() == n
        torch.testing.assert_close(ours["input_features"][i, :, :n],
                                   stock["input_features"][i, :, :n], atol=1e-5, rtol=1e-5)


def test_forward_with_audio_gives_finite_loss_and_grad_reaches_audio_proj(tiny_model,
                                                                          tiny_processor):
    text = tiny_processor.apply_chat_template(_audio_msgs(), add_generation_prompt=True,
                                              tokenize=False) + "<answer>high</answer>"
    batch = tiny_processor(text=[text], audio=[np.random.randn(32000).astype(np.float32)],
                           return_tensors="pt")
    tiny_model.train()
    out = tiny_model(**batch, labels=batch["input_ids"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    proj = tiny_model.get_submodule("model.audio_tower.proj")
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0


def test_audio_changes_the_logits(tiny_model, tiny_processor):
    """The features are used: different audio, different logits at the text positions."""
    text = tiny_processor.apply_chat_template(_audio_msgs(), add_generation_prompt=True,
                                              tokenize=False)
    a = tiny_processor(text=[text], audio=[np.random.randn(16000).astype(np.float32)],
                       return_tensors="pt")
    b = tiny_processor(text=[text], audio=[np.zeros(16000, np.float32)], return_tensors="pt")
    with torch.no_grad():
        la, lb = tiny_model(**a).logits[0, -1], tiny_model(**b).logits[0, -1]
    assert not torch.allclose(la, lb)


def _expected(n_layers: int, n_audio_layers: int) -> dict[str, list[str]]:
    lm = [f"model.language_model.layers.{i}.self_attn.{p}_proj"
          for i in range(n_layers) for p in "qkvo"]
    lm_qv = [n for n in lm if n.endswith(("q_proj", "v_proj"))]
    au_qv = [f"model.audio_tower.layers.{i}.self_attn.{p}_proj"
             for i in range(n_audio_layers) for p in "qv"]
    return {"released": sorted(lm_qv + au_qv), "lm_attn": sorted(lm),
            "audio_proj": ["model.audio_tower.proj"],
            "lm_attn+audio_proj": sorted(lm + ["model.audio_tower.proj"])}


@pytest.mark.parametrize("preset", ["released", "lm_attn", "audio_proj", "lm_attn+audio_proj"])
def test_lora_preset_makes_exactly_the_expected_modules_trainable(tiny_model, preset):
    cfg = tiny_model.config
    want = _expected(cfg.text_config.num_hidden_layers, cfg.audio_config.encoder_layers)[preset]
    peft_model = apply_lora(tiny_model, LoraSettings(preset=preset))
    assert sorted(lora_module_names(peft_model)) == want
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    owners = {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable}
    assert sorted(owners) == want


def test_all_linear_covers_lm_and_audio_but_not_vision_or_head(tiny_model):
    targets = resolve_targets(tiny_model, "all_linear")
    assert "model.audio_tower.proj" in targets
    assert any(".mlp.down_proj" in t and "language_model" in t for t in targets)
    assert not any("visual" in t or t.endswith("lm_head") for t in targets)


def test_frozen_audio_encoder_drops_audio_targets(tiny_model):
    targets = resolve_targets(tiny_model, "released", freeze_audio_encoder=True)
    assert targets and not any("audio_tower" in t for t in targets)


def test_full_finetuning_trains_lm_and_audio_not_vision(tiny_model):
    model = apply_lora(tiny_model, LoraSettings(preset="none"))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert flags["model.audio_tower.proj.weight"] and flags["lm_head.weight"]
    assert not any(v for n, v in flags.items() if ".visual." in f".{n}")


def test_bad_preset_and_unmatched_custom_list_name_the_modules(tiny_model):
    with pytest.raises(ValueError, match="unknown lora preset 'qv'"):
        resolve_targets(tiny_model, "qv")
    with pytest.raises(ValueError,
                       match=r"matches no Linear module; available: .*audio_tower\.proj"):
        resolve_targets(tiny_model, "custom", [r"cross_attn\.q$"])


def test_token_id_mismatch_is_an_error_not_silence(tiny_model, tiny_processor):
    tiny_model.config.audio_token_index = 5
    with pytest.raises(ValueError, match="silently ignored"):
        check_token_ids(tiny_model, tiny_processor.tokenizer)
