"""Shared fixtures: the tiny checkpoint in both layouts, built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_full_dir(tmp_path_factory):
    """A tiny random Qwen2.5-Omni folder in the hub's full layout (thinker + talker + token2wav)."""
    from audsemthinker.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_full"), layout="full")


@pytest.fixture(scope="session")
def tiny_thinker_dir(tmp_path_factory):
    """A tiny thinker-only folder (the layout our export writes)."""
    from audsemthinker.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_thinker"), layout="thinker")


@pytest.fixture(scope="session")
def pretrained_tiny_dir(tmp_path_factory):
    """The tiny base after its short full fine-tuning (``model.pretrain=synthetic_audio``): what
    LoRA learns on. Built once per session (about 200 CPU steps), or kept across sessions in the
    folder ``AUDSEM_TEST_TINY_BASE`` names (reused only while its recipe digest matches)."""
    from audsemthinker.model.pretrain import ensure_pretrained

    keep = os.environ.get("AUDSEM_TEST_TINY_BASE")
    return ensure_pretrained(keep or tmp_path_factory.mktemp("tiny_pretrained") / "base")


@pytest.fixture(scope="session")
def tiny_processor(tiny_full_dir):
    from audsemthinker.model.processor import build_processor

    return build_processor(tiny_full_dir)


@pytest.fixture()
def tiny_model(tiny_full_dir):
    """A fresh float32 tiny thinker loaded through the real loader."""
    import torch

    from audsemthinker.model.loader import ModelConfig, load_thinker

    torch.manual_seed(0)
    return load_thinker(ModelConfig(name_or_path=str(tiny_full_dir), dtype="float32"))


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """One small synthetic multiple-choice build (SFT rows) shared by the training/eval tests."""
    from audsemthinker.data.registry import build_dataset

    out = tmp_path_factory.mktemp("synthetic")
    build_dataset("synthetic", out, n_train=32, n_valid=8, n_test=8, plot=False)
    return out
