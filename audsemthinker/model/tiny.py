"""Write a tiny, randomly initialised Qwen2.5-Omni checkpoint folder in the hub's layout.

There is no model hub here, so tests and the default end-to-end run use this folder, loaded
through the same loader as ``Qwen/Qwen2.5-Omni-7B``: a full-model ``config.json`` with
``thinker_config`` / ``talker_config`` / ``token2wav_config``, ``thinker.``-prefixed weights beside
``talker.`` and ``token2wav.`` ones, a ``spk_dict.pt``, a byte-level BPE tokenizer carrying the real
special tokens and chat template, and a Whisper feature-extractor config. ``layout="thinker"``
writes a thinker-only folder instead (what our export produces).

The vocabulary is small (about 1k tokens) so a CPU forward is dominated by the audio path, which
is what the learning tests exercise. Special-token ids therefore differ from the hub's; the config
takes them from the tokenizer, which is exactly what the real path must do too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from audsemthinker.model.tokens import ADDED_TOKENS, CHAT_TEMPLATE, NAMED_TOKENS

log = logging.getLogger(__name__)

TINY_SIZES = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
                  audio_d_model=64, audio_layers=2, audio_heads=4, audio_ffn=128, vocab=1024)


def _corpus() -> list[str]:
    """Text the tiny BPE is trained on: every prompt string the package renders, plus digits."""
    from audsemthinker import format as fmt

    lines = [fmt.SYSTEM_PROMPT, fmt.instruction_prefix("semantic", True, 25),
             fmt.instruction_prefix("simple", False, None), *fmt.CAPTION_PROMPTS,
             fmt.R1_AQA_TEMPLATE, fmt.MUCHOMUSIC_TEMPLATE, "Choices:\nA. B. C. D. E. F. G. H.",
             "<think> </think> <semantic_elements> </semantic_elements> <answer> </answer>",
             "You are a helpful assistant. system user assistant",
             " ".join(str(i) for i in range(200))]
    for c in fmt.CATEGORIES:
        lines += [c.name, c.covers, *c.aliases]
    try:  # the synthetic task's words, when the data package is present
        from audsemthinker.data.synthetic import vocabulary_text
        lines += vocabulary_text()
    except ImportError:
        pass
    return lines


def build_tiny_tokenizer(vocab_size: int = TINY_SIZES["vocab"]):
    """A byte-level BPE ``Qwen2Tokenizer`` with the real special tokens and chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(ADDED_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus() * 4, trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    vocab = dict(state["vocab"])
    for t in ADDED_TOKENS:  # appended in the hub's order
        vocab.setdefault(t, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
        pad_token="<|endoftext|>", additional_special_tokens=list(ADDED_TOKENS),
        extra_special_tokens=dict(NAMED_TOKENS), model_max_length=32768,
        chat_template=CHAT_TEMPLATE, errors="replace",
    )
    # transformers 5 registers only the named tokens above as added tokens; without this,
    # "<|im_start|>" (and four others) split into bytes, unlike the hub tokenizer. Ids unchanged.
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS],
                         special_tokens=True)
    return tokenizer


