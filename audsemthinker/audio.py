"""Load any audio file as the thinker hears it: 16 kHz mono float32, checked.

Every reader of audio in the package (builders, collators, the GRPO trainer, the evaluation
harness, the contamination report) goes through :func:`load_audio`, so a broken file fails the
same way everywhere: an :class:`AudioError` whose short ``reason`` lands in a build report or an
exclusion list, never a crash deep inside a feature extractor and never a silently wrong clip.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
"""The thinker's audio front end rate (Whisper features); every clip is resampled to it."""

ON_LONG = ("truncate", "skip")
REASONS = ("missing", "bad_path", "empty_file", "undecodable", "truncated", "non_finite",
           "too_short", "too_long", "silent", "near_silent")
"""Every ``AudioError.reason``; build reports count skips under these names."""

SILENCE_DBFS = -60.0
"""Clips whose RMS level is below this (dB re full scale) are refused as ``near_silent``.

-60 dBFS is about 1/1000 of full scale: inaudible at any ordinary listening level, and the
level of a download that holds only dither or a hiss of 16-bit rounding noise. The quietest
real field recordings sit well above it (AudSem clips are filtered for a described sound).
"""


class AudioError(ValueError):
    """An audio file that cannot be used, with a machine-readable ``reason``.

    Attributes:
        reason: one of :data:`REASONS`.
        path: the file.
        detail: a human-readable explanation (the decoder's message, the measured duration).
    """

    def __init__(self, reason: str, path: str | Path, detail: str = ""):
        self.reason, self.path, self.detail = reason, str(path), detail
        super().__init__(f"{reason}: {path}" + (f" ({detail})" if detail else ""))


def wav_shortfall(path: str | Path) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if none).

    libsndfile quietly shortens such a file to what is there, so a download cut half-way plays
    its first half while the row's text describes the whole clip. A size of 0 or 0xFFFFFFFF
    (written by streaming encoders that do not know the length) is not a claim and counts as 0.
    """
    import struct

    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, length = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                if length in (0, 0xFFFFFFFF):
                    return 0
                return max(0, pos + 8 + length - size)
            pos += 8 + length + (length & 1)
    return 0


def _read_soundfile(path: Path, max_seconds: float | None, on_long: str):
    """Decode with libsndfile, reading only the frames that will be kept."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr, frames = f.samplerate, f.frames
        if f.format in ("WAV", "WAVEX", "RF64") and wav_shortfall(path) > 0:
            raise AudioError("truncated", path, f"the data chunk runs {wav_shortfall(path)} "
                             "bytes past the end of the file")
        if max_seconds is not None and frames > max_seconds * sr:
            if on_long == "skip":
                raise AudioError("too_long", path, f"{frames / sr:.2f} s > {max_seconds} s")
            frames = int(math.ceil(max_seconds * sr))
        data = f.read(frames, dtype="float32", always_2d=True)
        exact = f.format != "MPEG"  # libsndfile estimates an MP3's length from its bitrate
    if exact and len(data) < frames:
        raise AudioError("truncated", path, f"{len(data)} of {frames} frames decoded")
    return data.T, sr  # (channels, samples)


def _read_librosa(path: Path, max_seconds: float | None, on_long: str):
    """Fallback for formats libsndfile lacks (mp3 via audioread/ffmpeg, m4a, ...)."""
    import librosa

    # librosa warns when it falls back from soundfile to audioread: that is expected here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        duration = max_seconds if (max_seconds is not None and on_long == "truncate") else None
        data, sr = librosa.load(str(path), sr=None, mono=False, duration=duration)
    data = np.atleast_2d(np.asarray(data, dtype=np.float32))
    if max_seconds is not None and on_long == "skip" and data.shape[1] > max_seconds * sr:
        raise AudioError("too_long", path, f"{data.shape[1] / sr:.2f} s > {max_seconds} s")
    return data, int(sr)


