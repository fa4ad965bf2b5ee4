"""The builder registry, build_dataset's checks and report, and every shipped data config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fixtures_audio import write_tone

from audsemthinker.data.examples import load_examples, to_sft_row
from audsemthinker.data.registry import (
    BuildError,
    Skip,
    available_builders,
    build_dataset,
    build_from_config,
    check_kwargs,
    get_builder,
    register_builder,
)

CONFIGS = Path(__file__).parents[1] / "configs"


def test_unknown_builder_lists_the_names():
    with pytest.raises(ValueError) as e:
        build_dataset("audsemm", "unused")
    for name in ("audsem", "mmau", "muchomusic", "synthetic"):
        assert name in str(e.value)
    assert {"audsem", "mmau", "muchomusic", "synthetic"} <= set(available_builders())


def test_misspelt_kwarg_names_it_before_any_work(tmp_path):
    with pytest.raises(TypeError, match=r"'n_trian'.*did you mean 'n_train'"):
        build_dataset("synthetic", tmp_path / "x", n_trian=3)
    assert not (tmp_path / "x").exists()
    with pytest.raises(TypeError, match="metadata"):
        build_dataset("mmau", tmp_path / "y")  # a required argument missing


def _custom(tmp_path):
    clips = [write_tone(tmp_path / "src" / f"{i}.wav", 300 + 100 * i) for i in range(3)]

    @register_builder("tiny_custom")
    def tiny_custom(out_dir, *, answers=("a", "b", "zzz")):
        for i, (clip, ans) in enumerate(zip(clips, answers)):
            if ans == "zzz":
                yield Skip(f"c{i}", "answer_not_in_choices", "zzz")
                continue
            yield "train", to_sft_row(id=f"c{i}", audio=str(clip), task="mc_qa", question="q?",
                                      choices=["a", "b"], answer=ans, think="t",
                                      semantic_elements="- Signal descriptors: x")
    return tiny_custom


def test_custom_builder_report_counts_and_files(tmp_path):
    _custom(tmp_path)
    report = build_dataset("tiny_custom", tmp_path / "out")
    assert get_builder("tiny_custom").__name__ == "tiny_custom"
    assert report.kept == {"train": 2} and report.skip_counts() == {"answer_not_in_choices": 1}
    saved = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert saved["total_kept"] == 2 and saved["skipped"]["answer_not_in_choices"] == {
        "count": 1, "examples": [{"id": "c2", "detail": "zzz"}]}
    assert saved["durations"]["histogram"][0] == {"bin": "0-1", "count": 2}
    md = (tmp_path / "out" / "build_report.md").read_text()
    assert "| answer_not_in_choices | 1 | `c2` |" in md
    assert (tmp_path / "out" / "build_report_durations.png").stat().st_size > 1000
    assert [r["duration"] for r in load_examples(tmp_path / "out" / "train.jsonl")] == [0.5, 0.5]


def test_strict_raises_at_the_first_bad_item(tmp_path):
    _custom(tmp_path)
    with pytest.raises(BuildError) as e:
        build_dataset("tiny_custom", tmp_path / "out", strict=True)
    assert (e.value.reason, e.value.item_id) == ("answer_not_in_choices", "c2")
    assert not (tmp_path / "out" / "train.jsonl").exists()  # nothing half-written


def test_tokens_per_example_match_the_processor(tmp_path):
    from audsemthinker.audio import load_audio
    from audsemthinker.model.processor import build_processor
    from audsemthinker.model.tiny import build_tiny_tokenizer

    processor = build_processor(tokenizer=build_tiny_tokenizer())
    report = build_dataset("synthetic", tmp_path, n_train=2, n_valid=0, n_test=0,
                           tokenizer=processor)
    row = load_examples(tmp_path / "train.jsonl")[0]
    text = processor.apply_chat_template(row["messages"], tokenize=False)
    ids = processor(text=[text], audio=[load_audio(row["audio"])], return_tensors="np")
    assert report.tokens["audio"] == [25, 25]  # 1 s -> 100 frames -> 25 audio tokens
    assert report.tokens["total"][0] == ids["input_ids"].shape[1]
    stats = report.to_dict()["tokens"]
    assert math.isclose(stats["total"]["mean"], stats["text"]["mean"] + 25)


def test_build_from_config_rejects_unknown_keys(tmp_path):
    with pytest.raises(TypeError, match="bogus"):
        build_from_config({"builder": "synthetic", "out_dir": str(tmp_path), "bogus": 1})


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml")))
def test_every_data_config_composes_and_binds(name, tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    monkeypatch.setenv("AUDSEM_ROOT", str(tmp_path))
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("build_data", overrides=[f"data={name}"])
    first = (CONFIGS / "data" / f"{name}.yaml").read_text().splitlines()[0]
    assert first.startswith("#")
    data = OmegaConf.to_container(cfg.data, resolve=False)
    assert {"builder", "out_dir", "strict", "kwargs"} <= set(data)
    check_kwargs(get_builder(data["builder"]), data["kwargs"])
    if name == "synthetic":  # the default: build it through the config path
        cfg.data.kwargs.n_train, cfg.data.kwargs.n_valid, cfg.data.kwargs.n_test = 4, 2, 2
        report = build_from_config(cfg.data, progress=False)
        assert report.kept == {"train": 4, "valid": 2, "test": 2}
        assert Path(report.report_path) == tmp_path / "data/synthetic_sft/build_report.json"
