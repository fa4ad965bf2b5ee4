"""The bad-input corpus (``fixtures_bad_input``) through every path: the builds count each bad
item under its reason and name it, and every kept row still decodes to its own clip; then SFT,
GRPO and the evaluation run over the built rows with one more clip broken after the build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fixtures_bad_input import (
    CAP_SECONDS,
    EXPECTED,
    GOOD_CSV,
    GOOD_MMAU,
    GOOD_MUCHO,
    GOOD_RECORDS,
    dominant,
    freq_of,
    write_bad_corpus,
)

from audsemthinker.audio import load_audio
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import build_dataset


@pytest.fixture()
def corpus(tmp_path):
    """A fresh corpus per test (with ``store_16k=False`` records rows point at the source clips,
    which tests break)."""
    return write_bad_corpus(tmp_path / "corpus")


def _build(name: str, out: Path, **kwargs):
    report = build_dataset(name, out, plot=False, max_seconds=CAP_SECONDS, **kwargs)
    (path,) = report.files.values()
    return report, load_examples(path)


def _named(report) -> dict[str, set[str]]:
    return {reason: {e["id"] for e in v["examples"]} for reason, v in report.skipped.items()}


def _own_clips(rows) -> None:
    """Each row decodes to its own tone, and its file holds what its ``duration`` says."""
    for r in rows:
        wave = load_audio(r["audio"])
        assert abs(dominant(wave) - freq_of(r["id"])) < 10, r["id"]
        assert r["duration"] == round(len(wave) / 16000, 3), r["id"]


def _break(path: str) -> None:
    """Cut a clip after the build: a half-written copy or download."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------------------------
# Builds
# --------------------------------------------------------------------------------------------
def test_records_jsonl_bad_lines_are_counted_and_named(corpus, tmp_path):
    report, rows = _build("audsem", tmp_path, records=str(corpus.records_jsonl),
                          audio_dir=str(corpus.audio_dir))
    assert _named(report) == EXPECTED["records"]
    assert [r["id"] for r in rows] == list(GOOD_RECORDS)  # the BOM'd first line is kept
    _own_clips(rows)
    ten = [f"option {k}" for k in range(1, 11)]
    rec1 = next(r for r in rows if r["id"] == "rec1")
    assert rec1["choices"] == ten and rec1["answer"] == "B. option 2"  # "10" sorts last


def test_long_clip_is_stored_as_the_row_says(corpus, tmp_path):
    report, rows = _build("audsem", tmp_path, records=str(corpus.records_jsonl),
                          audio_dir=str(corpus.audio_dir))
    long = next(r for r in rows if r["id"] == "reclong")
    assert long["duration"] == CAP_SECONDS
    assert Path(long["audio"]).parent == (tmp_path / "audio" / "capped").resolve()
    assert sf.info(long["audio"]).duration == CAP_SECONDS  # not the 5 s source
    assert long["messages"][1]["content"][0]["audio"] == long["audio"]
    assert report.capped == 1 and report.at_max_seconds == 1
    assert sf.info(str(corpus.audio_dir / "reclong.wav")).duration == 5.0  # source untouched


def test_records_csv_with_bom_oversized_and_broken_rows(corpus, tmp_path):
    report, rows = _build("audsem", tmp_path, records=str(corpus.records_csv),
                          audio_dir=str(corpus.audio_dir))
    assert _named(report) == EXPECTED["csv"]
    assert [r["id"] for r in rows] == list(GOOD_CSV)
    _own_clips(rows)


def test_shard_keys_get_one_file_each(corpus, tmp_path):
    """``clip a`` and the literal name it used to be stored under, and a key past the file
    system's 255-byte limit: every one kept, on its own file, with its own clip."""
    report, rows = _build("audsem", tmp_path, shards=str(corpus.shards))
    assert _named(report) == EXPECTED["shards"]
    assert [r["id"] for r in rows] == list(corpus.tar_keys)
    assert len({r["audio"] for r in rows}) == len(rows)
    assert all(len(Path(r["audio"]).name) < 255 for r in rows)
    _own_clips(rows)


