"""Training-vs-benchmark overlap report: the check the public release did not have.

For a training row file and one or more benchmark row files it finds, per benchmark:

- ``exact_file``: identical file bytes (sha256);
- ``exact_pcm``: identical decoded audio (sha256 of the 16 kHz int16 PCM: a lossless re-encode
  such as WAV -> FLAC, or a copy under another name);
- ``shared_id``: a shared source id: file stems, ``file_name`` / ``dataset_identifier`` /
  ``ytid`` columns and YouTube-style ids at the start of a stem (``Y<11 chars>_30.000``);
- ``near_audio``: a spectral fingerprint match: per 20 ms frame, the signs of the differences
  between 33 adjacent log-mel bands (floored at 60 dB below the clip's peak), i.e. 32 bits per
  frame; similarity = the fraction of equal bits at the best alignment within +-200 ms. It
  survives resampling and lossy re-encoding (measured ~0.85-1.0) while unrelated clips score
  about 0.5. Candidates come from a coarse per-clip signature (nearest ``candidates`` benchmark
  clips), so the cost is linear in each side, not their product;
- ``embedding``: cosine similarity of user-supplied embeddings (e.g. CLAP) above a threshold,
  when ``embed_fn`` is given;
- ``near_question``: question texts whose word 3-shingle Jaccard similarity reaches a threshold
  (normalised text; short questions compare as whole strings).

Known blind spots: a training clip that is a short *segment* of a longer benchmark clip (clip
durations must agree within 20%; the shared-id check catches segments of one source video),
heavy edits (pitch shift, mixing), and paraphrased questions.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audsemthinker import format as fmt
from audsemthinker.files import sha256_file

KINDS = ("exact_file", "exact_pcm", "shared_id", "near_audio", "embedding", "near_question")
N_BANDS, HOP, N_FFT = 33, 320, 1024
_YT = re.compile(r"^Y?([A-Za-z0-9_-]{11})(?:[_ ]\d|$)")


# --------------------------------------------------------------------------------------------
# Audio fingerprints
# --------------------------------------------------------------------------------------------
def audio_fingerprint(wave: np.ndarray, sr: int = 16000) -> np.ndarray:
    """``(frames, 32)`` booleans: signs of adjacent log-mel band differences per 20 ms frame."""
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(wave, dtype=np.float32), sr=sr,
                                         n_fft=N_FFT, hop_length=HOP, n_mels=N_BANDS,
                                         fmin=100.0, fmax=min(7600.0, sr / 2), power=2.0)
    db = 10.0 * np.log10(np.maximum(mel, 1e-10))
    db = np.maximum(db, db.max() - 60.0)  # equal (hence stable) bits in near-silent bands
    return (db[:-1] - db[1:] > 0).T


def fingerprint_similarity(a: np.ndarray, b: np.ndarray, max_shift: int = 10,
                           min_overlap: float = 0.8) -> float:
    """Fraction of equal bits at the best frame shift (0 when the lengths differ > 20%)."""
    if min(len(a), len(b)) < min_overlap * max(len(a), len(b)) or not len(a) or not len(b):
        return 0.0
    best = 0.0
    for s in range(-max_shift, max_shift + 1):
        x, y = a[max(0, s):], b[max(0, -s):]
        n = min(len(x), len(y))
        if n >= min_overlap * min(len(a), len(b)):
            best = max(best, float((x[:n] == y[:n]).mean()))
    return best


def signature(fp: np.ndarray) -> np.ndarray:
    """A 32-d summary (bit means) used only to pick candidate pairs."""
    return fp.mean(axis=0).astype(np.float32) if len(fp) else np.zeros(N_BANDS - 1, np.float32)


def pcm_sha256(wave: np.ndarray) -> str:
    """Hash of the 16-bit PCM: equal for lossless re-encodes of the same samples."""
    pcm = np.clip(np.round(np.asarray(wave) * 32767.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# Ids and text
# --------------------------------------------------------------------------------------------
def source_ids(row: Mapping) -> set[str]:
    """Source identifiers of a row (stems, id columns, YouTube-style ids), case kept."""
    names = [Path(str(row[k])).stem for k in ("audio", "audio_id") if row.get(k)]
    for key in ("file_name", "dataset_identifier", "ytid", "youtube_id", "source_id"):
        if row.get(key):
            names.append(str(row[key]))
    out = set()
    for n in names:
        n = n.strip()
        if n:
            out.add(n)
            m = _YT.match(n)
            if m:
                out.add("yt:" + m.group(1))
    return out


def question_shingles(text: str, k: int = 3) -> frozenset:
    """Word ``k``-shingles of the normalised text (the whole text when shorter than ``k``)."""
    words = fmt.normalize(text).split()
    if len(words) < k:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i:i + k]) for i in range(len(words) - k + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if (a or b) else 0.0


# --------------------------------------------------------------------------------------------
# Clip facts
# --------------------------------------------------------------------------------------------
def clip_facts(paths: Sequence[str], max_seconds: float | None, embed_fn: Callable | None = None,
               batch: int = 32):
    """Yield ``(path, facts)`` or ``(path, AudioError reason)`` per clip, in order.

    ``facts`` = ``{"file", "pcm", "fp", "emb"}``. Waveforms are dropped after each batch, so a
    training set of any size streams through in constant memory.
    """
    from audsemthinker.audio import AudioError, load_audio

    for start in range(0, len(paths), batch):
        out, waves = [], []
        for path in paths[start:start + batch]:
            try:
                wave = load_audio(path, max_seconds=max_seconds)
            except AudioError as e:
                out.append((path, e.reason))
                continue
            out.append((path, {"file": sha256_file(path), "pcm": pcm_sha256(wave),
                               "fp": audio_fingerprint(wave), "emb": None}))
            waves.append(wave)
        if embed_fn is not None and waves:
            e = np.asarray(embed_fn(waves), dtype=np.float32)
            e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
            for facts, vec in zip((f for _, f in out if isinstance(f, dict)), e):
                facts["emb"] = vec
        yield from out


class BenchIndex:
    """A benchmark's clips, ids and questions, indexed for lookups from training clips."""

    def __init__(self, name: str, rows: list[dict], max_seconds: float | None,
                 embed_fn: Callable | None, progress: bool):
        self.name, self.rows = name, rows
        self.paths = _unique_paths(rows)
        self.first_id = {}
        for r in rows:
            self.first_id.setdefault(str(r.get("audio")), str(r.get("id")))
        self.clips, self.unreadable = {}, {}
        for path, facts in _bar(clip_facts(self.paths, max_seconds, embed_fn), progress,
                                f"{name} audio", len(self.paths)):
            (self.clips if isinstance(facts, dict) else self.unreadable)[path] = facts
        self.by_hash = {k: defaultdict(list) for k in ("file", "pcm")}
        for path, f in self.clips.items():
            for k in self.by_hash:
                self.by_hash[k][f[k]].append(path)
        self.fp_paths = list(self.clips)
        self.sigs = (np.stack([signature(self.clips[p]["fp"]) for p in self.fp_paths])
                     if self.fp_paths else np.zeros((0, N_BANDS - 1), np.float32))
        embs = [self.clips[p]["emb"] for p in self.fp_paths]
        self.embs = np.stack(embs) if embs and embs[0] is not None else None

    def audio_hits(self, facts: dict, audio_threshold: float, candidates: int,
                   embed_threshold: float) -> list[tuple[str, str, dict]]:
        """``(kind, bench path, info)`` for one training clip."""
        hits = [(kind, bp, {}) for k, kind in (("file", "exact_file"), ("pcm", "exact_pcm"))
                for bp in self.by_hash[k].get(facts[k], [])]
        if len(self.fp_paths):
            d = ((self.sigs - signature(facts["fp"])) ** 2).sum(axis=1)
            for j in np.argsort(d)[:candidates]:
                sim = fingerprint_similarity(facts["fp"], self.clips[self.fp_paths[j]]["fp"])
                if sim >= audio_threshold:
                    hits.append(("near_audio", self.fp_paths[j], {"similarity": round(sim, 4)}))
        if self.embs is not None and facts.get("emb") is not None:
            sims = self.embs @ facts["emb"]
            for j in np.flatnonzero(sims >= embed_threshold):
                hits.append(("embedding", self.fp_paths[j],
                             {"similarity": round(float(sims[j]), 4)}))
        return hits


