"""AudSem / MMAU / MuchoMusic builders from small fixtures in the published schemas."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import soundfile as sf
from fixtures_audio import (
    MMAU_FIELDS,
    audsem_meta,
    dominant_freq,
    flac_bytes,
    mmau_item,
    muchomusic_row,
    write_muchomusic_csv,
    write_tone,
    write_webdataset_tar,
)

from audsemthinker import format as fmt
from audsemthinker.audio import load_audio
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import build_dataset

QUESTION = "What makes the sound?"
CHOICES = ["a tone", "a dog", "rain"]


def _shards(root, n_train=3, n_valid=1):
    """Release layout: <root>/train/0000.tar, <root>/valid/0000.tar; two QA pairs per clip."""
    def samples(split, n, base):
        out = []
        for i in range(n):
            clip = f"clip{split}{i}"
            for qa in range(2):
                out.append({"__key__": f"{clip}_qa_{qa}", "flac": flac_bytes(base + 100 * i),
                            "json": audsem_meta(clip, answer=f"A. {CHOICES[0]}" if qa == 0
                                                else "a tone")})
        return out

    write_webdataset_tar(root / "train" / "0000.tar", samples("train", n_train, 500))
    write_webdataset_tar(root / "valid" / "0000.tar", samples("valid", n_valid, 2000))
    return root


def test_audsem_shards_rows_prompts_and_extracted_audio(tmp_path):
    out = tmp_path / "out"
    report = build_dataset("audsem", out, shards=str(_shards(tmp_path / "mc_qa")),
                           length_budget=25)
    assert report.kept == {"train": 6, "valid": 2} and report.total_skipped == 0
    rows = {r["id"]: r for r in load_examples(out / "train.jsonl")}
    row = rows["cliptrain1_qa_1"]
    expected_user = fmt.user_prompt(QUESTION, CHOICES, variant="semantic",
                                    prepend_instruction=True, length_budget=25)
    assert row["messages"][1]["content"][1]["text"] == expected_user
    assert row["question"] == QUESTION and row["choices"] == CHOICES
    assert row["answer"] == "A. a tone"  # "a tone" normalised to the training-data form
    assert row["messages"][2]["content"][0]["text"] == (
        "<think>The clip cliptrain1 has a steady tone.</think>\n<semantic_elements>1. Physical "
        "sound sources: - a tone generator</semantic_elements>\n<answer>A. a tone</answer>")
    assert row["audio"] == str(out / "audio" / "cliptrain1_qa_1.flac")
    assert (row["task"], row["source"], row["file_name"]) == ("mc_qa", "audsem", "cliptrain1")
    # every row's audio is its own clip (frequency planted per clip), QA pairs share bytes
    for r in rows.values():
        i = int(r["file_name"][-1])
        assert abs(dominant_freq(load_audio(r["audio"])) - (500 + 100 * i)) < 5
    assert os.path.samefile(rows["cliptrain0_qa_0"]["audio"], rows["cliptrain0_qa_1"]["audio"])
    stored = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert stored["audio"].startswith("audio/")


def test_audsem_grpo_simple_and_seeded_holdout_by_clip(tmp_path):
    shards = _shards(tmp_path / "mc_qa", n_train=12, n_valid=0)
    splits = []
    for run in ("a", "b"):
        build_dataset("audsem", tmp_path / run, shards=str(shards), splits=["train"],
                      kind="grpo", variant="simple", valid_fraction=0.5, seed=5)
        splits.append({r["id"]: "valid" for r in load_examples(tmp_path / run / "valid.jsonl")})
    assert splits[0] == splits[1] and 0 < len(splits[0]) < 24  # seeded, not all or nothing
    clips = {k.rsplit("_qa_", 1)[0] for k in splits[0]}
    assert {f"{c}_qa_{q}" for c in clips for q in (0, 1)} == set(splits[0])  # pairs together
    row = load_examples(tmp_path / "a" / "train.jsonl")[0]
    assert "messages" not in row
    assert row["prompt"][1]["content"][1]["text"] == fmt.user_prompt(QUESTION, CHOICES,
                                                                     variant="simple")


@pytest.mark.parametrize("ext", ["jsonl", "csv"])
def test_audsem_local_records_and_audio_folder(tmp_path, ext):
    audio = tmp_path / "clips"
    write_tone(audio / "c1.flac", 700, fmt="FLAC")
    write_tone(audio / "c2.wav", 900)
    metas = [dict(audsem_meta(f"c{i}", config="qa", question=f"What is in c{i}?"),
                  id=f"c{i}_qa_0") for i in (1, 2)]
    path = tmp_path / f"train.{ext}"
    if ext == "jsonl":
        path.write_text("\n".join(json.dumps(m) for m in metas))
    else:
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(metas[0]))
            w.writeheader()
            w.writerows(metas)
    build_dataset("audsem", tmp_path / "out", config="qa", records=str(path),
                  audio_dir=str(audio), prepend_instruction=False)
    rows = load_examples(tmp_path / "out" / "train.jsonl")
    assert [r["id"] for r in rows] == ["c1_qa_0", "c2_qa_0"]
    for row, freq in zip(rows, (700, 900)):  # stored at 16 kHz under out/audio, each its own
        assert Path(row["audio"]).parent == (tmp_path / "out" / "audio").resolve()
        assert sf.info(row["audio"]).samplerate == 16000
        assert abs(dominant_freq(load_audio(row["audio"])) - freq) < 5
    assert rows[1]["messages"][1]["content"][1]["text"] == "What is in c2?"
    assert rows[0]["choices"] is None and rows[0]["task"] == "qa"


def test_audsem_through_datasets_load_dataset(tmp_path):
    """The hub path is ``datasets.load_dataset``; the release read its shards the same way."""
    tar = write_webdataset_tar(tmp_path / "s.tar", [
        {"__key__": "k_qa_0", "flac": flac_bytes(800), "json": audsem_meta("k")}])
    build_dataset("audsem", tmp_path / "out", hub="webdataset", splits=["train"],
                  hub_kwargs={"name": None, "data_files": {"train": str(tar)}})
    (row,) = load_examples(tmp_path / "out" / "train.jsonl")
    assert row["id"] == "k_qa_0" and row["choices"] == CHOICES
    assert abs(dominant_freq(load_audio(row["audio"])) - 800) < 5


def test_audsem_needs_exactly_one_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        build_dataset("audsem", tmp_path, shards="a", hub="b")
    with pytest.raises(FileNotFoundError):
        build_dataset("audsem", tmp_path, shards=str(tmp_path / "none"))


# --------------------------------------------------------------------------------------------
def _mmau(tmp_path, split="test-mini", items=None):
    items = items or [mmau_item(f"m{i}", split) for i in range(3)]
    folder = "test-mini-audios" if split == "test-mini" else "test-audios"
    for i, it in enumerate(items):
        write_tone(tmp_path / "mmau" / folder / f"{it['id']}.wav", 400 + 200 * i)
    meta = tmp_path / "mmau" / f"mmau-{split}.json"
    meta.write_text(json.dumps(items))
    return meta


def test_mmau_rows_keep_every_field_and_both_prompts(tmp_path):
    meta = _mmau(tmp_path)
    report = build_dataset("mmau", tmp_path / "out", metadata=str(meta), split="test-mini",
                           version="v05.15.25")
    rows = load_examples(tmp_path / "out" / "test-mini.jsonl")
    assert [r["id"] for r in rows] == ["m0", "m1", "m2"] and report.total_skipped == 0
    item = mmau_item("m1")
    assert {k: rows[1][k] for k in MMAU_FIELDS} == item
    assert rows[1]["audio"] == str(tmp_path / "mmau" / "test-mini-audios" / "m1.wav")
    assert rows[1]["prompts"] == {
        "audsem": fmt.user_prompt(item["question"], item["choices"]),
        "r1_aqa": (f"{item['question']} Please choose the answer from the following options: "
                   "['Man', 'Woman', 'Child', 'Robot']. Output the final answer in <answer> "
                   "</answer>."),
    }
    assert "prompt" not in rows[1]
    assert report.meta["version"] == "v05.15.25" and len(report.meta["metadata_sha256"]) == 64
    assert abs(dominant_freq(load_audio(rows[2]["audio"])) - 800) < 5


def test_mmau_test_split_keeps_empty_answers_and_skips_bad_gold(tmp_path):
    items = [mmau_item("t0", "test", answer=""), mmau_item("t1", "test", answer="Dog")]
    meta = _mmau(tmp_path, "test", items)
    report = build_dataset("mmau", tmp_path / "out", metadata=str(meta), split="test")
    assert [r["id"] for r in load_examples(tmp_path / "out" / "test.jsonl")] == ["t0"]
    assert report.skip_counts() == {"answer_not_in_choices": 1}
    assert report.skipped["answer_not_in_choices"]["examples"][0]["id"] == "t1"


def test_muchomusic_options_shuffled_with_a_recorded_seed(tmp_path):
    recs = [muchomusic_row(i) for i in range(12)]
    csv_path = write_muchomusic_csv(tmp_path / "mm" / "muchomusic.csv", recs)
    for i in range(12):
        write_tone(tmp_path / "mm" / "audio" / "musiccaps" / f"track{i:03d}.wav", 300 + 50 * i)
    out = []
    for run, seed in (("a", 1), ("b", 1), ("c", 2)):
        build_dataset("muchomusic", tmp_path / run, csv_path=str(csv_path),
                      audio_dir=str(tmp_path / "mm" / "audio"), seed=seed)
        out.append(load_examples(tmp_path / run / "test.jsonl"))
    a, b, c = out
    assert [r["options"] for r in a] == [r["options"] for r in b]
    assert [r["options"] for r in a] != [r["options"] for r in c]
    assert len({r["answer_index"] for r in a}) > 1  # the correct answer is not always A
    for i, r in enumerate(a):
        assert r["options"][r["answer_index"]] == f"piano {i}" == r["answer"]
        assert sorted(r["options"]) == sorted([f"piano {i}", f"violin {i}", f"drums {i}",
                                               f"flute {i}"])
        assert r["option_seed"] == 1 and r["music_reasoning"] == "True"
        q = f"Which instrument leads track {i}?"
        assert r["prompts"]["muchomusic"] == "Question: " + q + "\n Options: " + " ".join(
            f"({L}) {o}" for L, o in zip("ABCD", r["options"])) + " \n The correct answer is: "
        assert r["prompts"]["audsem"] == fmt.user_prompt(q, r["options"])
        assert abs(dominant_freq(load_audio(r["audio"])) - (300 + 50 * i)) < 5
