"""Canary for library upgrades: the private TRL / transformers API our trainers lean on.

The GRPO trainer overrides private TRL methods and two fast paths swap a TRL module function or
call a private transformers method. A TRL or transformers release that renames one of them does
not fail at import: the override silently becomes dead code (the audio is dropped again) or the
failure comes mid-training. This test pins every such name and signature, so an upgrade fails
here in seconds. After a deliberate upgrade, read the upstream change, adapt the override, then
update the tables below.
"""
from __future__ import annotations

import importlib
import inspect

import pytest

# Methods our subclasses override, with the upstream signature they were written against.
OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "audsemthinker.train.grpo_audio:AudioGRPOTrainer": {
        "__init__": ("self", "model", "reward_funcs", "args", "train_dataset", "eval_dataset",
                     "processing_class", "reward_processing_classes", "callbacks", "optimizers",
                     "quantization_config", "peft_config", "tools", "rollout_func",
                     "environment_factory"),
        "_generate_single_turn": ("self", "prompt_ids", "images", "multimodal_fields",
                                  "num_generations", "has_tool_images"),
        "_save": ("self", "output_dir", "state_dict"),
        "_tokenize_prompts": ("self", "prompts"),
        "_generate_and_score_completions": ("self", "inputs"),
        "_compute_loss": ("self", "model", "inputs"),
        "_get_per_token_logps_and_entropies": (
            "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size",
            "compute_entropy", "compute_aux_loss", "pixel_values", "image_grid_thw",
            "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles", "image_sizes",
            "token_type_ids", "mm_token_type_ids", "image_position_ids"),
    },
    # The fast subclass: its TRL override, and the methods of ours it extends.
    "audsemthinker.train.grpo_fast_trainer:FastAudioGRPOTrainer": {
        "__init__": ("self", "model", "reward_funcs", "args", "train_dataset", "eval_dataset",
                     "processing_class", "ref_model", "max_audio_seconds", "sampler",
                     "options", "kwargs"),
        "_prepare_inputs": ("self", "generation_batch"),
        "_rollout_swaps": ("self", "stack", "model"),
        "_generate_and_score_completions": ("self", "inputs"),
        "_get_per_token_logps_and_entropies": (
            "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size",
            "compute_entropy", "compute_aux_loss", "image_kwargs"),
    },
    "audsemthinker.train.sft_fast_trainer:FastSFTTrainer": {
        "__init__": ("self", "model", "args", "data_collator", "train_dataset", "eval_dataset",
                     "processing_class", "compute_loss_func", "compute_metrics", "callbacks",
                     "optimizers", "optimizer_cls_and_kwargs", "preprocess_logits_for_metrics",
                     "quantization_config", "peft_config", "formatting_func"),
        "_get_train_sampler": ("self", "train_dataset"),
        "get_eval_dataloader": ("self", "eval_dataset"),
        "get_test_dataloader": ("self", "test_dataset"),
        "compute_loss": ("self", "model", "inputs", "return_outputs", "num_items_in_batch"),
    },
}

# Private methods that are ours: upstream must not define them (or ours would override it).
OWN_HELPERS: dict[str, set[str]] = {
    "audsemthinker.train.grpo_audio:AudioGRPOTrainer": {
        "_rollout_swaps", "_prepare_ref_model", "_load_clip", "_setup_options", "_score_round"},
    "audsemthinker.train.grpo_fast_trainer:FastAudioGRPOTrainer": {
        "_setup_fast", "_fast_on", "_shared_prompt_pass"},
    "audsemthinker.train.sft_fast_trainer:FastSFTTrainer": {
        "_eval_collator", "_log_token_metrics", "_count_train_tokens"},
}

