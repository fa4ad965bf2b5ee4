"""Data-pipeline throughput: 10 s clips per second through decode + resample + features.

    python bench/data_pipeline.py                 # 160 clips, batch 8, 2 DataLoader workers
    python bench/data_pipeline.py --clips 128 --batch 4 --workers 1

Clips are 10 s mono 16-bit FLAC, at 48 kHz (the AudSem shard format) and at 16 kHz (what the
AudSem builder stores by default, ``store_16k``: decoded and resampled once). Both paths decode and
resample with ``audsemthinker.audio.load_audio`` and run the full processor call (chat text +
audio) on batches inside ``torch.utils.data.DataLoader`` workers (where a training collator runs);
they differ only in the audio features:

- ours: :class:`audsemthinker.model.processor.AudioProcessor` pads to the longest clip
  (10 s -> 1000 frames);
- stock: ``Qwen2_5OmniProcessor._process_audio`` (``padding="max_length"`` with the hub's
  ``chunk_length=300``: every clip padded to 300 s -> 30000 frames).

Prints a Markdown table for decode alone and both full paths, measured in the same run: wall
clips/s, CPU ms per clip (in-process, one torch thread) and the capacity that CPU cost gives on
``--cores`` cores (``cores * 1000 / CPU ms``), plus wall clips/s through DataLoader workers. On a
machine shared with other jobs the wall figures are lower bounds; the CPU column is not.
Target for ours: >= 100 clips/s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_clips(folder: Path, n: int, seconds: float, sr: int = 48000, tag: str = "src"
               ) -> list[Path]:
    """``n`` different FLAC clips (tones + noise) at ``sr``, written once."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(n):
        x = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
        x += 0.02 * rng.standard_normal(len(t))
        buf = io.BytesIO()
        sf.write(buf, x.astype(np.float32), sr, format="FLAC", subtype="PCM_16")
        paths.append(folder / f"{tag}{i:04d}.flac")
        paths[-1].write_bytes(buf.getvalue())
    return paths


def processors():
    """(ours, stock): the same tokenizer and feature extractor, different audio padding."""
    from transformers import Qwen2_5OmniProcessor

    from audsemthinker.model.processor import AudioProcessor, build_processor
    from audsemthinker.model.tiny import build_tiny_tokenizer

    class StockPadding(AudioProcessor):
        """The hub processor's audio path (pads to chunk_length = 300 s)."""

        _process_audio = Qwen2_5OmniProcessor._process_audio

    ours = build_processor(tokenizer=build_tiny_tokenizer())
    stock = StockPadding(image_processor=ours.image_processor, video_processor=None,
                         feature_extractor=ours.feature_extractor, tokenizer=ours.tokenizer,
                         chat_template=ours.chat_template)
    return ours, stock


def chat_text(processor) -> str:
    from audsemthinker import format as fmt

    msgs = [{"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "audio", "audio": "x"},
                                         {"type": "text", "text": fmt.user_prompt(
                                             "What is heard?", ["a", "b"])}]}]
    return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


class _Collate:
    """Decode + resample + processor for one batch of paths (runs inside DataLoader workers,
    as a training collator does)."""

    def __init__(self, processor):
        self.processor = processor
        self.text = chat_text(processor) if processor is not None else ""

    def __call__(self, paths: list[Path]) -> int:
        from audsemthinker.audio import load_audio

        waves = [load_audio(p) for p in paths]
        if self.processor is None:
            return 0
        out = self.processor(text=[self.text] * len(waves), audio=waves, return_tensors="pt",
                             padding=True)
        return int(out["input_features"].shape[-1])


def run(paths: list[Path], batch: int, processor=None, workers: int = 0) -> dict:
    """Time all clips through a DataLoader: wall seconds, and CPU seconds when in-process.

    The clock starts when the first batch arrives, so worker start-up is not counted. CPU time
    (``time.process_time``) is what the pipeline costs whatever else shares the machine.
    """
    from torch.utils.data import DataLoader

    loader = iter(DataLoader(paths, batch_size=batch, num_workers=workers,
                             collate_fn=_Collate(processor)))
    frames = next(loader)
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for out in loader:
        n, frames = n + batch, out
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = min(n, len(paths) - batch)
    return {"clips": n, "clips_per_s": n / wall, "ms_per_clip": 1000 * wall / n,
            "cpu_ms_per_clip": 1000 * cpu / n if workers == 0 else None, "frames": frames}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description="decode + resample + features throughput")
    p.add_argument("--clips", type=int, default=160)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads in-process")
    p.add_argument("--cores", type=int, default=2, help="cores the capacity column assumes")
    p.add_argument("--stock-clips", type=int, default=24, help="the stock path is slow")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    ours, stock = processors()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = make_clips(Path(tmp), a.clips, a.seconds, sr=48000, tag="src")
        built = make_clips(Path(tmp), a.clips, a.seconds, sr=16000, tag="built")
        run(src[: 2 * a.batch], a.batch, ours)  # warm-up (imports, soxr, torch stft plans)
        w = a.workers
        for name, proc, clips, workers in (
                ("decode + resample only, 48 kHz source", None, src, 0),
                ("ours, 48 kHz source", ours, src, 0),
                ("ours, 16 kHz as built", ours, built, 0),
                ("stock 300 s padding, 48 kHz source", stock, src[: a.stock_clips], 0),
                (f"ours, 48 kHz source, {w} DataLoader workers", ours, src, w),
                (f"ours, 16 kHz as built, {w} DataLoader workers", ours, built, w)):
            rows.append({"path": name, **run(clips, a.batch, proc, workers)})
    print(f"\n{a.seconds:g} s clips, batch {a.batch}, 1 torch thread per process; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| path | clips | clips/s (wall) | ms/clip (wall) | CPU ms/clip | "
          f"capacity on {a.cores} cores (clips/s) | feature frames/clip |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cpu = r["cpu_ms_per_clip"]
        cap = f"{a.cores * 1000 / cpu:.0f}" if cpu else "-"
        print(f"| {r['path']} | {r['clips']} | {r['clips_per_s']:.1f} | {r['ms_per_clip']:.1f} "
              f"| {f'{cpu:.1f}' if cpu else '-'} | {cap} | {r['frames'] or '-'} |")
    ours_cpu, stock_cpu = rows[1]["cpu_ms_per_clip"], rows[3]["cpu_ms_per_clip"]
    print(f"\nstock / ours CPU per clip (48 kHz source): {stock_cpu / ours_cpu:.0f}x; capacity "
          f"on {a.cores} cores (target >= 100 clips/s): source {a.cores * 1000 / ours_cpu:.0f}, "
          f"as built {a.cores * 1000 / rows[2]['cpu_ms_per_clip']:.0f}")
    return rows


if __name__ == "__main__":
    main()
