"""The in-run held-out evaluation of the paper experiments can reach ``<answer>`` and is
bounded: a decoding as long as the completions the runs train on, on a limited number of rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from audsemthinker.eval.generate import decoding_from

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if p.stem != "tiny")


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", PAPER)
def test_paper_experiments_decode_far_enough_on_few_rows(name):
    cfg = _compose([f"experiment={name}"])
    d = decoding_from(OmegaConf.to_container(cfg.eval.decoding, resolve=True))
    # Longer than the paper's own evaluation (400 new tokens) and than any GRPO completion the
    # run trains on, so a completion the run learned to finish is never cut before <answer>.
    assert d.max_new_tokens >= 400
    if name.startswith("grpo"):
        assert d.max_new_tokens >= cfg.train.grpo.max_completion_length
    assert not d.do_sample and d.num_beams == 1  # greedy: one sequence per row
    limit = cfg.eval.heldout_limit
    assert limit is not None and 1 <= limit <= 500
    # Rows x new tokens / batch bounds the decode steps: minutes on one GPU, not hours.
    assert limit * d.max_new_tokens / cfg.eval.batch_size <= 20_000


def test_tiny_experiment_and_tiny_overrides_keep_the_tiny_evaluation():
    assert _compose(["experiment=tiny"]).eval.decoding.max_new_tokens == 48
    assert _compose(["experiment=grpo_qa_budget25", "eval=tiny"]).eval.heldout_limit is None


def test_heldout_accuracy_scores_at_most_the_limit(tiny_model, tiny_processor, synthetic_dir):
    from audsemthinker.data.examples import load_examples
    from audsemthinker.train.sft import heldout_accuracy

    rows = load_examples(Path(synthetic_dir) / "test.jsonl")
    cfg = _compose(["eval=tiny", "eval.heldout_limit=3", "eval.decoding.max_new_tokens=2"])
    held = heldout_accuracy(tiny_model, tiny_processor, rows, cfg)
    assert len(rows) > 3 and held["n"] == 3
