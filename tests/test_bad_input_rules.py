"""One rule per kind of bad input, each on the smallest input that shows it (the corpus tests
run the same kinds through whole builds, training and evaluation)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf
from fixtures_audio import tone, write_tone
from helpers import audio_problem

from audsemthinker.audio import AudioError, load_audio
from audsemthinker.data.audsem import parse_choices
from audsemthinker.data.examples import RowError
from audsemthinker.data.paths import safe_name


# --------------------------------------------------------------------------------------------
# Silent misalignment
# --------------------------------------------------------------------------------------------
def test_file_names_are_unique_per_key():
    old_hash = hashlib.sha1(b"clip a").hexdigest()[:8]
    keys = ["clip a", "clip_a", f"clip_a-{old_hash}", f"clip_a-{safe_name('clip a')[-10:]}",
            "Clip_A", "clip/a", "clip\\a", "k" * 300, "k" * 301, "é", "e", ".hidden", "hidden",
            "a\0b", "item", ""]
    names = [safe_name(k) for k in keys]
    assert len(set(names)) == len(keys), names
    assert len({n.casefold() for n in names}) == len(keys)  # case-insensitive file systems too
    assert all(len(n.encode()) < 200 and "/" not in n and "\0" not in n for n in names)
    assert safe_name("abc_qa_0") == "abc_qa_0"  # plain keys stay readable


def test_numeric_choice_keys_keep_option_order():
    opts = {str(k): f"opt{k}" for k in (1, 2, 10, 3, 11)}
    assert parse_choices(opts) == ["opt1", "opt2", "opt3", "opt10", "opt11"]
    assert parse_choices({"b": "y", "A": "x"}) == ["x", "y"]
    with pytest.raises(RowError, match="neither letters nor numbers"):
        parse_choices({"A": "x", "2": "y"})


def test_csv_byte_order_mark_does_not_rename_the_first_column(tmp_path):
    from audsemthinker.data.readers import read_csv

    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfid,text\r\na,1\r\n")
    columns, rows = read_csv(path)
    assert columns == ["id", "text"] and list(rows) == [(2, {"id": "a", "text": "1"})]


# --------------------------------------------------------------------------------------------
# Crashes that are counted skips
# --------------------------------------------------------------------------------------------
def test_csv_rows_that_cannot_be_read_are_errors_of_their_own_row(tmp_path):
    from audsemthinker.data.readers import read_csv

    path = tmp_path / "t.csv"
    path.write_bytes(b'id,text\na,"' + b"x" * 200_000 + b'"\nb,ok\nc\nd,caf\xe9\ne,"multi\nline"\n'
                     b"f,fine\n")
    _, rows = read_csv(path)
    got = [(n, r.reason if isinstance(r, RowError) else r["id"]) for n, r in rows]
    assert got == [(2, "cell_too_large"), (3, "b"), (4, "malformed_row"), (5, "not_utf8"),
                   (6, "e"), (7, "f")]


def test_jsonl_lines_that_cannot_be_read_are_errors_of_their_own_line(tmp_path):
    from audsemthinker.data.readers import iter_json_lines

    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1}\n{"id": "caf\xe9"}\n\n[' + b"[" * 100_000 +
                     b"]" * 100_001 + b'\n{"id": 4\n{"id": 5}\n')
    got = [(n, v.reason if isinstance(v, RowError) else v) for n, v in iter_json_lines(path)]
    assert got == [(1, {"id": 1}), (2, "not_utf8"), (4, "malformed_json"),
                   (5, "malformed_json"), (6, {"id": 5})]


def test_absurdly_nested_or_non_text_choices_are_bad_choices():
    deep = "[" * 100_000 + "]" * 100_000
    for value in (deep, [["a"], ["b"]], [{"x": 1}, "b"], "(" * 100_000):
        with pytest.raises(RowError) as e:
            parse_choices(value)
        assert e.value.reason == "bad_choices"


# --------------------------------------------------------------------------------------------
# Paths from data rows
# --------------------------------------------------------------------------------------------
def test_row_paths_stay_inside_their_root(tmp_path):
    from audsemthinker.data.paths import confined

    root = tmp_path / "audio"
    assert confined(root, "a/b.wav") == root / "a" / "b.wav"
    assert confined(root, "a/../b.wav") == root / "b.wav"
    for name in ("../x.wav", "/etc/passwd", "a/../../x.wav", str(tmp_path / "x.wav")):
        with pytest.raises(RowError) as e:
            confined(root, name)
        assert e.value.reason == "path_outside_root"
    assert confined(root, "../x.wav", allow_outside=True) == tmp_path / "x.wav"
    for name in ("", "a\0b"):
        with pytest.raises(RowError, match="bad_path"):
            confined(root, name)


def test_unusable_path_names_are_audio_errors_not_os_errors(tmp_path):
    for name, reason in ((str(tmp_path / ("x" * 300 + ".wav")), "bad_path"),
                         (str(tmp_path / "a\0b.wav"), "bad_path")):
        with pytest.raises(AudioError) as e:
            load_audio(name)
        assert e.value.reason == reason
        assert audio_problem(name) == reason


# --------------------------------------------------------------------------------------------
# Truncated and near-silent audio
# --------------------------------------------------------------------------------------------
def test_a_wav_cut_short_is_truncated(tmp_path):
    path = write_tone(tmp_path / "a.wav", 440, seconds=1.0)
    whole = path.read_bytes()
    assert audio_problem(path) is None and len(load_audio(path)) == 16000
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert e.value.reason == "truncated" and audio_problem(path) == "truncated"


def test_a_streamed_wav_with_unknown_length_is_not_truncated(tmp_path):
    path = write_tone(tmp_path / "a.wav", 440, seconds=1.0)
    data = bytearray(path.read_bytes())
    i = data.index(b"data")
    data[i + 4:i + 8] = b"\xff\xff\xff\xff"  # what a pipe-writing encoder leaves
    path.write_bytes(bytes(data))
    assert len(load_audio(path)) > 0


@pytest.mark.parametrize("amp, ok", [(3e-4, False), (1e-3, False), (3e-3, True), (0.3, True)])
def test_near_silent_clips_are_refused_below_minus_60_dbfs(tmp_path, amp, ok):
    """A sine of amplitude a has RMS a/sqrt(2): 1e-3 is -63 dBFS (refused), 3e-3 is -53."""
    path = tmp_path / "q.wav"
    sf.write(str(path), tone(440, 0.5, amp=amp), 16000, subtype="FLOAT")
    if ok:
        assert load_audio(path).std() > 0
    else:
        with pytest.raises(AudioError) as e:
            load_audio(path)
        assert e.value.reason == "near_silent" and "dBFS" in e.value.detail


def test_quiet_noise_of_a_real_recording_passes(tmp_path):
    noise = (0.01 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    path = tmp_path / "n.wav"
    sf.write(str(path), noise, 16000, subtype="PCM_16")
    assert len(load_audio(path)) == 16000


# --------------------------------------------------------------------------------------------
# One cap on clip length
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("root, data", [("config", "audsem_semantic"), ("config", "synthetic"),
                                        ("build_data", "mmau_test_mini"),
                                        ("build_data", "muchomusic")])
def test_one_setting_caps_audio_in_every_stage(root, data):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name=root, overrides=[f"data={data}", "max_audio_seconds=7"])
    assert cfg.data.audio.max_seconds == 7
    if root == "config":
        assert cfg.eval.max_audio_seconds == 7  # SFT and GRPO read data.audio.max_seconds


def test_hub_audio_paths_stay_inside_audio_dir(tmp_path, monkeypatch):
    """A hub row whose audio is a path (no bytes) names a local file: only under audio_dir."""
    import datasets
    from fixtures_audio import audsem_meta

    from audsemthinker.data.audsem_layouts import SplitStart
    from audsemthinker.data.registry import Skip
    from audsemthinker.data.sources import from_hub as hub_items

    def from_hub(*args):  # the samples, without the split markers
        return [g for g in hub_items(*args) if not isinstance(g, SplitStart)]

    class FakeStream(list):
        features = None

    write_tone(tmp_path / "clips" / "in.wav", 440)
    rows = FakeStream([{"__key__": k, "json": audsem_meta(k), "audio": {"path": p}} for k, p in
                       (("abs", "/etc/passwd"), ("up", "../x.wav"), ("in", "in.wav"))])
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: rows)
    got = list(from_hub("any/hub", "mc_qa", ("train",), {}, tmp_path / "clips"))
    assert [(g.id, g.reason) for g in got[:2]] == [("abs", "path_outside_root"),
                                                  ("up", "path_outside_root")]
    assert all(isinstance(g, Skip) for g in got[:2])
    assert got[2][1] == "in" and got[2][3] == tmp_path / "clips" / "in.wav"
    assert [g.reason for g in from_hub("any/hub", "mc_qa", ("train",), {})] == [
        "path_outside_root"] * 3  # no audio_dir: no local path is trusted
    allowed = list(from_hub("any/hub", "mc_qa", ("train",), {}, tmp_path / "clips", True))
    assert [str(g[3]) for g in allowed][:1] == ["/etc/passwd"]
