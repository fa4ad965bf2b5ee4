"""A corpus of bad input in every source schema, written under a test's own folder.

Every good item's clip is a tone whose frequency encodes the item (:func:`freq_of`), so a test
can check that each kept row still decodes to its own clip. Every bad item names, in
``EXPECTED``, the reason its build must count it under; the ids are the ones the report must
name. Plain functions (not pytest fixtures) so any test module can import them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from fixtures_audio import audsem_meta, flac_bytes, mmau_item, muchomusic_row, tone, write_tone

DEEP = 50_000  # nesting depth past the JSON parser's recursion limit
CAP_SECONDS = 2.0  # the corpus is built with this cap; the long clips run past it

GOOD_RECORDS = ("rec0", "rec1", "rec2", "reclong")
GOOD_CSV = ("csv0", "csv1")
GOOD_MMAU = ("m0", "m1", "mlong")
GOOD_MUCHO = ("mm0", "mm1")


def freq_of(item_id: str) -> float:
    """The tone of a good item: distinct for every id in the corpus, 300-2300 Hz."""
    return 300.0 + 20.0 * (int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % 100)


def old_safe_name_of(key: str) -> str:
    """The file name the first ``safe_name`` gave a key that needed changing."""
    return f"clip_a-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


@dataclass
class Corpus:
    root: Path
    records_jsonl: Path
    records_csv: Path
    audio_dir: Path
    shards: Path
    mmau_json: Path
    mmau_root: Path
    mucho_csv: Path
    mucho_audio: Path
    outside: Path
    tar_keys: tuple[str, ...]


# What each source's build must count, by reason, and the ids it names.
EXPECTED = {
    "records": {
        "path_outside_root": {"esc_rel", "esc_abs"}, "bad_path": {"nul", "longname"},
        "malformed_json": {"records:13"}, "not_utf8": {"records:12"},
        "bad_choices": {"nested"}, "near_silent": {"quiet"}, "truncated": {"cut"},
    },
    "shards": {"malformed_json": {"tardeep"}},
    "csv": {"cell_too_large": {"records:4"}, "malformed_row": {"records:5"},
            "not_utf8": {"records:6"}},
    "mmau": {"missing_field": {"mnullq", "mnulla", "memptya"},
             "path_outside_root": {"mesc", "mabs"}, "bad_choices": {"mnullchoice"}},
    "muchomusic": {"path_outside_root": {"mm_esc"}, "missing_field": {"mm_noanswer"}},
}


def _quiet(path: Path) -> None:
    sf.write(str(path), tone(440, 0.5, amp=3e-4), 16000, subtype="PCM_16")


def _cut(path: Path) -> None:
    write_tone(path, 500, seconds=1.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a download that stopped half-way


def _records(c: Corpus, tar_free_outside: Path) -> None:
    audio = c.audio_dir
    for i in (0, 1, 2):
        write_tone(audio / f"rec{i}.wav", freq_of(f"rec{i}"))
    write_tone(audio / "reclong.wav", freq_of("reclong"), seconds=5.0, sr=8000)
    _quiet(audio / "quiet.wav")
    _cut(audio / "cut.wav")
    ten = [f"option {k}" for k in range(1, 11)]
    numeric = audsem_meta("rec1.wav", config="qa")
    numeric.update(question="Which option?\nChoices:\n" + "\n".join(
        f"{'ABCDEFGHIJ'[k]}. {t}" for k, t in enumerate(ten)), answer="B. option 2",
        choices={str(k + 1): t for k, t in enumerate(ten)})  # keys "1".."10"
    lines = [
        json.dumps({**audsem_meta("rec0.wav"), "id": "rec0"}),                      # 1
        json.dumps({**numeric, "id": "rec1"}),                                      # 2
        json.dumps({**audsem_meta("rec2.wav"), "id": "rec2"}),                      # 3
        json.dumps({**audsem_meta("reclong.wav"), "id": "reclong"}),                # 4
        json.dumps({**audsem_meta("../outside.wav"), "id": "esc_rel"}),             # 5
        json.dumps({**audsem_meta(str(tar_free_outside)), "id": "esc_abs"}),        # 6
        json.dumps({**audsem_meta("a\0b.wav"), "id": "nul"}),                       # 7
        json.dumps({**audsem_meta("x" * 300 + ".wav"), "id": "longname"}),          # 8
        json.dumps({**audsem_meta("rec0.wav"), "id": "nested",
                    "choices": "[" * DEEP + "]" * DEEP}),                           # 9
        json.dumps({**audsem_meta("quiet.wav"), "id": "quiet"}),                    # 10
        json.dumps({**audsem_meta("cut.wav"), "id": "cut"}),                        # 11
    ]
    raw = "\n".join(lines).encode() + b"\n"
    raw += b'{"id": "latin1", "question": "caf\xe9", "file_name": "rec0.wav"}\n'   # 12
    raw += b'{"id": "deep", "choices": ' + b"[" * DEEP + b"]" * DEEP + b"}\n"     # 13
    c.records_jsonl.write_bytes(b"\xef\xbb\xbf" + raw)


def _records_csv(c: Corpus) -> None:
    cols = ["id", "file_name", "question", "thinking", "semantic_elements", "answer", "choices"]
    write_tone(c.audio_dir / "csv0.wav", freq_of("csv0"))
    write_tone(c.audio_dir / "csv1.wav", freq_of("csv1"))

    def rec(item_id: str, name: str) -> list[str]:
        m = audsem_meta(name)
        return [item_id, name, m["question"], m["thinking"], m["semantic_elements"],
                m["answer"], json.dumps(m["choices"])]

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols)                                   # row 1
    w.writerow(rec("csv0", "csv0.wav"))                # row 2
    w.writerow(rec("csv1", "csv1.wav"))                # row 3
    big = rec("big", "csv0.wav")
    big[3] = "x" * 200_000                             # row 4: over the csv module's limit
    w.writerow(big)
    w.writerow(rec("short", "csv0.wav")[:4])           # row 5: a lost delimiter
    text = buf.getvalue().encode()
    latin = ",".join(rec("latin", "csv0.wav")[:2]).encode() + b',"caf\xe9",t,e,a,c\r\n'
    c.records_csv.write_bytes(b"\xef\xbb\xbf" + text + latin)  # row 6: not UTF-8


def _shards(c: Corpus) -> tuple[str, ...]:
    """Keys that meet on one file name unless names are unique per key."""
    keys = ("clip a", old_safe_name_of("clip a"), "k" * 300, "tar0")
    members = []
    for key in keys:
        meta = audsem_meta(key)
        members.append((key, "json", json.dumps(meta).encode()))
        members.append((key, "flac", flac_bytes(freq_of(key))))
    deep = b'{"question": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    members += [("tardeep", "json", deep), ("tardeep", "flac", flac_bytes(700.0))]
    c.shards.mkdir(parents=True, exist_ok=True)
    with tarfile.open(c.shards / "a.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for key, ext, data in members:
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return keys


def _mmau(c: Corpus) -> None:
    root = c.mmau_root
    for item_id in GOOD_MMAU:
        write_tone(root / "test-mini-audios" / f"{item_id}.wav", freq_of(item_id),
                   seconds=5.0 if item_id == "mlong" else 0.5)
    items = [mmau_item(i) for i in GOOD_MMAU]
    items += [{**mmau_item("mnullq"), "question": None},
              {**mmau_item("mnulla"), "answer": None},
              {**mmau_item("memptya"), "answer": ""},
              {**mmau_item("mesc"), "audio_id": "../outside.wav"},
              {**mmau_item("mabs"), "audio_id": str(c.outside)},
              {**mmau_item("mnullchoice"), "choices": ["Man", None, "Child"]}]
    c.mmau_json.write_bytes(b"\xef\xbb\xbf" + json.dumps(items).encode())


def _mucho(c: Corpus) -> None:
    from fixtures_audio import MUCHOMUSIC_COLUMNS

    rows = []
    for i, item_id in enumerate(GOOD_MUCHO):
        r = {**muchomusic_row(i), "id": item_id}
        write_tone(c.mucho_audio / r["dataset"] / f"{r['dataset_identifier']}.wav",
                   freq_of(item_id))
        rows.append(r)
    rows.append({**muchomusic_row(7), "id": "mm_esc",
                 "dataset_identifier": "../../outside"})
    rows.append({**muchomusic_row(8), "id": "mm_noanswer", "correct_answer": ""})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", *MUCHOMUSIC_COLUMNS])
    w.writeheader()
    w.writerows(rows)
    c.mucho_csv.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode())


def write_bad_corpus(root: str | Path) -> Corpus:
    """Write every source of the corpus under ``root``; returns where each one is."""
    root = Path(root)
    c = Corpus(root=root, records_jsonl=root / "src" / "records.jsonl",
               records_csv=root / "src" / "records.csv", audio_dir=root / "src" / "audio",
               shards=root / "src" / "shards", mmau_json=root / "mmau" / "mmau-test-mini.json",
               mmau_root=root / "mmau" / "root", mucho_csv=root / "mucho" / "muchomusic.csv",
               mucho_audio=root / "mucho" / "audio", outside=root / "outside.wav", tar_keys=())
    for folder in (c.audio_dir, c.mmau_root, c.mucho_audio):
        folder.mkdir(parents=True, exist_ok=True)
    # A readable file outside every declared root: what an escaping path would reach.
    write_tone(c.outside, 1234.0)
    write_tone(c.audio_dir.parent / "outside.wav", 1234.0)
    write_tone(c.mmau_root.parent / "outside.wav", 1234.0)
    write_tone(c.mucho_audio.parent / "outside.wav", 1234.0)
    _records(c, c.outside)
    _records_csv(c)
    c.tar_keys = _shards(c)
    _mmau(c)
    _mucho(c)
    return c


def dominant(wave: np.ndarray, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[int(np.argmax(spec))])