def test_mmau_null_fields_and_escaping_paths(corpus, tmp_path):
    report, rows = _build("mmau", tmp_path, metadata=str(corpus.mmau_json),
                          audio_root=str(corpus.mmau_root), split="test-mini")
    assert _named(report) == EXPECTED["mmau"]
    assert [r["id"] for r in rows] == list(GOOD_MMAU)
    _own_clips(rows)
    assert all(r["question"] and r["answer"] in r["choices"] for r in rows)


def test_muchomusic_with_bom_and_escaping_identifier(corpus, tmp_path):
    report, rows = _build("muchomusic", tmp_path, csv_path=str(corpus.mucho_csv),
                          audio_dir=str(corpus.mucho_audio))
    assert _named(report) == EXPECTED["muchomusic"]
    assert [r["id"] for r in rows] == list(GOOD_MUCHO)
    _own_clips(rows)


def test_outside_paths_need_the_explicit_option(corpus, tmp_path):
    report, rows = _build("audsem", tmp_path, records=str(corpus.records_jsonl),
                          audio_dir=str(corpus.audio_dir), allow_outside_root=True)
    assert "path_outside_root" not in report.skipped
    kept = {r["id"]: r for r in rows}
    for item_id in ("esc_rel", "esc_abs"):
        assert abs(dominant(load_audio(kept[item_id]["audio"])) - 1234.0) < 10


def test_muchomusic_template_is_checked_against_the_header(corpus, tmp_path):
    with pytest.raises(ValueError, match="'track'.*lacks"):
        _build("muchomusic", tmp_path / "a", csv_path=str(corpus.mucho_csv),
               audio_dir=str(corpus.mucho_audio), audio_template="{dataset}/{track}.wav")
    with pytest.raises(ValueError, match="plain column name"):
        _build("muchomusic", tmp_path / "b", csv_path=str(corpus.mucho_csv),
               audio_dir=str(corpus.mucho_audio), audio_template="{dataset.__class__}.wav")
    report, rows = _build("muchomusic", tmp_path / "c", csv_path=str(corpus.mucho_csv),
                          audio_dir=str(corpus.mucho_audio),
                          audio_template="{dataset}/{dataset_identifier}.wav")
    assert [r["id"] for r in rows] == list(GOOD_MUCHO)
    assert _named(report) == EXPECTED["muchomusic"]


# --------------------------------------------------------------------------------------------
# Training and evaluation over the built corpus
# --------------------------------------------------------------------------------------------
def test_collator_keeps_each_kept_row_with_its_own_features(corpus, tmp_path, tiny_processor):
    """A clip cut after the build is skipped by name; the other rows' features are exactly
    those of their own clips, in order."""
    import torch

    from audsemthinker.data.collate import AudioCollator

    _, rows = _build("audsem", tmp_path, records=str(corpus.records_jsonl),
                     audio_dir=str(corpus.audio_dir), store_16k=False)
    _break(next(r["audio"] for r in rows if r["id"] == "rec2"))
    log = tmp_path / "skips.jsonl"
    collator = AudioCollator(tiny_processor, max_audio_seconds=CAP_SECONDS, skip_log=log)
    batch = collator(rows)
    kept = [rows[i]["id"] for i in collator.last_kept]
    assert kept == [i for i in GOOD_RECORDS if i != "rec2"]
    assert [json.loads(x) for x in log.read_text().splitlines()] == [
        {"id": "rec2", "reason": "skipped:audio:truncated"}]
    for j, item_id in enumerate(kept):
        alone = collator([next(r for r in rows if r["id"] == item_id)])
        n = int(alone["feature_attention_mask"][0].sum())
        assert int(batch["feature_attention_mask"][j].sum()) == n
        torch.testing.assert_close(batch["input_features"][j][:, :n],
                                   alone["input_features"][0][:, :n])


