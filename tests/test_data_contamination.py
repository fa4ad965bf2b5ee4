"""Contamination report: planted exact, re-encoded, resampled and lossy duplicates, a shared
source id and a near-duplicate question are found; unrelated items are not."""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from audsemthinker.data.contamination import (
    audio_fingerprint,
    contamination_report,
    fingerprint_similarity,
    question_shingles,
    source_ids,
)
from audsemthinker.data.examples import write_examples

SR = 16000


def bursts(seed: int, seconds: float = 3.0) -> np.ndarray:
    """A non-stationary clip: random tone bursts over quiet noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t, x = np.arange(n) / SR, 0.01 * rng.standard_normal(n)
    for _ in range(8):
        f, a, s, d = rng.uniform(150, 3000), rng.uniform(0.05, 0.3), rng.uniform(0, 2.7), \
            rng.uniform(0.1, 0.8)
        m = (t >= s) & (t < s + d)
        x[m] += a * np.sin(2 * np.pi * f * t[m]) * np.hanning(int(m.sum()))
    return x.astype(np.float32)


Q = "Which animal produces the repeated call heard near the river at dawn in this recording?"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("contam")
    (root / "train").mkdir()
    (root / "bench").mkdir()
    train, bench = [], []
    for i in range(8):
        stem = "Y--0w1YA1Hm4_30.000_40.000" if i == 4 else f"t{i}"
        path = root / "train" / f"{stem}.wav"
        sf.write(str(path), bursts(i), SR, subtype="PCM_16")
        train.append({"id": f"t{i}", "audio": str(path),
                      "question": Q if i == 5 else f"Question number {i} about clip t{i}?"})
    b = root / "bench"
    shutil.copy(root / "train" / "t0.wav", b / "b0.wav")                         # exact bytes
    sf.write(str(b / "b1.flac"), sf.read(str(root / "train" / "t1.wav"))[0], SR,
             subtype="PCM_16")                                                   # lossless
    sf.write(str(b / "b2.wav"), librosa.resample(bursts(2), orig_sr=SR, target_sr=44100),
             44100)                                                              # resampled
    sf.write(str(b / "b3.mp3"), bursts(3), SR, format="MP3")                     # lossy
    sf.write(str(b / "--0w1YA1Hm4.wav"), bursts(104), SR)                        # same video
    for i in (5, 6, 7):
        sf.write(str(b / f"b{i}.wav"), bursts(100 + i), SR)
    files = ["b0.wav", "b1.flac", "b2.wav", "b3.mp3", "--0w1YA1Hm4.wav", "b5.wav", "b6.wav",
             "b7.wav"]
    for i, name in enumerate(files):
        q = Q.replace("recording", "clip") if i == 5 else f"What instrument plays in item {i}?"
        bench.append({"id": f"b{i}", "audio": str(b / name), "question": q})
    write_examples(root / "train.jsonl", train)
    write_examples(root / "bench.jsonl", bench)
    return root


def test_fingerprint_survives_resampling_and_lossy_coding_not_unrelated_audio(planted):
    from audsemthinker.audio import load_audio

    fp = {p.stem: audio_fingerprint(load_audio(p)) for p in (planted / "bench").iterdir()}
    original = {i: audio_fingerprint(bursts(i)) for i in (2, 3, 6)}
    assert fingerprint_similarity(original[2], fp["b2"]) > 0.95
    assert fingerprint_similarity(original[3], fp["b3"]) > 0.8
    assert fingerprint_similarity(original[6], fp["b7"]) < 0.65
    assert fingerprint_similarity(original[2], original[2][: len(original[2]) // 2]) == 0.0


def test_report_finds_each_planted_kind(planted, tmp_path):
    seen = []

    def embed(waves):
        seen.append(len(waves))
        return [np.log1p(np.abs(np.fft.rfft(w[:SR]))[:4000].reshape(80, 50).sum(1))
                for w in waves]

    result = contamination_report(planted / "train.jsonl", {"bench": planted / "bench.jsonl"},
                                  tmp_path, embed_fn=embed, embed_threshold=0.999)
    s = result["benchmarks"]["bench"]
    items = {k: sorted({p["bench_id"] for p in v}) for k, v in s["examples"].items()}
    assert items["exact_file"] == ["b0"]
    assert items["exact_pcm"] == ["b0", "b1"]
    assert items["near_audio"] == ["b0", "b1", "b2", "b3"]
    assert items["shared_id"] == ["b4"]
    assert items["near_question"] == ["b5"]
    assert {"b0", "b1"} <= set(items["embedding"]) <= {"b0", "b1", "b2", "b3"}
    assert s["contaminated_items"] == 5 and s["contaminated_rate"] == 0.625
    pair = s["examples"]["near_audio"][2]
    assert (pair["train_id"], pair["bench_id"]) == ("t2", "b2") and pair["similarity"] > 0.95
    assert s["examples"]["shared_id"][0]["source_id"] == "yt:--0w1YA1Hm4"
    assert sum(seen) == 16  # every clip embedded once, in batches
    saved = json.loads((tmp_path / "contamination.json").read_text())
    assert saved["benchmarks"]["bench"]["bench_items"]["near_audio"] == 4
    md = (tmp_path / "contamination.md").read_text()
    assert "| bench | 8 | 5 | 62.50% |" in md
    pairs = [json.loads(x) for x in (tmp_path / "contamination_pairs.jsonl").read_text().split("\n")
             if x]
    assert sum(p["kind"] == "near_question" for p in pairs) == 1


def test_script_writes_the_report(planted, tmp_path, capsys):
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "contamination.py"),
                            run_name="contamination_script")
    result = script["main"](["--train", str(planted / "train.jsonl"), "--bench",
                             f"mmau={planted / 'bench.jsonl'}", "--out", str(tmp_path)])
    assert result["benchmarks"]["mmau"]["contaminated_items"] == 5
    assert "mmau: 5/8 items matched by audio" in capsys.readouterr().out


def test_ids_and_shingles():
    assert source_ids({"audio": "/x/Y--0w1YA1Hm4_30.000.wav", "file_name": "abc"}) == {
        "Y--0w1YA1Hm4_30.000", "yt:--0w1YA1Hm4", "abc"}
    assert question_shingles("The dog, barks!") == frozenset({"the dog barks"})
    assert question_shingles("a b") == frozenset({"a b"})
