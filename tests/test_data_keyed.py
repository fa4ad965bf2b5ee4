"""A built data folder belongs to the settings that built it: runs with another length budget
never read it, a half-written build is rebuilt, and a rebuild leaves no split of an older one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from audsemthinker.data.built import marker_path, read_marker
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import build_from_config, ensure_built, register_builder
from audsemthinker.distributed.launch import ensure_data

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = ["data.kwargs.n_train=4", "data.kwargs.n_valid=0", "data.kwargs.n_test=2"]


def _experiment(name: str, data_dir: Path, *extra: str):
    """The experiment with the tiny overrides its header documents, data under ``data_dir``."""
    overrides = [f"experiment={name}", "model=tiny", "data=synthetic", "train/grpo=tiny",
                 "lora=tiny", "data.kwargs.kind=grpo", f"paths.data_dir={data_dir}", *SMALL,
                 *extra]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _prompt_texts(folder: Path) -> list[str]:
    return [part["text"] for row in load_examples(folder / "train.jsonl")
            for msg in row["prompt"] if msg["role"] == "user"
            for part in msg["content"] if part.get("type") == "text"]


def test_experiments_with_different_budgets_never_share_a_build(tmp_path, caplog):
    b25 = _experiment("grpo_qa_budget25", tmp_path)
    b100 = _experiment("grpo_qa_budget100", tmp_path)
    assert str(b25.data.out_dir) == str(b100.data.out_dir)  # the same configured folder
    # One key feeds the reward and the prompt.
    assert [r.budget for r in b100.reward.rewards if r.name == "length"] == [100]
    assert b100.data.kwargs.length_budget == 100

    ensure_data(b25)
    first = Path(str(b25.data.out_dir))
    stamp = marker_path(first).stat().st_mtime_ns
    with caplog.at_level(logging.WARNING):
        ensure_data(b100)
    second = Path(str(b100.data.out_dir))
    assert second != first
    assert "kwargs.length_budget: 25 -> 100" in caplog.text
    assert all("approximately 25 words" in t for t in _prompt_texts(first))
    assert all("approximately 100 words" in t for t in _prompt_texts(second))

    again = _experiment("grpo_qa_budget25", tmp_path)
    ensure_data(again)  # the trusted folder: found, not rebuilt
    assert Path(str(again.data.out_dir)) == first
    assert marker_path(first).stat().st_mtime_ns == stamp
    again100 = _experiment("grpo_qa_budget100", tmp_path)
    ensure_data(again100)
    assert Path(str(again100.data.out_dir)) == second


def test_a_half_written_folder_is_rebuilt_and_stale_splits_go(tmp_path):
    cfg = _experiment("grpo_qa_budget25", tmp_path)
    ensure_data(cfg)
    folder = Path(str(cfg.data.out_dir))
    n_rows = len(load_examples(folder / "train.jsonl"))

    @register_builder("test_dies_half_way")
    def dies(out_dir, *, fail: bool = True):
        yield "train", {"id": "x", "audio": str(folder / "audio" / "missing.wav")}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):  # a rebuild that dies leaves no marker behind
        build_from_config({"builder": "test_dies_half_way", "out_dir": str(folder),
                           "audio": {"check_audio": False}, "kwargs": {}})
    assert read_marker(folder) is None
    (folder / "train.jsonl").write_text('{"id": "half"}\n')  # what a dead writer could leave
    (folder / "valid.jsonl").write_text('{"id": "old"}\n')   # a split this build does not make

    ensure_data(cfg)
    assert Path(str(cfg.data.out_dir)) == folder
    assert len(load_examples(folder / "train.jsonl")) == n_rows
    assert not (folder / "valid.jsonl").exists()
    marker = read_marker(folder)
    assert marker is not None and set(marker["files"]) == {"train.jsonl", "test.jsonl"}


def test_a_rebuild_keeps_the_splits_another_build_of_the_folder_wrote(tmp_path):
    """MMAU test-mini and test share a folder, each with its own report and marker."""
    cfg = _experiment("grpo_qa_budget25", tmp_path)
    node = {**dict(json.loads(json.dumps(_container(cfg.data)))), "out_dir": str(tmp_path / "d")}
    ensure_built({**node, "report_name": "build_report_a"})
    (tmp_path / "d" / "train.jsonl").rename(tmp_path / "d" / "other.jsonl")
    (tmp_path / "d" / "test.jsonl").unlink()
    # Another build of the same folder, claiming other.jsonl in its marker.
    from audsemthinker.data.built import build_settings, write_marker

    write_marker(tmp_path / "d", "build_report_b", build_settings(node), ["other.jsonl"])
    build_from_config({**node, "report_name": "build_report_a"})
    assert (tmp_path / "d" / "other.jsonl").exists() and (tmp_path / "d" / "train.jsonl").exists()


def _container(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def test_a_build_refused_as_incomplete_is_not_trusted(tmp_path):
    """Its report is written (it names the cause) but no marker: the next run builds again."""
    from audsemthinker.data.registry import IncompleteBuild, Meta

    calls = []

    @register_builder("test_keeps_nothing")
    def keeps_nothing(out_dir):
        calls.append(1)
        yield Meta({"require_rows": True})

    node = {"builder": "test_keeps_nothing", "out_dir": str(tmp_path / "d"), "kwargs": {}}
    for expected_calls in (1, 2):
        with pytest.raises(IncompleteBuild):
            ensure_built(node)
        assert len(calls) == expected_calls and read_marker(tmp_path / "d") is None


def test_a_prompt_budget_apart_from_the_reward_budget_is_refused(tmp_path):
    from audsemthinker.config import ConfigError, validate

    validate(_experiment("grpo_qa_budget100", tmp_path))
    with pytest.raises(ConfigError, match="data.kwargs.length_budget=25.*length_budget"):
        validate(_experiment("grpo_qa_budget100", tmp_path, "data.kwargs.length_budget=25"))
    validate(_experiment("grpo_qa_budget100", tmp_path, "length_budget=150"))  # both follow
