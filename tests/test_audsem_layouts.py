"""AudSem in every layout it has been published in: the hub's CSV tables joined to a clip
folder, the older shards with JSON validation, the release's shard schema for all four configs.
Each build keeps the expected rows, each decoding to its own clip at 16 kHz; a build that
cannot give rows says why in one line and exits non-zero. Then the clip downloader against a
fake, and build -> SFT on the CSV layout."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from fixtures_audio import (
    audsem_meta,
    dominant_freq,
    flac_bytes,
    write_tone,
    write_webdataset_tar,
)

from audsemthinker import format as fmt
from audsemthinker.audio import load_audio
from audsemthinker.data.audsem_download import DownloadError, download_clips, parse_clip
from audsemthinker.data.examples import load_examples
from audsemthinker.data.registry import IncompleteBuild, build_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("aac", "creative_qa", "mc_qa", "qa")

# The release strips newlines inside semantic_elements: three categories glued on one line.
GLUED = ("1. Sound-generating animated beings with descriptive adjectives:- a barking dog- a man"
         "2. Physical objects/substances generating sound:- a wooden door"
         "3. Actions/mechanisms of sound generation:- slamming- barking")


def ref(i: int) -> str:
    """A clip reference as the tables write it: ``<video id> (<start>-<end>)``, ``.`` as ``_``."""
    return f"vid{i:08d} ({i}_5-{i + 2}_0)"


def freq(i: int) -> float:
    return 400.0 + 100 * i


def csv_row(config: str, i: int, semantic: bool = True) -> dict:
    """One table row in the release's field names (``aac`` has ``caption``, not ``answer``)."""
    meta = audsem_meta(ref(i), config=config, question=f"What makes the sound in clip {i}?",
                       semantic=semantic)
    if semantic:
        meta["semantic_elements"] = GLUED
    if config == "aac":
        meta["caption"] = meta.pop("answer")
        meta.pop("question")
    if isinstance(meta.get("choices"), dict):
        meta["choices"] = json.dumps(meta["choices"])
    return meta


def write_table(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def csv_layout(root: Path, config: str = "mc_qa", train=(1, 2, 3), valid=(4,),
               missing=(), semantic: bool = True) -> tuple[Path, Path]:
    """``<root>/tables/<config>/{train,valid}.csv`` plus ``<root>/clips/<ref>.flac`` at 48 kHz
    (clips in ``missing`` are left out)."""
    tables, clips = root / "tables", root / "clips"
    for split, ids in (("train", train), ("valid", valid)):
        if not ids:
            continue
        write_table(tables / config / f"{split}.csv", [csv_row(config, i, semantic) for i in ids])
        for i in ids:
            if i not in missing:
                write_tone(clips / f"{ref(i)}.flac", freq(i), seconds=1.0, sr=48000, fmt="FLAC")
    return tables, clips


def own_clips(rows: list[dict], out: Path) -> None:
    """Every row's audio is stored at 16 kHz under ``out/audio`` and holds its own tone."""
    for r in rows:
        assert Path(r["audio"]).parent == (out / "audio").resolve(), r["id"]
        assert sf.info(r["audio"]).samplerate == 16000, r["id"]
        i = int(r["file_name"][3:11])
        assert abs(dominant_freq(load_audio(r["audio"])) - freq(i)) < 10, r["id"]


def _build(out: Path, **kwargs):
    report = build_dataset("audsem", out, plot=False, **kwargs)
    rows = {s: load_examples(p) for s, p in report.files.items()}
    return report, rows


# --------------------------------------------------------------------------------------------
# The hub's CSV tables + a clip folder
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS)
def test_csv_layout_builds_every_config_with_its_own_clips(tmp_path, config):
    tables, clips = csv_layout(tmp_path, config, missing=(3,))
    report, rows = _build(tmp_path / "out", config=config, csv=str(tables),
                          audio_dir=str(clips))
    assert {s: [r["file_name"] for r in v] for s, v in rows.items()} == {
        "train": [ref(1), ref(2)], "valid": [ref(4)]}
    assert rows["train"][0]["id"] == f"{ref(1)}_qa_0"  # the shards' key form
    assert report.skip_counts() == {"missing_audio": 1}  # counted, naming the clip
    (example,) = report.skipped["missing_audio"]["examples"]
    assert ref(3) in example["detail"] and "download_audsem_audio" in example["detail"]
    own_clips(rows["train"] + rows["valid"], tmp_path / "out")
    target = rows["train"][0]["messages"][-1]["content"][0]["text"]
    if config == "aac":  # the caption column is the target's answer
        assert "<answer>A steady tone plays.</answer>" in target
    if config == "mc_qa":
        assert rows["train"][0]["choices"] == ["a tone", "a dog", "rain"]


