"""MuchoMusic audio in the layout of the benchmark's own tooling: Song Describer tracks through
song_describer.csv (its 2-minute .2min.mp3 cut), MusicCaps clips as [<ytid>]-[<start>-<end>].wav
from musiccaps-public.csv. Fixtures are real MP3 and WAV files in that layout."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fixtures_audio import dominant_freq, write_tone

from audsemthinker.audio import load_audio
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import build_dataset

QUESTION = {"question": "Which instrument leads?", "correct_answer": "piano",
            "distractor_1_answer": "guitar", "distractor_2_answer": "violin",
            "distractor_3_answer": "drums", "genre": "jazz", "music_reasoning": "[]",
            "music_knowledge": "[]"}


def _csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def layout(tmp_path):
    """data/{sdd,musiccaps} as the official evaluation reads them, plus the question CSV."""
    root = tmp_path / "data"
    sdd = _csv(root / "sdd" / "song_describer.csv", [
        {"caption_id": 1, "track_id": 415600, "caption": "smooth jazz", "path": "00/415600.mp3"},
        {"caption_id": 2, "track_id": 415600, "caption": "a piano", "path": "00/415600.mp3"},
        {"caption_id": 3, "track_id": 7, "caption": "x", "path": "../../../outside.mp3"},
    ])
    mp3 = {"subtype": "MPEG_LAYER_III", "fmt": "MP3"}
    write_tone(root / "sdd" / "audio" / "00" / "415600.2min.mp3", 440, 1.0, **mp3)
    write_tone(root / "sdd" / "audio" / "00" / "415600.mp3", 880, 1.0, **mp3)  # not the cut
    mc = _csv(root / "musiccaps" / "musiccaps-public.csv", [
        {"ytid": "-0Gj8-vB1q4", "start_s": 30, "end_s": 40, "caption": "a guitar"},
        {"ytid": "a_b-c", "start_s": 0, "end_s": 10, "caption": "a drum"},
    ])
    write_tone(root / "musiccaps" / "audio" / "[-0Gj8-vB1q4]-[30-40].wav", 660, 1.0)
    write_tone(root / "musiccaps" / "audio" / "[a_b-c]-[0-10].wav", 330, 1.0)
    questions = _csv(tmp_path / "muchomusic.csv", [
        {**QUESTION, "dataset": "sdd", "dataset_identifier": "415600.json"},
        {**QUESTION, "dataset": "musiccaps", "dataset_identifier": "-0Gj8-vB1q4_30.json"},
        {**QUESTION, "dataset": "musiccaps", "dataset_identifier": "a_b-c_0.json"},
        {**QUESTION, "dataset": "sdd", "dataset_identifier": "999.json"},
        {**QUESTION, "dataset": "musiccaps", "dataset_identifier": "nope_5.json"},
        {**QUESTION, "dataset": "sdd", "dataset_identifier": "7.json"},
    ])
    return root, questions, sdd, mc


def test_tracks_resolve_where_the_official_tooling_puts_them(layout, tmp_path):
    root, questions, sdd, mc = layout
    report = build_dataset("muchomusic", tmp_path / "built", plot=False, csv_path=str(questions),
                           audio_dir=str(tmp_path / "unused"), song_describer_csv=str(sdd),
                           musiccaps_csv=str(mc))
    (rows_file,) = report.files.values()
    rows = {r["id"]: r for r in load_examples(rows_file)}
    expected = {"muchomusic-0000": (root / "sdd/audio/00/415600.2min.mp3", 440),
                "muchomusic-0001": (root / "musiccaps/audio/[-0Gj8-vB1q4]-[30-40].wav", 660),
                "muchomusic-0002": (root / "musiccaps/audio/[a_b-c]-[0-10].wav", 330)}
    assert set(rows) == set(expected)
    for item_id, (path, freq) in expected.items():
        assert Path(rows[item_id]["audio"]).resolve() == path.resolve()
        assert abs(dominant_freq(load_audio(rows[item_id]["audio"])) - freq) < 10
        assert rows[item_id]["duration"] == pytest.approx(1.0, abs=0.05)
    skips = report.skip_counts()
    assert skips == {"unknown_track": 2, "path_outside_root": 1}


def test_a_metadata_file_without_its_columns_is_named(layout, tmp_path):
    _, questions, sdd, _ = layout
    bad = _csv(tmp_path / "mc" / "musiccaps-public.csv", [{"ytid": "x", "start": 1}])
    with pytest.raises(ValueError, match="start_s"):
        build_dataset("muchomusic", tmp_path / "built", plot=False, csv_path=str(questions),
                      audio_dir=str(tmp_path), song_describer_csv=str(sdd),
                      musiccaps_csv=str(bad))
