"""A trained LoRA run exports to a thinker-only folder that our loader and stock transformers
both load, and that generates what the trained model generated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_sft import ROOT, build_synthetic, compose_sft

DECODING = {"max_new_tokens": 12}


def _export_cli():
    """``scripts/export.py`` as a module (scripts/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_cli", ROOT / "scripts" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_full_dir):
    """A tiny LoRA run (a few steps at a high rate, so the adapter is far from zero)."""
    from audsemthinker.train.sft import run_sft

    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("export")
    data = build_synthetic(tmp / "data", n_train=16, n_test=4)
    cfg = compose_sft(tmp / "run", tiny_full_dir, data, [
        "train.sft.max_steps=4", "train.sft.per_device_train_batch_size=4",
        "train.sft.save_strategy=no", "train.sft.learning_rate=0.01", "eval.batch_size=4",
        "eval.decoding.max_new_tokens=4"])
    report = run_sft(cfg)
    return cfg, report


def test_export_loads_both_ways_and_generates_like_the_trained_model(trained_run, tmp_path):
    from peft import PeftModel
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration as Thinker

    from audsemthinker.data.examples import load_examples
    from audsemthinker.model.loader import ModelConfig, load_thinker
    from audsemthinker.model.processor import build_processor
    from audsemthinker.train.sft import generate_completions, split_file

    cfg, report = trained_run
    final = report["final"]
    base = load_thinker(ModelConfig(name_or_path=cfg.model.name_or_path, dtype="float32"))
    trained = PeftModel.from_pretrained(base, final).eval()
    processor = build_processor(final)
    rows = load_examples(split_file(cfg, "test"))
    _, want, _ = generate_completions(trained, processor, rows, DECODING, batch_size=4)
    assert len(want) == len(rows) == 4 and all(want)

    out = _export_cli().main([report["run_dir"], str(tmp_path / "exported")])
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni_thinker"
    assert (out / "generation_config.json").exists() and (out / "tokenizer_config.json").exists()
    assert not (out / "adapter_config.json").exists()
    exported_processor = build_processor(out)
    ours = load_thinker(ModelConfig(name_or_path=str(out), dtype="float32"))
    stock = Thinker.from_pretrained(str(out), dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in stock.named_parameters())
    for model in (ours, stock):
        _, got, _ = generate_completions(model, exported_processor, rows, DECODING, batch_size=4)
        assert got == want
    # The merge is real: the exported weights differ from the base where the adapter sits.
    proj = "model.audio_tower.proj.weight"
    fresh = load_thinker(ModelConfig(name_or_path=cfg.model.name_or_path, dtype="float32"))
    assert not torch.equal(dict(stock.named_parameters())[proj],
                           dict(fresh.named_parameters())[proj])
    trained_proj = trained.get_base_model().get_submodule("model.audio_tower.proj")
    x = torch.randn(3, trained_proj.in_features)
    with torch.no_grad():
        torch.testing.assert_close(stock.get_submodule("model.audio_tower.proj")(x),
                                   trained_proj(x), atol=1e-5, rtol=1e-5)


def test_export_of_a_folder_without_training_fails_clearly(tmp_path):
    from audsemthinker.train.export import export_merged

    with pytest.raises(FileNotFoundError, match="no adapter_config.json or model weights"):
        export_merged(tmp_path, {"name_or_path": str(tmp_path)}, tmp_path / "out")


def _pipeline():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pipeline_cli", ROOT / "scripts" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_is_trusted_only_by_its_marker(trained_run, tmp_path, monkeypatch):
    """A finished export carries a marker written last; a folder cut half-way, an export of
    an earlier training run in the same folder, or one merged into another base is re-made,
    and a failed export leaves the previous folder as it was."""
    from safetensors.torch import load_file, save_file

    from audsemthinker.train import export

    cfg, report = trained_run
    run_dir, base = report["run_dir"], str(cfg.model.name_or_path)
    out = tmp_path / "merged"
    export.export_merged(run_dir, cfg.model, out)
    assert export.export_problem(out, source=run_dir, base=base) is None
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no staging folder left

    def failing(*args, **kwargs):
        raise OSError("disk full")

    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    monkeypatch.setattr("audsemthinker.model.processor.save_processor", failing)
    with pytest.raises(OSError, match="disk full"):
        export.export_merged(run_dir, cfg.model, out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]

    assert export.export_problem(out, base="another/base") is not None
    (out / "model.safetensors").write_bytes(b"")  # killed while writing the weights
    assert "differ" in export.export_problem(out)
    # The pipeline re-exports what is not a finished export of the current SFT run.
    stage_run = tmp_path / "stage"
    sft_dir = stage_run / "sft"
    (sft_dir / "final").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(Path(report["final"]) / name, sft_dir / "final" / name)
    (sft_dir / "sft_report.json").write_text(json.dumps({"run_dir": str(sft_dir)}))
    (sft_dir / "merged").mkdir()
    (sft_dir / "merged" / "config.json").write_text("{}")  # written before the weights
    calls = []
    monkeypatch.setattr(export, "export_merged", lambda *a: calls.append(a))
    pipe = _pipeline()
    pipe.run_sft_stage(cfg, stage_run, "unused")
    assert len(calls) == 1
    # A finished export of this very run is kept ...
    monkeypatch.undo()
    export.export_merged(sft_dir, cfg.model, sft_dir / "merged")
    calls.clear()
    monkeypatch.setattr(export, "export_merged", lambda *a: calls.append(a))
    pipe.run_sft_stage(cfg, stage_run, "unused")
    assert calls == []
    # ... until the run is retrained in place: same path, other weights.
    adapter = sft_dir / "final" / "adapter_model.safetensors"
    weights = {k: v + 1 for k, v in load_file(str(adapter)).items()}
    adapter.unlink()
    save_file(weights, str(adapter))
    pipe.run_sft_stage(cfg, stage_run, "unused")
    assert len(calls) == 1
