"""Is a weights folder whole, and which weights does it hold? Cheap checks, no model load.

A folder that *exists* is not a folder that was *finished*: a run killed while saving leaves a
checkpoint whose ``trainer_state.json`` parses but whose optimizer or RNG file is cut, and a
model folder retrained in place keeps its path while its weights change. These helpers read
file headers and sizes (and a few sampled blocks), so they cost milliseconds even for a 7B
model:

- :func:`safetensors_problem`: the 8-byte header length, the JSON header and the last tensor's
  end offset must agree with the file size (a cut file never passes).
- :func:`torch_file_problem`: ``torch.save`` writes a zip archive; a cut one has no readable
  central directory.
- :func:`checkpoint_problem`: what makes a ``checkpoint-N`` folder unusable for resuming.
- :func:`weights_fingerprint`: a digest of the weight files (small files hashed whole, large
  ones by header, size and sampled blocks), recorded by the export and the evaluation resume.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
                "adapter_model.bin", "pytorch_model.bin", "pytorch_model.bin.index.json")
"""Files that hold (or index) the weights a Trainer checkpoint or an export saves."""

FULL_HASH_BYTES = 64 << 20
"""Files up to this size (adapters, tiny models) are hashed whole by :func:`weights_fingerprint`."""

SAMPLES, SAMPLE_BYTES = 16, 1 << 16
"""Larger files: this many blocks of this size, spread evenly over the tensor data, are hashed
with the header, so a retrained model of the same shapes gets another fingerprint."""


def _safetensors_header(path: Path) -> tuple[bytes, int]:
    """``(header bytes, bytes the file must have)``; raises ValueError on a malformed file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"header of {n} bytes runs past the end of the file")
        raw = f.read(n)
    header = json.loads(raw)
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    return raw, 8 + n + max(ends, default=0)


def safetensors_problem(path: str | Path) -> str | None:
    """Why the safetensors file at ``path`` is incomplete or malformed, or None when whole."""
    path = Path(path)
    try:
        _, need = _safetensors_header(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{path.name}: unreadable safetensors header ({e})"
    size = path.stat().st_size
    if size < need:
        return f"{path.name}: {size} bytes, its header declares {need} (cut while writing?)"
    return None


def torch_file_problem(path: str | Path) -> str | None:
    """Why a ``torch.save`` file (optimizer, scheduler, RNG or args) is cut, or None."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            if not z.namelist():
                return f"{path.name}: an empty archive"
    except (OSError, zipfile.BadZipFile) as e:
        return f"{path.name}: not a complete torch.save archive ({e})"
    return None


def _index_problem(folder: Path, index: str) -> str | None:
    try:
        shards = set(json.loads((folder / index).read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError) as e:
        return f"{index}: unreadable ({e})"
    missing = sorted(s for s in shards if not (folder / s).is_file())
    return f"{index}: shards missing: {missing}" if missing else None


def file_problem(path: Path) -> str | None:
    """The check of one weights/state file chosen by its suffix; None for other files."""
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return torch_file_problem(path)
    if path.name.endswith(".index.json"):
        return _index_problem(path.parent, path.name)
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from, or None when it is complete.

    Complete means: ``trainer_state.json`` parses (the Trainer writes it last); the weights are
    there (an adapter, a model file or index with every shard, a DeepSpeed ``global_step*``
    folder, or an FSDP sharded-state folder whose ``.metadata`` the checkpoint writer wrote
    last); every safetensors and torch file in the folder is whole; and, when the optimizer
    state was saved, so was the RNG state (``rng_state*.pth``) the Trainer restores with it.
    """
    folder = Path(path)
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    if not (any((folder / f).is_file() for f in WEIGHT_FILES)
            or any(p.is_dir() for p in folder.glob("global_step*"))
            or any((p / ".metadata").is_file() for p in folder.glob("pytorch_model_fsdp_*"))):
        return f"no weights (none of {', '.join(WEIGHT_FILES)})"
    for p in sorted(folder.iterdir()):
        if p.is_file():
            problem = file_problem(p)
            if problem:
                return problem
    if (folder / "optimizer.pt").is_file() and not any(folder.glob("rng_state*.pth")):
        return "optimizer state without rng_state*.pth"
    return None


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()
        start = 0
        if path.suffix == ".safetensors":
            raw, _ = _safetensors_header(path)
            h.update(raw)
            start = 8 + len(raw)
        step = max(1, (size - start - SAMPLE_BYTES) // max(1, SAMPLES - 1))
        for i in range(SAMPLES):
            f.seek(min(start + i * step, max(start, size - SAMPLE_BYTES)))
            h.update(f.read(SAMPLE_BYTES))
    h.update(str(size).encode())
    return h.hexdigest()


def weights_fingerprint(folder: str | Path) -> dict[str, str]:
    """``{file name: digest}`` of the weight files in ``folder`` (``*.safetensors``, ``*.bin``,
    ``*.pt``, their indexes, ``adapter_config.json``, ``config.json``); empty when none.

    The same weights give the same digests wherever the folder is copied; a retrained model
    saved at the same path gets different ones. Cheap: see :data:`FULL_HASH_BYTES`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin", ".pt") or p.name.endswith(".index.json")
        or p.name in ("adapter_config.json", "config.json")))
    return {name: _file_digest(folder / name) for name in names}