def test_the_newline_free_semantic_block_parses_into_its_categories(tmp_path):
    tables, clips = csv_layout(tmp_path, "qa", train=(1,), valid=())
    _, rows = _build(tmp_path / "out", config="qa", csv=str(tables), audio_dir=str(clips),
                     splits=["train"])
    (row,) = rows["train"]
    block = fmt.parse(row["messages"][-1]["content"][0]["text"]).semantic_elements
    assert fmt.parse_semantic_elements(block) == {
        "agents": ["a barking dog", "a man"], "sources": ["a wooden door"],
        "mechanisms": ["slamming", "barking"]}


def test_columns_are_mapped_per_config_and_overridable(tmp_path):
    tables, clips = csv_layout(tmp_path, "qa", train=(1,), valid=())
    path = tables / "qa" / "train.csv"
    rows = [{("clip" if k == "file_name" else "response" if k == "answer" else k): v
             for k, v in csv_row("qa", 1).items()}]
    write_table(path, rows)
    with pytest.raises(IncompleteBuild) as e:
        _build(tmp_path / "a", config="qa", csv=str(tables), audio_dir=str(clips),
               splits=["train"])
    msg = str(e.value)
    assert "'file_name'" in msg and "'answer'" in msg and "'response'" in msg and "\n" not in msg
    _, built = _build(tmp_path / "b", config="qa", csv=str(tables), audio_dir=str(clips),
                      splits=["train"], columns={"answer": "response", "file_name": "clip"})
    assert [r["answer"] for r in built["train"]] == ["A steady tone plays."]


def test_text_only_tables_without_an_audio_folder_are_refused(tmp_path):
    tables, _ = csv_layout(tmp_path, "mc_qa")
    with pytest.raises(IncompleteBuild, match="audio_dir is not set.*download_audsem_audio"):
        _build(tmp_path / "out", csv=str(tables))


def test_no_rows_kept_or_a_lost_split_fails_after_writing_the_report(tmp_path):
    tables, clips = csv_layout(tmp_path, "mc_qa", missing=(1, 2, 3, 4))
    clips.mkdir()  # the folder is there, none of the clips
    with pytest.raises(IncompleteBuild, match=r"0 rows kept.*missing_audio \(4\)"):
        _build(tmp_path / "none", csv=str(tables), audio_dir=str(clips))
    assert json.loads((tmp_path / "none" / "build_report.json").read_text())[
        "skipped"]["missing_audio"]["count"] == 4
    tables, clips = csv_layout(tmp_path / "v", "mc_qa", missing=(4,))
    with pytest.raises(IncompleteBuild, match=r"\['valid'\] exist in the source but kept 0"):
        _build(tmp_path / "lost", csv=str(tables), audio_dir=str(clips))


def test_the_hub_route_joins_a_text_only_table_to_the_clip_folder(tmp_path):
    """``datasets.load_dataset`` over a local CSV stands in for the hub's current tables."""
    tables, clips = csv_layout(tmp_path, "mc_qa", train=(1, 2), valid=())
    hub = dict(hub="csv", splits=["train"], hub_kwargs={
        "name": None, "data_files": {"train": str(tables / "mc_qa" / "train.csv")}})
    with pytest.raises(IncompleteBuild, match="no audio column.*audio_dir"):
        _build(tmp_path / "a", **hub)
    _, rows = _build(tmp_path / "b", audio_dir=str(clips), **hub)
    assert [r["file_name"] for r in rows["train"]] == [ref(1), ref(2)]
    own_clips(rows["train"], tmp_path / "b")