def _check_path(path: str | Path) -> Path:
    """``path`` as a Path that names an existing, non-empty file, or the AudioError why not.

    A path from a data row can hold a NUL byte or a name past the file system's limit; the
    ``os.stat`` behind ``is_file`` raises on those instead of answering False.
    """
    if "\0" in str(path):
        raise AudioError("bad_path", repr(str(path))[:200], "NUL byte in the path")
    path = Path(path)
    try:
        if not path.is_file():
            raise AudioError("missing", path)
        if path.stat().st_size == 0:
            raise AudioError("empty_file", path)
    except OSError as e:
        raise AudioError("bad_path", str(path)[:200], f"{type(e).__name__}: {e.strerror}"
                         ) from None
    return path


# Over 60 lines: every decode fallback and check, in the order a clip meets them; half is docstring.
def load_audio(path: str | Path, max_seconds: float | None = None, on_long: str = "truncate",
               min_seconds: float = 0.1) -> np.ndarray:
    """Decode, check, downmix and resample one file to 16 kHz mono float32.

    soundfile (libsndfile: wav, flac, ogg, ...) decodes first; librosa (audioread) is the
    fallback for other formats. Channels are averaged; resampling uses soxr through librosa.
    A clip longer than ``max_seconds`` is cut to its first ``max_seconds`` (only those frames
    are decoded, so a 30-minute file costs no more than a short one) or refused.

    Args:
        path: the audio file.
        max_seconds: longest clip kept; ``None`` keeps everything.
        on_long: ``"truncate"`` or ``"skip"`` (raise ``too_long``) past ``max_seconds``.
        min_seconds: shortest clip accepted (the encoder needs a few frames to say anything).

    Returns:
        A 1-D contiguous float32 array at :data:`SAMPLE_RATE`.

    Raises:
        AudioError: ``missing`` (no such file), ``bad_path`` (a name the file system refuses:
            too long, NUL byte), ``empty_file`` (zero bytes), ``undecodable`` (no decoder reads
            it, e.g. non-audio bytes or a FLAC cut in its first frames), ``truncated`` (the
            header declares more audio than the file holds: a WAV data chunk past the end of
            the file, or fewer frames decoded than declared), ``non_finite`` (NaN/inf
            samples), ``too_short``, ``too_long`` (with ``on_long="skip"``), ``silent``
            (all-zero or constant: the signature of a failed download or a broken encoder,
            never of a real recording), ``near_silent`` (RMS below :data:`SILENCE_DBFS`).
        ValueError: an unknown ``on_long``.
    """
    if on_long not in ON_LONG:
        raise ValueError(f"on_long must be one of {ON_LONG}, got {on_long!r}")
    path = _check_path(path)
    try:
        data, sr = _read_soundfile(path, max_seconds, on_long)
    except AudioError:
        raise
    except Exception as sf_error:  # libsndfile refuses: unknown format or corrupt stream
        try:
            data, sr = _read_librosa(path, max_seconds, on_long)
        except AudioError:
            raise
        except Exception as e:
            raise AudioError("undecodable", path, f"{sf_error}; fallback: {type(e).__name__} {e}"
                             ) from None
    if data.size == 0:
        raise AudioError("empty_file", path, "no samples")
    if not np.isfinite(data).all():
        raise AudioError("non_finite", path, f"{int((~np.isfinite(data)).sum())} NaN/inf samples")
    audio = data.mean(axis=0) if data.shape[0] > 1 else data[0]
    if audio.size < min_seconds * sr:
        raise AudioError("too_short", path, f"{audio.size / sr:.3f} s < {min_seconds} s")
    # Checked before resampling: the filter's edges would make a constant signal non-constant.
    if audio.max() == audio.min():
        raise AudioError("silent", path, f"constant value {float(audio[0])}")
    level = rms_dbfs(audio)
    if level < SILENCE_DBFS:
        raise AudioError("near_silent", path, f"RMS {level:.1f} dBFS < {SILENCE_DBFS:g} dBFS")
    if sr != SAMPLE_RATE:
        import librosa

        audio = librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(audio, dtype=np.float32)


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level of a waveform in dB re full scale (-inf for all zeros)."""
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


