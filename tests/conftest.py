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