def tiny_thinker_config(tokenizer, sizes: dict | None = None):
    """A ``Qwen2_5OmniThinkerConfig`` whose token ids come from ``tokenizer``."""
    from transformers import Qwen2_5OmniThinkerConfig

    s = {**TINY_SIZES, **(sizes or {})}
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS}
    head_dim = s["hidden"] // s["heads"]
    # mrope sections must sum to head_dim/2 (docs/pitfalls.md): keep the hub's 2:3:3 ratio.
    half = head_dim // 2
    t_sec = max(1, half // 4)
    mrope = [t_sec, (half - t_sec) // 2, half - t_sec - (half - t_sec) // 2]
    text = dict(vocab_size=len(tokenizer), hidden_size=s["hidden"],
                intermediate_size=s["intermediate"], num_hidden_layers=s["layers"],
                num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                max_position_embeddings=4096, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                 "mrope_section": mrope},
                pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    audio = dict(num_mel_bins=128, encoder_layers=s["audio_layers"],
                 encoder_attention_heads=s["audio_heads"], encoder_ffn_dim=s["audio_ffn"],
                 d_model=s["audio_d_model"], output_dim=s["hidden"], n_window=100,
                 max_source_positions=1500)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                  out_hidden_size=s["hidden"], fullatt_block_indexes=[0])
    cfg = Qwen2_5OmniThinkerConfig(
        text_config=text, audio_config=audio, vision_config=vision,
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        user_token_id=tokenizer.convert_tokens_to_ids("user") or 0,
        tie_word_embeddings=False,
    )
    # Read by get_rope_index but not a declared field (docs/pitfalls.md).
    cfg.vision_start_token_id = ids["<|vision_bos|>"]
    cfg.vision_end_token_id = ids["<|vision_eos|>"]
    return cfg


def write_tiny_checkpoint(path: str | Path, layout: str = "full", seed: int = 0,
                          sizes: dict | None = None) -> Path:
    """Write the tiny checkpoint folder and return its path.

    Args:
        path: folder to write (created; existing files are overwritten).
        layout: ``full`` (hub layout: Omni config, ``thinker.``/``talker.``/``token2wav.``
            weights, ``spk_dict.pt``) or ``thinker`` (thinker-only config and weights).
        seed: torch seed of the random initialisation.
        sizes: overrides of :data:`TINY_SIZES`.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from audsemthinker.model.processor import build_processor, save_processor

    if layout not in ("full", "thinker"):
        raise ValueError(f"layout must be 'full' or 'thinker', got {layout!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    thinker_cfg = tiny_thinker_config(tokenizer, sizes)
    torch.manual_seed(seed)
    thinker = Qwen2_5OmniThinkerForConditionalGeneration(thinker_cfg).eval()
    thinker.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                              tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    thinker.generation_config.pad_token_id = tokenizer.pad_token_id

    if layout == "thinker":
        thinker.save_pretrained(path)
    else:
        # The stand-in talker config trips vocabulary-range warnings that mean nothing here.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            _write_full_layout(thinker, thinker_cfg, path, Qwen2_5OmniConfig, save_file, torch)
        finally:
            hf_logging.set_verbosity(verbosity)
    processor = build_processor(tokenizer=tokenizer)
    save_processor(processor, path)
    thinker.generation_config.save_pretrained(path)
    log.info("wrote tiny Qwen2.5-Omni checkpoint (%s layout) to %s", layout, path)
    return path


def _write_full_layout(thinker, thinker_cfg, path: Path, omni_config_cls, save_file, torch):
    """Hub layout: Omni config and one safetensors file with three prefixed sub-models.

    The talker and token2wav tensors are small random stand-ins with the hub's prefixes: the
    thinker loader must ignore them, and nothing here ever builds those modules.
    """
    talker = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, vocab_size=64,
                  text_vocab_size=thinker_cfg.text_config.vocab_size, embedding_size=32,
                  head_dim=16)
    cfg = omni_config_cls(thinker_config=thinker_cfg.to_dict(), talker_config=talker,
                          enable_audio_output=True)
    cfg.architectures = ["Qwen2_5OmniForConditionalGeneration"]
    cfg.save_pretrained(path)
    state = {f"thinker.{k}": v.contiguous() for k, v in thinker.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    state["talker.model.embed_tokens.weight"] = torch.randn(64, 32, generator=g)
    state["talker.codec_head.weight"] = torch.randn(64, 32, generator=g)
    state["token2wav.code2wav_dit_model.input_embed.proj.weight"] = torch.randn(8, 8, generator=g)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    torch.save({"Chelsie": {"cond": torch.zeros(4), "ref_mel": torch.zeros(2, 4)}},
               path / "spk_dict.pt")