# Module attributes we swap, import or call although they are not public API, with the
# signature we call them with (None: a class or constant whose presence is what matters).
UPSTREAM_NAMES: dict[str, tuple[str, ...] | None] = {
    "trl.trainer.grpo_trainer:shuffle_sequence_dict": ("seq_dict",),
    "trl.trainer.utils:add_fused_lm_head": None,
    "trl.trainer.utils:disable_dropout_in_model": ("model",),
    "trl.trainer.utils:_CHUNKED_LOGPROB_CHUNK_SIZE": None,
    "trl.kernels:ChunkedLogProbFunction": None,
    "trl.models:prepare_deepspeed": None,
    "trl.models:prepare_fsdp": None,
    "transformers.generation:GenerationMode": None,
    "transformers:Qwen2_5OmniThinkerForConditionalGeneration._prepare_generation_config": (
        "self", "generation_config", "kwargs"),
}


def _load(ref: str):
    module, _, attr = ref.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _upstream_owner(cls: type, name: str) -> type | None:
    """The first class above ours (TRL / transformers) that defines ``name``."""
    return next((base for base in cls.__mro__[1:] if name in vars(base)), None)


def _params(fn) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def override_problems(cls: type, pinned: dict[str, tuple[str, ...]],
                      own: set[str]) -> list[str]:
    """Why ``cls``'s overrides no longer fit its bases; empty when they all do."""
    problems = []
    for name, value in vars(cls).items():
        if not callable(value) or (name.startswith("__") and name != "__init__"):
            continue
        owner = _upstream_owner(cls, name)
        if name in pinned:
            if owner is None:
                problems.append(f"{cls.__name__}.{name}: upstream no longer defines it "
                                "(renamed or removed); our override is dead code")
            elif _params(vars(owner)[name]) != pinned[name]:
                problems.append(f"{cls.__name__}.{name}: upstream signature is now "
                                f"{_params(vars(owner)[name])}, pinned {pinned[name]}")
        elif owner is not None:
            problems.append(f"{cls.__name__}.{name} overrides {owner.__qualname__}.{name}, "
                            "which is not pinned here")
        elif name.startswith("_") and name not in own:
            problems.append(f"{cls.__name__}.{name}: private method neither pinned as an "
                            "override nor listed as our own helper")
    for name in set(pinned) - set(vars(cls)):
        problems.append(f"{cls.__name__}.{name}: pinned but no longer overridden; unpin it")
    return problems


@pytest.mark.parametrize("ref", sorted(OVERRIDES))
def test_overridden_private_methods_still_exist_with_the_pinned_signature(ref):
    cls = _load(ref)
    assert override_problems(cls, OVERRIDES[ref], OWN_HELPERS.get(ref, set())) == []


@pytest.mark.parametrize("ref", sorted(UPSTREAM_NAMES))
def test_patched_and_called_upstream_names_still_exist(ref):
    try:
        obj = _load(ref)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{ref} is gone upstream: {err}")
    pinned = UPSTREAM_NAMES[ref]
    if pinned is not None:
        assert _params(obj) == pinned, ref


def test_the_canary_names_a_renamed_private_method(monkeypatch):
    """What an upgrade that renames ``GRPOTrainer._compute_loss`` looks like here."""
    from trl import GRPOTrainer
    ref = "audsemthinker.train.grpo_audio:AudioGRPOTrainer"
    cls = _load(ref)
    renamed = vars(GRPOTrainer)["_compute_loss"]
    monkeypatch.delattr(GRPOTrainer, "_compute_loss")
    monkeypatch.setattr(GRPOTrainer, "_compute_policy_loss", renamed, raising=False)
    problems = override_problems(cls, OVERRIDES[ref], OWN_HELPERS[ref])
    assert any("_compute_loss: upstream no longer defines it" in p for p in problems), problems


def test_the_canary_names_a_changed_signature(monkeypatch):
    from trl import GRPOTrainer
    ref = "audsemthinker.train.grpo_audio:AudioGRPOTrainer"
    monkeypatch.setattr(GRPOTrainer, "_tokenize_prompts", lambda self, prompts, images: None)
    problems = override_problems(_load(ref), OVERRIDES[ref], OWN_HELPERS[ref])
    assert any("_tokenize_prompts: upstream signature" in p for p in problems), problems