def test_records_read_each_split_and_are_stored_at_16k(tmp_path):
    tables, clips = csv_layout(tmp_path, "mc_qa")
    _, rows = _build(tmp_path / "out", records=str(tables / "mc_qa" / "{split}.csv"),
                     audio_dir=str(clips))
    assert {s: len(v) for s, v in rows.items()} == {"train": 3, "valid": 1}
    own_clips(rows["train"] + rows["valid"], tmp_path / "out")


# --------------------------------------------------------------------------------------------
# Shards: the release's schema (all four configs) and the older layout's JSON validation
# --------------------------------------------------------------------------------------------
def release_sample(config: str, i: int) -> dict:
    meta = audsem_meta(ref(i), config=config, question=f"What is heard in clip {i}?")
    meta["semantic_elements"] = GLUED
    if config == "aac":  # the release's aac samples: a caption, a generated question
        meta["caption"] = meta.pop("answer")
    return {"__key__": f"{ref(i)}_qa_0", "json": meta, "flac": flac_bytes(freq(i), 1.0)}


@pytest.mark.parametrize("config", CONFIGS)
def test_release_shard_schema_builds_every_config(tmp_path, config):
    root = tmp_path / config
    write_webdataset_tar(root / "train" / "0000.tar", [release_sample(config, i) for i in (1, 2)])
    write_webdataset_tar(root / "valid" / "0000.tar", [release_sample(config, 3)])
    report, rows = _build(tmp_path / "out", config=config, shards=str(root))
    assert report.total_skipped == 0
    assert {s: [r["file_name"] for r in v] for s, v in rows.items()} == {
        "train": [ref(1), ref(2)], "valid": [ref(3)]}
    own_clips(rows["train"] + rows["valid"], tmp_path / "out")


def test_old_layout_train_shards_and_json_validation(tmp_path):
    root = tmp_path / "mc_qa"
    write_webdataset_tar(root / "train" / "0000.tar", [release_sample("mc_qa", i) for i in (1, 2)])
    valid = root / "valid"
    items = []
    for n, i in enumerate((5, 6), 1):  # the clips beside the JSON, named by a relative path
        write_tone(valid / "audio" / f"{n}.flac", freq(i), seconds=1.0, sr=48000, fmt="FLAC")
        items.append(dict(audsem_meta(ref(i)), audio=f"audio/{n}.flac", id=f"valid_{n}"))
    (valid / "valid.json").write_text(json.dumps(items))
    report, rows = _build(tmp_path / "out", shards=str(root))
    assert report.meta["source_splits"] == ["train", "valid"]
    assert [r["id"] for r in rows["valid"]] == ["valid_1", "valid_2"]
    own_clips(rows["train"] + rows["valid"], tmp_path / "out")


def test_more_than_one_source_says_to_null_the_others(tmp_path):
    with pytest.raises(ValueError, match=r"exactly one.*data.kwargs.shards=null"):
        build_dataset("audsem", tmp_path, shards="a", records="b", audio_dir=".")


# --------------------------------------------------------------------------------------------
# The script: a non-zero exit with the cause in one line
# --------------------------------------------------------------------------------------------
def _script(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_data.py"), "data=audsem_semantic",
         f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}",
         "progress=false", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("case, expect", [
    ("no_audio_dir", "data.kwargs.audio_dir is not set"),
    ("wrong_columns", "available columns"),
])
def test_build_script_exits_nonzero_with_the_cause_in_one_line(tmp_path, case, expect):
    tables, clips = csv_layout(tmp_path, "mc_qa")
    overrides = [f"data.kwargs.csv={tables}"]
    if case == "wrong_columns":
        write_table(tables / "mc_qa" / "train.csv", [
            {("reasoning" if k == "thinking" else k): v for k, v in csv_row("mc_qa", 1).items()}])
        overrides.append(f"data.kwargs.audio_dir={clips}")
    proc = _script(tmp_path, *overrides)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("build failed:")]
    assert expect in line and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------