def _unique_paths(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(str(r["audio"]) for r in rows if r.get("audio")))


def _bar(items, enabled: bool, desc: str, total: int | None = None):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="clip", total=total)


def _load_rows(src: Any) -> list[dict]:
    from audsemthinker.data.examples import load_examples

    return load_examples(src) if isinstance(src, (str, Path)) else [dict(r) for r in src]


# --------------------------------------------------------------------------------------------
# Row-level matches: ids and questions
# --------------------------------------------------------------------------------------------
def id_hits(train_rows: list[dict], bench_rows: list[dict]) -> list[dict]:
    """Pairs of rows sharing a source id (see :func:`source_ids`)."""
    index = defaultdict(set)
    for r in bench_rows:
        for sid in source_ids(r):
            index[sid].add(str(r.get("id")))
    hits, seen = [], set()
    for r in train_rows:
        for sid in sorted(source_ids(r)):
            for bid in sorted(index.get(sid, ())):
                if (str(r.get("id")), bid) not in seen:
                    seen.add((str(r.get("id")), bid))
                    hits.append({"train_id": str(r.get("id")), "bench_id": bid, "source_id": sid})
    return hits


def question_hits(train_rows: list[dict], bench_rows: list[dict], threshold: float,
                  common: int = 200) -> list[dict]:
    """Pairs whose questions reach ``threshold`` shingle Jaccard similarity.

    Candidates come from a shingle index; shingles in more than ``common`` benchmark questions
    generate none (templated openings would make every pair a candidate), and identical
    normalised questions always match.
    """
    bsh = [question_shingles(r.get("question") or "") for r in bench_rows]
    index, exact = defaultdict(list), defaultdict(list)
    for j, sh in enumerate(bsh):
        exact[fmt.normalize(bench_rows[j].get("question") or "")].append(j)
        for s in sh:
            index[s].append(j)
    hits, cache = [], {}
    for r in train_rows:
        q = fmt.normalize(r.get("question") or "")
        if not q:
            continue
        if q not in cache:
            sh = question_shingles(q)
            cands = set(exact.get(q, []))
            for s in sh:
                if len(index.get(s, ())) <= common:
                    cands.update(index.get(s, ()))
            sims = ((j, jaccard(sh, bsh[j])) for j in sorted(cands))
            cache[q] = [(j, sim) for j, sim in sims if sim >= threshold]
        for j, sim in cache[q]:
            hits.append({"train_id": str(r.get("id")), "bench_id": str(bench_rows[j].get("id")),
                         "similarity": round(sim, 4), "train_question": r.get("question"),
                         "bench_question": bench_rows[j].get("question")})
    return hits


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
# Over 60 lines: the report's documented thresholds, then its steps in order.
def contamination_report(train: Any, benchmarks: Mapping[str, Any] | Sequence[Any],
                         out_dir: str | Path | None = None, *, audio_threshold: float = 0.75,
                         text_threshold: float = 0.8, embed_fn: Callable | None = None,
                         embed_threshold: float = 0.95, max_seconds: float | None = 30.0,
                         candidates: int = 8, max_examples: int = 20,
                         progress: bool = False) -> dict:
    """Find every overlap kind (:data:`KINDS`) between a training set and each benchmark.

    Args:
        train: a row JSONL path (audio resolved by ``load_examples``) or a list of rows.
        benchmarks: ``{name: JSONL path or rows}``, or a list of paths (named by file stem).
        out_dir: if given, write ``contamination.json``, ``contamination.md`` and every pair to
            ``contamination_pairs.jsonl``.
        audio_threshold: fingerprint similarity for ``near_audio`` (unrelated clips ~0.5).
        text_threshold: question shingle Jaccard for ``near_question``.
        embed_fn: optional ``f(list of 16 kHz float32 waveforms) -> (n, d) array``, e.g. a CLAP
            audio encoder (``laion_clap``'s ``get_audio_embedding_from_data``; resample to its
            rate inside ``f``). Not required.
        embed_threshold: cosine similarity for ``embedding`` matches.
        max_seconds: clips are compared on their first ``max_seconds``.
        candidates: benchmark clips fully compared per training clip (nearest signatures).
        max_examples: example pairs per kind in the JSON/Markdown (all go to the pairs file).
        progress: tqdm progress bars.

    Returns:
        ``{"train": {...}, "benchmarks": {name: {"counts": {kind: pairs},
        "bench_items": {kind: distinct benchmark items}, "contaminated_items",
        "contaminated_rate", "examples": {kind: [...]}, "unreadable": {...}}}}``.
    """
    if not isinstance(benchmarks, Mapping):
        benchmarks = {Path(str(b)).stem: b for b in benchmarks}
    train_rows = _load_rows(train)
    benches = {name: BenchIndex(name, _load_rows(src), max_seconds, embed_fn, progress)
               for name, src in benchmarks.items()}
    pairs: dict[str, dict[str, list[dict]]] = {n: {k: [] for k in KINDS} for n in benches}
    first_train = {}
    for r in train_rows:
        first_train.setdefault(str(r.get("audio")), str(r.get("id")))
    train_paths, train_unreadable = _unique_paths(train_rows), {}
    for path, facts in _bar(clip_facts(train_paths, max_seconds, embed_fn), progress,
                            "train audio", len(train_paths)):
        if not isinstance(facts, dict):
            train_unreadable[path] = facts
            continue
        for name, b in benches.items():
            for kind, bp, info in b.audio_hits(facts, audio_threshold, candidates,
                                               embed_threshold):
                pairs[name][kind].append({"train_id": first_train[path],
                                          "bench_id": b.first_id[bp], "train_audio": path,
                                          "bench_audio": bp, **info})
    for name, b in benches.items():
        pairs[name]["shared_id"] = id_hits(train_rows, b.rows)
        pairs[name]["near_question"] = question_hits(train_rows, b.rows, text_threshold)
    result = {"train": {"rows": len(train_rows), "clips": len(train_paths),
                        "unreadable": _reasons(train_unreadable)},
              "settings": {"audio_threshold": audio_threshold, "text_threshold": text_threshold,
                           "embed_threshold": embed_threshold if embed_fn else None,
                           "max_seconds": max_seconds, "candidates": candidates},
              "benchmarks": {n: _summary(b, pairs[n], max_examples) for n, b in benches.items()}}
    if out_dir is not None:
        write_report(result, pairs, out_dir)
    return result


