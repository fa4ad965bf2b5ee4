"""Every kind of bad input is a counted skip with its reason (or an error under strict), and every
kept example still points at its own audio (each item's id is encoded in its tone frequency)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
from fixtures_audio import (
    audsem_meta,
    dominant_freq,
    flac_bytes,
    tone,
    write_tone,
    write_webdataset_tar,
)

from audsemthinker.audio import load_audio
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import BuildError, build_dataset


def freq(i: int) -> float:
    return 300.0 + 50.0 * i


def _long_wav(path, minutes=30, sr=8000):
    """30 minutes at 8 kHz (header-valid, quiet noise): cheap to write, refused from the header."""
    noise = (0.01 * np.random.default_rng(0).standard_normal(sr)).astype(np.float32)
    sf.write(str(path), np.tile(noise, 60 * minutes), sr, subtype="PCM_16")


def _nan_wav(path):
    x = tone(freq(4), 0.5)
    x[10] = np.nan
    sf.write(str(path), x, 16000, subtype="FLOAT")


BAD_AUDIO = {  # id -> (how the file is made, expected reason)
    "missing": (lambda p: None, "missing"),
    "zero": (lambda p: p.write_bytes(b""), "empty_file"),
    "junk": (lambda p: p.write_bytes(b"<html>not audio</html>" * 50), "undecodable"),
    "trunc": (lambda p: p.write_bytes(flac_bytes(440, 2.0)[:3000]), "undecodable"),
    "nan": (_nan_wav, "non_finite"),
    "short": (lambda p: sf.write(str(p), tone(440, 0.05), 16000), "too_short"),
    "long": (_long_wav, "too_long"),
    "silent": (lambda p: sf.write(str(p), np.zeros(16000, np.float32), 16000), "silent"),
}


@pytest.fixture()
def records(tmp_path):
    """A JSONL + audio folder mixing good clips (16 kHz, 8 kHz, 6-channel, 48 kHz FLAC) and every
    bad input; returns (path, audio_dir, ids of the good items)."""
    audio = tmp_path / "audio"
    write_tone(audio / "g0.wav", freq(0))
    write_tone(audio / "g1.wav", freq(1), sr=8000)
    write_tone(audio / "g2.wav", freq(2), sr=44100, channels=6)
    write_tone(audio / "g3.flac", freq(3), sr=48000, fmt="FLAC")
    for name, (make, _) in BAD_AUDIO.items():
        make(audio / f"{name}.wav")
    lines = []
    for i in range(4):
        lines.append(json.dumps({**audsem_meta(f"g{i}"), "id": f"g{i}"}))
    for name in BAD_AUDIO:
        lines.append(json.dumps({**audsem_meta(name), "id": name, "file_name": f"{name}.wav"}))
    lines.append('{"id": "broken", "file_name": "g0.wav", "question": ')  # malformed JSON
    no_think = audsem_meta("g0")
    del no_think["thinking"]
    lines.append(json.dumps({**no_think, "id": "nothink"}))
    lines.append(json.dumps({**audsem_meta("g0", answer="D. a cat"), "id": "wronggold"}))
    lines.append(json.dumps({**audsem_meta("g1"), "id": "g0"}))  # duplicate id, other audio
    lines.append(json.dumps(["not", "an", "object"]))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, audio


def test_every_bad_input_is_counted_by_reason(tmp_path, records):
    path, audio = records
    report = build_dataset("audsem", tmp_path / "out", records=str(path), audio_dir=str(audio),
                           max_seconds=60, on_long="skip")
    assert report.skip_counts() == {
        "missing": 1, "empty_file": 1, "undecodable": 2, "non_finite": 1, "too_short": 1,
        "too_long": 1, "silent": 1, "malformed_json": 2, "missing_field": 1,
        "answer_not_in_choices": 1, "duplicate_id": 1}
    assert report.skipped["answer_not_in_choices"]["examples"][0]["id"] == "wronggold"
    assert report.skipped["missing_field"]["examples"][0] == {"id": "nothink", "detail": "thinking"}
    assert {e["id"] for e in report.skipped["undecodable"]["examples"]} == {"junk", "trunc"}
    rows = load_examples(tmp_path / "out" / "train.jsonl")
    assert [r["id"] for r in rows] == ["g0", "g1", "g2", "g3"]  # 8 kHz and 6 channels kept
    for r in rows:  # each kept row is paired with its own clip
        wave = load_audio(r["audio"])
        assert abs(dominant_freq(wave) - freq(int(r["id"][1]))) < 5, r["id"]
        assert r["duration"] == 0.5 == len(wave) / 16000
    saved = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert saved["total_skipped"] == 13 and saved["total_kept"] == 4


def test_strict_stops_at_the_first_bad_item(tmp_path, records):
    path, audio = records
    with pytest.raises(BuildError) as e:
        build_dataset("audsem", tmp_path / "out", strict=True, records=str(path),
                      audio_dir=str(audio))
    assert (e.value.reason, e.value.item_id) == ("missing", "missing")
    assert "missing" in str(e.value)


def test_long_clip_truncated_instead_of_skipped(tmp_path):
    _long_wav(tmp_path / "long.wav")
    meta = {**audsem_meta("long.wav"), "id": "long"}
    (tmp_path / "r.jsonl").write_text(json.dumps(meta) + "\n")
    report = build_dataset("audsem", tmp_path / "out", records=str(tmp_path / "r.jsonl"),
                           audio_dir=str(tmp_path), max_seconds=60, on_long="truncate")
    (row,) = load_examples(tmp_path / "out" / "train.jsonl")
    assert row["duration"] == 60.0 and report.at_max_seconds == 1


def test_broken_shards_never_pair_text_with_other_audio(tmp_path):
    good = [{"__key__": f"s{i}_qa_0", "flac": flac_bytes(freq(i)), "json": audsem_meta(f"s{i}")}
            for i in range(3)]
    shard = [good[0],
             {"__key__": "badjson_qa_0", "flac": flac_bytes(freq(9)), "json": b"{not json"},
             {"__key__": "noflac_qa_0", "json": audsem_meta("noflac")},
             good[1],
             {"__key__": "s0_qa_0", "flac": flac_bytes(freq(8)), "json": audsem_meta("s0")}]
    write_webdataset_tar(tmp_path / "shards" / "a.tar", shard)
    cut = write_webdataset_tar(tmp_path / "shards" / "b.tar", [good[2], good[2] | {
        "__key__": "s9_qa_0"}])
    with tarfile.open(cut) as tar:
        last = tar.getmembers()[-2]  # s9_qa_0.flac
    cut.write_bytes(cut.read_bytes()[: last.offset_data + last.size // 2])  # cut inside it
    report = build_dataset("audsem", tmp_path / "out", shards=str(tmp_path / "shards"))
    assert report.skip_counts() == {"malformed_json": 1, "missing_audio": 1, "duplicate_id": 1,
                                    "corrupt_shard": 1}
    rows = load_examples(tmp_path / "out" / "train.jsonl")
    assert [r["id"] for r in rows] == ["s0_qa_0", "s1_qa_0", "s2_qa_0"]
    for r in rows:  # the repeated key s0 did not overwrite the first clip
        assert abs(dominant_freq(load_audio(r["audio"])) - freq(int(r["id"][1]))) < 5
