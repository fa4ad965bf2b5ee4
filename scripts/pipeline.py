"""The main job end to end: build data -> SFT -> export -> GRPO -> evaluate -> report.

    python scripts/pipeline.py                       # tiny base + synthetic tasks (make pipeline)
    python scripts/pipeline.py --config-name config  # the root config instead of pipeline.yaml
    python scripts/pipeline.py stages=[data,sft]     # a prefix of the stages
    python scripts/pipeline.py hydra.run.dir=outputs/run/<time>   # resume an interrupted run

The default config, ``configs/pipeline.yaml``, runs the paper's path on the tiny pretrained
base: LoRA SFT -> merge -> LoRA GRPO with beta > 0 -> evaluation (docs/tiny_base.md).
Every stage writes into its own sub-folder of the run folder (data builds go to
``paths.data_dir``) and is skipped when its output is already complete, so re-running the same
run folder continues where it stopped. The report, ``report.md`` beside ``report.json``, collects
the data build summary, SFT held-out accuracy, GRPO reward curves and the evaluation table.
Each stage is one call into the package; on real hardware run the stages as separate
``accelerate launch`` jobs (see README) rather than through this single process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from audsemthinker.config import validate

log = logging.getLogger(__name__)
STAGES = ("data", "sft", "grpo", "eval")


def stage_cfg(cfg: DictConfig, run_dir: Path, **updates) -> DictConfig:
    """A copy of ``cfg`` with its own run folder (and dotted-key updates)."""
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.run_dir = str(run_dir)
    for key, value in updates.items():
        OmegaConf.update(out, key, value, force_add=True)
    return out


def build_data(cfg: DictConfig, kind: str) -> dict:
    """Build the configured dataset for ``kind`` (sft or grpo) unless a finished build with the
    same settings is on disk (its completion marker, not the mere report, is what counts)."""
    from audsemthinker.data.registry import ensure_built

    data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    if "kind" in (data.get("kwargs") or {}):
        data.kwargs.kind = kind
        data.out_dir = str(data.out_dir).removesuffix("_sft").removesuffix("_grpo") + f"_{kind}"
    folder = ensure_built(data)
    report = json.loads((folder / "build_report.json").read_text())
    report["out_dir"] = str(folder)
    return report


def _done(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def run_sft_stage(cfg: DictConfig, run_dir: Path, data_dir: str) -> dict:
    from audsemthinker.train.export import export_merged, export_problem
    from audsemthinker.train.sft import run_sft

    sft_dir = run_dir / "sft"
    report = _done(sft_dir / "sft_report.json")
    if report is None:
        report = run_sft(stage_cfg(cfg, sft_dir, **{"data.out_dir": data_dir}))
    merged = sft_dir / "merged"
    problem = export_problem(merged, source=sft_dir, base=str(cfg.model.name_or_path))
    if problem:  # config.json alone is written before the weights: trust only the marker
        log.info("exporting %s: %s", merged, problem)
        export_merged(sft_dir, cfg.model, merged)
    report["merged"] = str(merged)
    return report


def run_grpo_stage(cfg: DictConfig, run_dir: Path, data_dir: str, init: str) -> dict:
    from audsemthinker.train.export import export_merged, export_problem
    from audsemthinker.train.grpo import run_grpo

    grpo_dir = run_dir / "grpo"
    report = _done(grpo_dir / "grpo_report.json")
    if report is None:
        report = run_grpo(stage_cfg(cfg, grpo_dir, grpo_init=init,
                                    **{"data.out_dir": data_dir}))
    merged = report.get("merged")
    problem = merged and export_problem(merged, source=grpo_dir / "final", base=init)
    if problem:
        log.info("exporting %s: %s", merged, problem)
        export_merged(grpo_dir / "final", OmegaConf.merge(cfg.model, {"name_or_path": init}),
                      merged)
    return report


def run_eval_stage(cfg: DictConfig, run_dir: Path, models: dict[str, str],
                   data_dir: str) -> dict:
    """Evaluate each named model folder on the configured benchmarks."""
    from audsemthinker.eval.harness import run_eval

    results = {}
    for name, path in models.items():
        ecfg = stage_cfg(cfg, run_dir / "eval" / name,
                         **{"model.name_or_path": path, "model.tiny": name == "base",
                            "data.out_dir": data_dir})
        results[name] = run_eval(ecfg)
    return results


def mismatch_lines(curves: dict) -> list[str]:
    """The sampler/trainer log-prob mismatch over GRPO steps (docs/sampler_mismatch.md)."""
    from audsemthinker.eval.report import markdown_table

    if not curves:
        return ["Sampler/trainer mismatch: not measured in this run.", ""]
    rows = [[name, f"{c['values'][0]:.2e}", f"{c['values'][-1]:.2e}", f"{max(c['values']):.2e}",
             " ".join(f"{v:.1e}" for v in c["values"][:: max(1, len(c["values"]) // 8)])]
            for name, c in curves.items() if c["values"]]
    return ["### Sampler/trainer mismatch", "Per-token log-prob gap between the rollout sampler "
            "and the trainer's old-policy pass, per logged step (docs/sampler_mismatch.md); "
            "curve in `grpo/grpo_stats.png`.", "",
            markdown_table(["measure", "first", "last", "max", "curve"], rows), ""]


def write_report(run_dir: Path, parts: dict) -> Path:
    """``report.md`` + ``report.json`` (atomic) from what the stages returned."""
    from audsemthinker.eval.report import markdown_table
    from audsemthinker.files import write_json_atomic, write_text_atomic
    from audsemthinker.train.common import json_safe

    lines = [f"# AudSemThinker pipeline report\n\nRun folder: `{run_dir}`\n"]
    if "data" in parts:
        d = parts["data"]
        lines += ["## Data", f"Built `{d.get('out_dir')}`: kept {d.get('kept')}, "
                  f"skipped {d.get('skipped', {})}.", ""]
    if "sft" in parts:
        s = parts["sft"]
        held = s.get("heldout", {})
        lines += ["## SFT", f"Held-out {held.get('split')} accuracy: **{held.get('accuracy')}%** "
                  f"on {held.get('n')} rows after {s.get('global_step')} steps "
                  f"(train loss {s.get('train_loss'):.4f}); loss curve `sft/loss.png`.", ""]
    if "grpo" in parts:
        g = parts["grpo"]
        held = g.get("heldout", {})
        rows = [[name, f"{r['first_quarter_mean']:.3f}", f"{r['last_quarter_mean']:.3f}"]
                for name, r in (g.get("rewards") or {}).items()]
        lines += ["## GRPO", f"{g.get('global_step')} steps. Held-out {held.get('split')} "
                  f"accuracy {held.get('accuracy_before')}% -> **{held.get('accuracy_after')}%**.",
                  "", markdown_table(["reward", "first-quarter mean", "last-quarter mean"], rows),
                  "", "![reward curves](grpo/rewards.png)", ""]
        lines += mismatch_lines(g.get("sampler_mismatch") or {})
    if "eval" in parts:
        rows = []
        for model_name, res in parts["eval"].items():
            for bench, r in res.items():
                acc = r.get("accuracy", (r.get("total") or {}).get("accuracy"))
                rows.append([model_name, bench, "-" if acc is None else f"{acc:.2f}"])
        lines += ["## Evaluation", markdown_table(["model", "benchmark", "accuracy %"], rows), ""]
    md = "\n".join(lines)
    write_text_atomic(run_dir / "report.md", md)
    write_json_atomic(run_dir / "report.json", json_safe(parts))
    return run_dir / "report.md"


@hydra.main(version_base="1.3", config_path="../configs", config_name="pipeline")
def main(cfg: DictConfig) -> None:
    # -- compose + validate ------------------------------------------------------------------
    validate(cfg)
    stages = list(cfg.get("stages") or STAGES)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"stages: unknown {sorted(unknown)}; choose from {STAGES}")
    run_dir = Path(cfg.run_dir)
    parts: dict = {}
    # -- data ----------------------------------------------------------------------------------
    parts["data"] = build_data(cfg, "sft")
    sft_data = parts["data"]["out_dir"]
    grpo_data = build_data(cfg, "grpo")["out_dir"] if "grpo" in stages else None
    models = {}
    # -- SFT -------------------------------------------------------------------------------------
    if "sft" in stages:
        parts["sft"] = run_sft_stage(cfg, run_dir, sft_data)
        models["sft"] = parts["sft"]["merged"]
    # -- GRPO ------------------------------------------------------------------------------------
    if "grpo" in stages and "sft" in models:
        parts["grpo"] = run_grpo_stage(cfg, run_dir, grpo_data, models["sft"])
        if parts["grpo"].get("merged"):
            models["grpo"] = parts["grpo"]["merged"]
    # -- evaluation ------------------------------------------------------------------------------
    if "eval" in stages:
        parts["eval"] = run_eval_stage(cfg, run_dir, models or {"base": cfg.model.name_or_path},
                                       sft_data)
    # -- report ----------------------------------------------------------------------------------
    path = write_report(run_dir, parts)
    log.info("pipeline report: %s", path)
    print(path.read_text())


if __name__ == "__main__":
    main()