# The clip downloader, against a fake
# --------------------------------------------------------------------------------------------
class FakeTube:
    """Saves a tone per clip; some videos fail for good, some once, with a fake clock."""

    def __init__(self, gone=(), flaky=()):
        self.gone, self.flaky = set(gone), set(flaky)
        self.calls, self.now, self.sleeps = [], 0.0, []

    def fetch(self, clip, dest):
        self.calls.append((clip.video_id, clip.start, clip.end, self.now))
        self.now += 0.5  # a request takes half a second
        if clip.video_id in self.gone:
            raise DownloadError("unavailable", "Video unavailable")
        if clip.video_id in self.flaky:
            self.flaky.discard(clip.video_id)
            raise ConnectionResetError("reset by peer")
        i = int(clip.video_id[3:])
        return write_tone(f"{dest}.flac", freq(i), seconds=1.0, sr=48000, fmt="FLAC")

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_parse_clip_reads_the_tables_references():
    clip = parse_clip(f"{ref(7)}.mp4")
    assert (clip.name, clip.video_id, clip.start, clip.end) == (ref(7), "vid00000007", 7.5, 9.0)
    assert parse_clip("not a clip") is None and parse_clip("vid00000001 (5_0-2_0)") is None


def test_downloader_is_resumable_rate_limited_and_counts_failures(tmp_path):
    refs = [ref(1), ref(2), ref(3), ref(2), "junk name"]
    tube = FakeTube(gone={"vid00000002"}, flaky={"vid00000003"})
    out = tmp_path / "clips"
    summary = download_clips(refs, out, tube.fetch, min_interval_s=2.0, retries=1,
                             sleep=tube.sleep, clock=lambda: tube.now)
    assert summary["failed"] == {"unavailable": 1, "not_a_clip": 1}
    assert (summary["downloaded"], summary["requested"]) == (2, 3)  # clip 3 on its retry
    starts = [c[3] for c in tube.calls]
    assert all(b - a >= 2.0 - 1e-9 for a, b in zip(starts, starts[1:]))  # rate-limited
    assert sorted(p.name for p in out.glob("*.flac")) == [f"{ref(1)}.flac", f"{ref(3)}.flac"]
    assert json.loads((out / "download_report.json").read_text())["failed"] == summary["failed"]
    tube.calls.clear()  # a second run: nothing present is fetched, nothing gone is retried
    again = download_clips(refs, out, tube.fetch, sleep=tube.sleep, clock=lambda: tube.now)
    assert tube.calls == [] and again["present"] == 2 and again["skipped_failed_before"] == 1
    download_clips(refs, out, tube.fetch, retry_failed=True, sleep=tube.sleep,
                   clock=lambda: tube.now)
    assert [c[0] for c in tube.calls] == ["vid00000002"]  # asked again, once: gone for good


def test_download_script_then_build_uses_the_fetched_clips(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import download_audsem_audio as script
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    tables, _ = csv_layout(tmp_path, "mc_qa")
    tube = FakeTube(gone={"vid00000003"})
    out = tmp_path / "fetched"
    status = script.main(["--csv-root", str(tables), "--configs", "mc_qa", "--out", str(out),
                          "--min-interval", "0"], fetch=tube.fetch)
    assert status == 1  # one clip failed: the run says so
    report, rows = _build(tmp_path / "out", csv=str(tables), audio_dir=str(out))
    assert [r["file_name"] for r in rows["train"]] == [ref(1), ref(2)]
    assert report.skip_counts() == {"missing_audio": 1}
    own_clips(rows["train"] + rows["valid"], tmp_path / "out")


# --------------------------------------------------------------------------------------------
# build -> SFT on the CSV layout
# --------------------------------------------------------------------------------------------
def test_csv_layout_build_then_sft_runs_a_few_steps(tmp_path, tiny_full_dir):
    import math

    import torch
    from test_sft import compose_sft

    from audsemthinker.train.common import read_metrics
    from audsemthinker.train.sft import build_sft_trainer

    tables, clips = csv_layout(tmp_path, "mc_qa", train=(1, 2, 3, 4), valid=(5, 6),
                               semantic=False)
    data = tmp_path / "data"
    _build(data, csv=str(tables), audio_dir=str(clips), variant="simple")
    torch.set_num_threads(2)
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "train.sft.max_steps=2", "train.sft.per_device_train_batch_size=2",
        "train.sft.logging_steps=1", "train.sft.save_strategy=no",
        "train.sft.eval_strategy=no"])
    trainer, info = build_sft_trainer(cfg)
    trainer.train()
    records = read_metrics(Path(info["run_dir"]) / "metrics.jsonl")
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    assert records[-1]["step"] == 2 and losses and all(math.isfinite(x) for x in losses)