def _reasons(unreadable: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for reason in unreadable.values():
        out[reason] += 1
    return dict(out)


def _summary(b: BenchIndex, pairs: dict[str, list[dict]], max_examples: int) -> dict:
    items = {k: sorted({p["bench_id"] for p in v}) for k, v in pairs.items()}
    audio_kinds = ("exact_file", "exact_pcm", "shared_id", "near_audio", "embedding")
    contaminated = set().union(*(items[k] for k in audio_kinds))
    return {"rows": len(b.rows), "clips": len(b.paths), "unreadable": _reasons(b.unreadable),
            "counts": {k: len(v) for k, v in pairs.items()},
            "bench_items": {k: len(v) for k, v in items.items()},
            "contaminated_items": len(contaminated),
            "contaminated_rate": round(len(contaminated) / max(1, len(b.rows)), 4),
            "examples": {k: v[:max_examples] for k, v in pairs.items() if v}}


def write_report(result: dict, pairs: dict, out_dir: str | Path) -> Path:
    """Write ``contamination_pairs.jsonl``, ``contamination.md`` and, last,
    ``contamination.json``, each atomically: a killed report never leaves a half-written file
    that a later filter would read as the full list of matches."""
    from audsemthinker.files import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "contamination_pairs.jsonl", "".join(
        json.dumps({"benchmark": name, "kind": kind, **p}, default=str) + "\n"
        for name, by_kind in pairs.items() for kind, lst in by_kind.items() for p in lst))
    lines = ["# Contamination report", "",
             f"Training set: {result['train']['rows']} rows, {result['train']['clips']} clips "
             f"(unreadable: {result['train']['unreadable'] or 0}).", "",
             "Contaminated = a benchmark item matched by audio (exact, shared id, fingerprint or "
             "embedding); question matches are listed separately (templated questions repeat "
             "across datasets without any shared audio).", "",
             "| benchmark | items | contaminated | rate | " + " | ".join(KINDS) + " |",
             "|---|---|---|---|" + "---|" * len(KINDS)]
    for name, s in result["benchmarks"].items():
        lines.append(f"| {name} | {s['rows']} | {s['contaminated_items']} | "
                     f"{100 * s['contaminated_rate']:.2f}% | "
                     + " | ".join(str(s["bench_items"][k]) for k in KINDS) + " |")
    lines += ["", "(kind columns: distinct benchmark items matched)", ""]
    for name, s in result["benchmarks"].items():
        for kind, ex in s["examples"].items():
            lines += [f"## {name}: {kind} ({s['counts'][kind]} pairs)", ""]
            for p in ex:
                extra = {k: v for k, v in p.items() if k not in ("train_id", "bench_id")}
                info = json.dumps(extra, default=str)
                lines.append(f"- `{p['train_id']}` ~ `{p['bench_id']}` {info}")
            lines.append("")
    write_text_atomic(out / "contamination.md", "\n".join(lines) + "\n")
    return write_text_atomic(out / "contamination.json", json.dumps(result, indent=2, default=str))