def test_sft_trains_over_the_corpus_and_names_the_skipped_row(corpus, tmp_path, tiny_full_dir):
    from test_sft import compose_sft

    from audsemthinker.data.collate import read_skip_log
    from audsemthinker.train.sft import SKIP_LOG, build_sft_trainer

    data = tmp_path / "data"
    _, rows = _build("audsem", data, records=str(corpus.records_jsonl),
                     audio_dir=str(corpus.audio_dir), store_16k=False)
    _break(next(r["audio"] for r in rows if r["id"] == "rec2"))
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "train.sft.max_steps=1", "train.sft.per_device_train_batch_size=4",
        "train.sft.save_strategy=no", f"max_audio_seconds={CAP_SECONDS}"])
    trainer, info = build_sft_trainer(cfg)
    assert info["collator"].max_audio_seconds == CAP_SECONDS  # the one cap reaches SFT
    trainer.train()
    skipped = read_skip_log(Path(info["run_dir"]) / SKIP_LOG)
    assert skipped["by_reason"] == {"skipped:audio:truncated": 1}


def test_grpo_leaves_out_the_broken_row_by_name(corpus, tmp_path, tiny_full_dir):
    import torch
    from test_sft import compose_sft

    from audsemthinker.train import grpo

    torch.set_num_threads(2)
    data = tmp_path / "data"
    _, rows = _build("audsem", data, records=str(corpus.records_jsonl),
                     audio_dir=str(corpus.audio_dir), kind="grpo", variant="simple",
                     store_16k=False)
    audio = {r["id"]: r["audio"] for r in rows}
    _break(audio["rec2"])
    # Damage only a full decode finds (the header is intact): NaN samples, a near-silent clip.
    nan = np.sin(np.arange(16000, dtype=np.float32) * 0.1)
    nan[8000] = np.nan
    sf.write(audio["rec0"], nan, 16000, subtype="FLOAT")
    hiss = np.where(np.arange(16000) % 2, 1e-5, -1e-5).astype(np.float32)  # -100 dBFS
    sf.write(audio["rec1"], hiss, 16000, subtype="FLOAT")
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "lora=tiny", "train.grpo.max_steps=1", "train.grpo.save_strategy=no",
        "train.grpo.per_device_train_batch_size=4", "train.grpo.num_generations=4",
        "train.grpo.max_completion_length=4", "reward=simple"])
    trainer, info = grpo.build_grpo_trainer(cfg)
    assert info["skipped_rows"]["ids"] == ["rec0", "rec1", "rec2"]
    assert info["skipped_rows"]["by_reason"] == {"skipped:audio:non_finite": 1,
                                                 "skipped:audio:near_silent": 1,
                                                 "skipped:audio:truncated": 1}
    assert [r["id"] for r in trainer.train_dataset] == ["reclong"]
    assert trainer.max_audio_seconds == 60  # the root cap (the data config interpolates it)
    trainer.train()


def test_eval_over_the_corpus_scores_each_item_on_its_own_clip(corpus, tmp_path, tiny_full_dir,
                                                               monkeypatch):
    from test_eval_harness import make_cfg

    from audsemthinker.eval import harness

    report, rows = _build("mmau", tmp_path / "data", metadata=str(corpus.mmau_json),
                          audio_root=str(corpus.mmau_root), split="test-mini")
    _break(next(r["audio"] for r in rows if r["id"] == "m1"))

    def by_own_tone(model, collator, batch, decoding):  # right only when heard on its own clip
        return ["<answer>Man</answer>" if abs(dominant(load_audio(r["audio"])) -
                                              freq_of(r["id"])) < 10 else "<answer>Robot</answer>"
                for r in batch]

    monkeypatch.setattr(harness, "generate_rows", by_own_tone)
    bench = {"mmau_test_mini": {"scorer": "mmau", "rows": report.files["test-mini"],
                                "metadata": str(corpus.mmau_json), "split": "test-mini"}}
    cfg = make_cfg(tiny_full_dir, tmp_path / "run", bench)
    assert cfg.eval.max_audio_seconds == cfg.max_audio_seconds == 60  # eval's default cap
    r = harness.run_eval(cfg)["mmau_test_mini"]
    assert r["excluded"]["items"] == [{"id": "m1", "reason": "truncated"}]
    assert r["score"]["total"]["correct"] == r["score"]["total"]["scored"] == 2
