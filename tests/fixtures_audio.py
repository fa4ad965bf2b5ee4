"""Helpers that write small audio and dataset fixtures in the published source schemas.

Plain functions (not pytest fixtures) so any test module can import them; every file is written
under the test's own ``tmp_path``.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(freq: float, seconds: float = 0.5, sr: int = SR, amp: float = 0.3,
         channels: int = 1) -> np.ndarray:
    """A sine tone, shape ``(n,)`` or ``(n, channels)`` (every channel the same tone)."""
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def write_tone(path: str | Path, freq: float, seconds: float = 0.5, sr: int = SR,
               channels: int = 1, subtype: str = "PCM_16", fmt: str | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, sr, channels=channels), sr, subtype=subtype,
             format=fmt)
    return path


def flac_bytes(freq: float, seconds: float = 0.5, sr: int = 48000) -> bytes:
    """Mono 16-bit FLAC bytes, like the AudSem shards (48 kHz)."""
    buf = io.BytesIO()
    sf.write(buf, tone(freq, seconds, sr), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def dominant_freq(wave: np.ndarray, sr: int = SR) -> float:
    """The strongest frequency of a waveform (Hz), to check a row points at its own clip."""
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[int(np.argmax(spec))])


def write_webdataset_tar(path: str | Path, samples: list[dict]) -> Path:
    """A WebDataset shard: per sample ``<key>.<ext>`` members, consecutive.

    Each sample is ``{"__key__": key, "json": dict | bytes, "flac": bytes, ...}``; a ``json``
    given as bytes is written verbatim (malformed JSON fixtures), a missing ``flac`` is left out.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for s in samples:
            for ext, data in s.items():
                if ext == "__key__":
                    continue
                if ext == "json" and not isinstance(data, bytes):
                    data = json.dumps(data).encode()
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def audsem_meta(file_name: str, config: str = "mc_qa", question: str = "What makes the sound?",
                choices: list[str] | None = None, answer: str | None = None,
                semantic: bool = True) -> dict:
    """A sample ``json`` in the published schema (``mc_qa`` embeds the choices block and stores
    the choices as a ``{"A": ...}`` mapping, as the release's shard writer did)."""
    meta = {"file_name": file_name, "question": question,
            "thinking": f"The clip {file_name} has a steady tone."}
    if semantic:
        meta["semantic_elements"] = "1. Physical sound sources: - a tone generator"
    if config == "mc_qa":
        choices = choices or ["a tone", "a dog", "rain"]
        letters = "ABCDEFGH"
        meta["choices"] = {letters[i]: c for i, c in enumerate(choices)}
        meta["question"] = question + "\nChoices:\n" + "\n".join(
            f"{letters[i]}. {c}" for i, c in enumerate(choices))
        meta["answer"] = answer if answer is not None else f"A. {choices[0]}"
    else:
        meta["answer"] = answer if answer is not None else "A steady tone plays."
    return meta


MMAU_FIELDS = ("id", "audio_id", "question", "choices", "answer", "dataset", "task", "split",
               "category", "sub-category", "difficulty")


def mmau_item(item_id: str, split: str = "test-mini", answer: str = "Man",
              choices: tuple[str, ...] = ("Man", "Woman", "Child", "Robot")) -> dict:
    folder = "test-mini-audios" if split == "test-mini" else "test-audios"
    return {"id": item_id, "audio_id": f"./{folder}/{item_id}.wav",
            "question": f"Who is speaking in clip {item_id}?", "choices": list(choices),
            "answer": answer, "dataset": "AudioSet", "task": "sound", "split": split,
            "category": "Reasoning", "sub-category": "Acoustic Source Inference",
            "difficulty": "medium"}


MUCHOMUSIC_COLUMNS = ("question", "dataset", "dataset_identifier", "correct_answer",
                      "distractor_1_answer", "distractor_2_answer", "distractor_3_answer",
                      "genre", "music_reasoning", "music_knowledge")


def write_muchomusic_csv(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(MUCHOMUSIC_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def muchomusic_row(i: int, dataset: str = "musiccaps") -> dict:
    return {"question": f"Which instrument leads track {i}?", "dataset": dataset,
            "dataset_identifier": f"track{i:03d}", "correct_answer": f"piano {i}",
            "distractor_1_answer": f"violin {i}", "distractor_2_answer": f"drums {i}",
            "distractor_3_answer": f"flute {i}", "genre": "jazz", "music_reasoning": "True",
            "music_knowledge": "False"}
