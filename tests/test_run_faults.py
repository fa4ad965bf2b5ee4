"""Faults around a training run that must not stop it or the steps after it: a torn skip-log
line, a batch whose every row is skipped, half-written output folders and files."""

from __future__ import annotations

import json
from pathlib import Path

from audsemthinker.data.collate import read_skip_log


def test_torn_skip_log_lines_are_counted_not_raised(tmp_path):
    log = tmp_path / "skipped_rows.jsonl"
    log.write_bytes(b'{"id": "a", "reason": "skipped:audio:truncated"}\n'
                    b'{"id": "b", "rea\n'  # a rank killed mid-write
                    b'\xff\xfe not utf-8\n'
                    b'[1, 2]\n'
                    b'{"id": "a", "reason": "skipped:audio:truncated"}\n'
                    b'{"id": "c", "reason": "skipped:overlong"}\n'
                    b'{"id": "d", "reason": "skipped:over')
    got = read_skip_log(log)
    assert got == {"rows": 2, "events": 3, "torn_lines": 4,
                   "by_reason": {"skipped:audio:truncated": 2, "skipped:overlong": 1}}
    json.dumps(got)  # lands in sft_report.json as is


def test_contamination_report_files_are_replaced_whole(tmp_path):
    from audsemthinker.data.contamination import write_report

    class Unprintable:
        def __str__(self):
            raise RuntimeError("killed half-way")

    first = {"train": {"rows": 1, "clips": 1, "unreadable": 0}, "benchmarks": {}}
    write_report(first, {"b": {"exact": [{"train_id": "t", "bench_id": "b"}]}}, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = {"train": {"rows": 2, "clips": 2, "unreadable": 0}, "benchmarks": {}}
    try:
        write_report(second, {"b": {"exact": [{"train_id": "t", "x": Unprintable()}]}}, tmp_path)
    except RuntimeError:
        pass
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_processor_files_appear_whole_or_not_at_all(tmp_path, tiny_processor):
    from types import SimpleNamespace

    from audsemthinker.model.processor import build_processor, save_processor

    def killed(*args, **kwargs):
        raise OSError("killed while saving")

    broken = SimpleNamespace(tokenizer=tiny_processor.tokenizer,
                             feature_extractor=SimpleNamespace(save_pretrained=killed))
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    try:
        save_processor(broken, ckpt)
    except OSError:
        pass
    assert list(ckpt.iterdir()) == []  # no tokenizer files without the rest, no temp folder
    save_processor(tiny_processor, ckpt)
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]
    assert build_processor(ckpt).tokenizer.get_vocab() == tiny_processor.tokenizer.get_vocab()


def test_ranks_writing_config_yaml_at_once_never_collide(tmp_path, monkeypatch):
    """Every rank saves config.yaml; each goes through its own temporary file, so a rank that
    renames between another's write and rename takes nothing from it."""
    import os

    from omegaconf import OmegaConf

    from audsemthinker.train.common import save_config

    cfg = OmegaConf.create({"run_dir": str(tmp_path), "seed": 3})
    real_replace, other_rank = os.replace, []

    def replace(src, dst):
        if not other_rank:  # the other rank saves, start to end, in between
            other_rank.append(1)
            save_config(cfg, tmp_path)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    save_config(cfg, tmp_path)
    monkeypatch.undo()
    assert OmegaConf.load(tmp_path / "config.yaml") == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_a_batch_whose_every_row_is_skipped_is_a_zero_loss_step(tmp_path, tiny_full_dir,
                                                                synthetic_dir):
    """The lookup hands the trainer a stand-in (every label ignored) instead of raising, and
    the step's loss is an exact zero with finite zero gradients, after a full forward and
    backward (what keeps the other ranks of a data-parallel run in step)."""
    import shutil

    import torch
    from test_sft import compose_sft

    from audsemthinker.data.collate import IGNORE_INDEX, read_skip_log
    from audsemthinker.train.sft import SKIP_LOG, build_sft_trainer

    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    cfg = compose_sft(tmp_path / "run", tiny_full_dir, data, [
        "train.sft.max_steps=1", "train.sft.per_device_train_batch_size=2",
        "train.sft.save_strategy=no"])
    trainer, info = build_sft_trainer(cfg)
    lookup, rows = trainer.data_collator, info["rows"]["train"]
    for r in rows[2:4]:  # both rows of the next batch lose their clip (this copy's)
        assert Path(r["audio"]).resolve().is_relative_to(data.resolve())
        open(r["audio"], "wb").close()
    batch = lookup([{"row": 2}, {"row": 3}])
    assert bool((batch["labels"] == IGNORE_INDEX).all())
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(0))
    loss.backward()
    assert loss.item() == 0.0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.count_nonzero(g) == 0 for g in grads)
    good = lookup([{"row": 0}, {"row": 1}])  # a normal batch still trains
    assert trainer.compute_loss(model, good).item() > 0
    assert read_skip_log(info["run_dir"] / SKIP_LOG)["by_reason"] == {
        "skipped:audio:empty_file": 2, "batch:all_rows_skipped": 1}
