"""load_audio: any format, rate or channel count -> 16 kHz mono float32, or a reasoned error."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from fixtures_audio import dominant_freq, flac_bytes, tone, write_tone

from audsemthinker.audio import REASONS, SAMPLE_RATE, AudioError, load_audio


@pytest.mark.parametrize("sr,channels,fmt,subtype", [
    (16000, 1, "WAV", "PCM_16"), (8000, 1, "WAV", "PCM_16"), (48000, 2, "FLAC", "PCM_16"),
    (44100, 6, "WAV", "FLOAT"), (22050, 1, "OGG", "VORBIS"), (24000, 1, "MP3", "MPEG_LAYER_III"),
])
def test_any_rate_and_channels_become_16k_mono_float32(tmp_path, sr, channels, fmt, subtype):
    path = write_tone(tmp_path / f"x.{fmt.lower()}", 1000.0, seconds=0.5, sr=sr,
                      channels=channels, subtype=subtype, fmt=fmt)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.flags["C_CONTIGUOUS"]
    assert abs(len(wave) - SAMPLE_RATE // 2) <= 16 if fmt != "MP3" else len(wave) > 7000
    assert abs(dominant_freq(wave) - 1000.0) < 10.0


def test_channels_are_averaged(tmp_path):
    left, right = tone(500, 0.5), tone(2000, 0.5)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


def test_truncate_keeps_the_first_max_seconds(tmp_path):
    x = np.concatenate([tone(400, 1.0), tone(3000, 1.0)])
    path = tmp_path / "two.wav"
    sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")
    wave = load_audio(path, max_seconds=0.75)
    assert len(wave) == 12000
    np.testing.assert_array_equal(wave, x[:12000])


def test_skip_refuses_long_clips_from_the_header(tmp_path):
    path = write_tone(tmp_path / "long.wav", 440, seconds=3.0)
    with pytest.raises(AudioError) as e:
        load_audio(path, max_seconds=2.0, on_long="skip")
    assert e.value.reason == "too_long"
    assert len(load_audio(path, max_seconds=5.0, on_long="skip")) == 3 * SAMPLE_RATE


def _nan_wav(path):
    x = tone(440, 0.5)
    x[100] = np.nan
    sf.write(str(path), x, SAMPLE_RATE, subtype="FLOAT")


def _truncated_flac(path):
    data = flac_bytes(440, seconds=2.0)
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("reason,make", [
    ("missing", lambda p: None),
    ("empty_file", lambda p: p.write_bytes(b"")),
    ("undecodable", lambda p: p.write_bytes(b"this is not audio at all " * 40)),
    ("undecodable", _truncated_flac),
    ("non_finite", _nan_wav),
    ("too_short", lambda p: sf.write(str(p), tone(440, 0.05), SAMPLE_RATE)),
    ("silent", lambda p: sf.write(str(p), np.zeros(8000, np.float32), SAMPLE_RATE)),
    ("silent", lambda p: sf.write(str(p), np.full(8000, 0.25, np.float32), SAMPLE_RATE,
                                  subtype="FLOAT")),
])
def test_bad_files_raise_their_reason(tmp_path, reason, make):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert e.value.reason == reason and reason in REASONS
    assert isinstance(e.value, ValueError) and e.value.path == str(path)


def test_unknown_on_long_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="on_long"):
        load_audio(write_tone(tmp_path / "a.wav", 440), on_long="drop")


@pytest.mark.parametrize("reason,make", [
    ("missing", lambda p: None),
    ("empty_file", lambda p: p.write_bytes(b"")),
    ("undecodable", lambda p: p.write_bytes(b"this is not audio at all " * 40)),
    (None, lambda p: write_tone(p, 440)),
])
def test_audio_problem_finds_files_that_would_stop_a_run(tmp_path, reason, make):
    from helpers import audio_problem

    path = tmp_path / "clip.wav"
    make(path)
    assert audio_problem(path) == reason
