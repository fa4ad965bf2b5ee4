"""Run a model over benchmark rows: resumable predictions, official scores, result files.

    run_eval(cfg) -> {benchmark: result}

For each benchmark in ``cfg.eval.benchmarks`` (MMAU test-mini / test, MuchoMusic, or a JSONL of our
own rows scored by option accuracy): load the rows, skip ids already in
``predictions/<benchmark>.jsonl``, generate the rest batch by batch (each batch durable before the
next), then score everything with :mod:`audsemthinker.eval.scoring` and write
``results/<benchmark>.json`` atomically with the model, config, benchmark version and file hashes,
plus Markdown/JSON tables, a bar chart and, for MMAU test, the submission file.

Items are keyed by id from end to end: audio is loaded per item, an item whose audio is missing
or broken is excluded and reported (id and reason) and never shifts another item's prediction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from audsemthinker import format as fmt
from audsemthinker.eval import scoring
from audsemthinker.eval.benchmark_scores import (
    mmau_submission,
    muchomusic_outputs,
    score_accuracy,
    score_benchmark,
    score_variants,
)
from audsemthinker.eval.generate import (
    accuracy_of,
    decoding_dict,
    decoding_from,
    generate_answers,
    generate_rows,
    make_collator,
    prompt_row,
    row_audio,
)
from audsemthinker.eval.loading import (
    LazyModel,
    load_model,
    model_info,
)
from audsemthinker.eval.lock import run_lock
from audsemthinker.eval.predictions import PredictionStore
from audsemthinker.eval.run_prompt import SETTING_KEYS, PromptSettings, resolve_prompt_settings
from audsemthinker.eval.settings import (
    BenchmarkSpec,
    EvalSettings,
    ensure_rows,
    eval_settings,
    load_rows,
)
from audsemthinker.eval.tables import write_reports, write_summary
from audsemthinker.files import sha256_file, write_json_atomic
from audsemthinker.redact import redact

__all__ = [
    "LazyModel",
    "accuracy_of",
    "generate_answers",
    "evaluate_benchmark",
    "load_model",
    "mmau_submission",
    "model_info",
    "muchomusic_outputs",
    "predict",
    "predict_benchmark",
    "prompt_record",
    "run_eval",
    "score_accuracy",
    "score_benchmark",
    "score_variants",
    "weights_info",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------
def predict(spec: BenchmarkSpec, row: Mapping, completion: str) -> str | None:
    """The extracted prediction stored beside the raw completion.

    mmau: the ``<answer>`` text with a leading option letter mapped to its choice
    (:func:`scoring.mmau_prediction`); muchomusic: the text of the option the official rule
    picks from the answer; accuracy: the answer text. None when there is nothing to score.
    """
    if spec.scorer == "mmau":
        return scoring.mmau_prediction(completion, list(row["choices"]))
    if spec.scorer == "muchomusic":
        options, _ = scoring.muchomusic_options(row)
        pick = scoring.muchomusic_pick(fmt.extract_answer(completion), options)
        return None if pick is None else options[pick]
    text = fmt.extract_answer(completion)
    return text or None


def weights_info(cfg: DictConfig, settings: EvalSettings, label: str | None) -> dict:
    """Which weights the path names today: fingerprints of the model folder and the adapter
    (``audsemthinker.integrity.weights_fingerprint``; empty for a hub id, whose ``revision``
    names them), the revision and ``merge_adapter``. A model retrained at the same path (the
    pipeline's ``sft/merged``) changes it, so its predictions are never mixed with the old
    model's on resume. An in-memory model is named by its label instead."""
    from audsemthinker.integrity import weights_fingerprint

    return {"weights": None if label else weights_fingerprint(str(cfg.model.name_or_path)),
            "adapter_weights": weights_fingerprint(settings.adapter) if settings.adapter
            else None, "revision": cfg.model.get("revision"),
            "merge_adapter": settings.merge_adapter}


def _fingerprint(cfg, settings: EvalSettings, spec: BenchmarkSpec, rows_sha: str,
                 label: str | None, prompt: PromptSettings | None = None) -> dict:
    out = {"model": {**model_info(cfg, settings, label), **weights_info(cfg, settings, label)},
           "template": spec.template or settings.prompt,
           "system_prompt": settings.system_prompt,
            "decoding": decoding_dict(decoding_from(settings.decoding)),
           "max_audio_seconds": settings.max_audio_seconds, "rows_sha256": rows_sha}
    if prompt is not None and out["template"] == "audsem":
        out["prompt_settings"] = {k: getattr(prompt, k) for k in SETTING_KEYS}
    return out


def predict_benchmark(name: str, spec: BenchmarkSpec, rows: list[dict], store: PredictionStore,
                      lazy: LazyModel, settings: EvalSettings,
                      prompt: PromptSettings | None = None) -> dict[str, str]:
    """Generate every row not yet in ``store``; return ``{id: reason}`` of excluded rows.

    Each item's audio is checked on its own (a broken file is excluded with its reason), the
    rest of the batch is generated, and the batch is appended to the store before the next
    one starts. Completions are filed by the id of the row they were generated from.
    """
    from tqdm.auto import tqdm

    from audsemthinker.audio import AudioError

    template = spec.template or settings.prompt
    decoding = decoding_from(settings.decoding)
    pending = [prompt_row(r, template, settings.system_prompt, prompt) for r in rows
               if r["id"] not in store]
    excluded: dict[str, str] = {}
    collator = None
    if pending:  # load before the progress bar starts, so its rate is the generation rate
        collator = make_collator(lazy.get()[1], settings.max_audio_seconds)
    bar = tqdm(total=len(pending), desc=f"eval {name}", unit="item", disable=not pending)
    for start in range(0, len(pending), settings.batch_size):
        batch = pending[start:start + settings.batch_size]
        ready = []
        for row in batch:  # per item: a broken file excludes its item, not the batch
            try:
                row_audio(row, settings.max_audio_seconds)
                ready.append(row)
            except AudioError as e:
                excluded[row["id"]] = getattr(e, "reason", None) or str(e)
                log.warning("%s: excluding %s: %s", name, row["id"], e)
        if ready:
            completions = generate_rows(lazy.get()[0], collator, ready, decoding)
            store.append({"id": r["id"], "completion": c, "prediction": predict(spec, r, c)}
                         for r, c in zip(ready, completions, strict=True))
        bar.update(len(batch))
    bar.close()
    return excluded


def prompt_record(rows: list[dict], template: str, settings: EvalSettings,
                  prompt: PromptSettings | None) -> dict:
    """What the result says about the prompt: template, the run's settings and their source,
    and the first item's rendered user text (rows of our own datasets keep their own prompt)."""
    out = {"template": template, "system_prompt": settings.system_prompt}
    if prompt is not None and template == "audsem":
        out.update(prompt.record())
    first = next((r for r in rows if r.get("audio")), None)
    if first is not None:
        from audsemthinker.data.collate import prompt_of

        user = prompt_of(prompt_row(first, template, settings.system_prompt, prompt))[-1]
        parts = user.get("content") if isinstance(user.get("content"), list) else []
        texts = [p["text"] for p in parts if isinstance(p, dict) and p.get("text")]
        out["example"] = texts[-1] if texts else user.get("content")
    return out


# --------------------------------------------------------------------------------------------
# Entry
# --------------------------------------------------------------------------------------------
def evaluate_benchmark(name: str, spec: BenchmarkSpec, cfg, settings: EvalSettings,
                       lazy: LazyModel, out_dir: Path, label: str | None = None,
                       prompt: PromptSettings | None = None) -> dict:
    """Predict (resuming), score, and write the result, reports and submission of one benchmark.

    ``prompt``: the trained run's prompt settings the ``audsem`` template renders each item with
    (recorded in the result with one rendered example)."""
    import torch

    rows_path = ensure_rows(spec, name)
    rows = load_rows(rows_path, spec.limit)
    rows_sha = sha256_file(rows_path)
    meta_path = Path(spec.metadata) if spec.metadata else rows_path
    resume = str(cfg.get("resume", "auto")).lower() not in ("false", "0", "no")
    store = PredictionStore(out_dir / "predictions" / f"{name}.jsonl",
                            _fingerprint(cfg, settings, spec, rows_sha, label, prompt),
                            resume=resume)
    torch.manual_seed(int(cfg.get("seed", 0)))
    t0 = time.time()
    excluded = predict_benchmark(name, spec, rows, store, lazy, settings, prompt)
    seconds = time.time() - t0
    # The prediction is re-derived from the completion, so a file written by an older scoring
    # rule is scored by today's.
    records = {r["id"]: {**store.records[r["id"]],
                         "prediction": predict(spec, r, store.records[r["id"]]["completion"])}
               for r in rows if r["id"] in store}
    score = score_benchmark(spec, rows, records)
    result = {
        "benchmark": name, "scorer": spec.scorer, "version": spec.version, "split": spec.split,
        "model": model_info(cfg, settings, label),
        "eval_config": redact(OmegaConf.to_container(cfg.eval, resolve=True)),
        "prompt_template": spec.template or settings.prompt,
        "prompt": prompt_record(rows, spec.template or settings.prompt, settings, prompt),
        "metadata": {"path": str(meta_path), "sha256": sha256_file(meta_path)},
        "rows": {"path": str(rows_path), "sha256": rows_sha},
        "n_items": len(rows), "n_predicted": len(records),
        "excluded": {"count": len(excluded),
                     "items": [{"id": i, "reason": r} for i, r in excluded.items()]},
        "score": score,
        "accuracy": score["total"]["accuracy"] if score else None,
        "score_variants": score_variants(spec, rows, records, out_dir / "judgements" /
                                         f"{name}.jsonl") if score else {},
        "predictions": str(store.path), "generation_seconds": round(seconds, 3),
    }
    if spec.scorer == "mmau" and (spec.submission or score is None):
        sub = out_dir / "submissions" / f"{name}.json"
        write_json_atomic(sub, mmau_submission(spec, rows, records))
        result["submission"] = str(sub)
    result["reports"] = write_reports(name, result, out_dir / "reports", plot=settings.plot)
    write_json_atomic(out_dir / "results" / f"{name}.json", result)
    return result


def run_eval(cfg: DictConfig, model=None, processor=None,
             label: str | None = None) -> dict[str, dict]:
    """Evaluate the configured model on every benchmark in ``cfg.eval.benchmarks``.

    Args:
        cfg: the composed root config (``model``, ``eval``, ``run_dir``, ``seed``, ``resume``).
        model, processor: an already loaded model and its processor (e.g. right after
            training); by default the model is loaded from ``cfg.model`` + ``eval.adapter`` the
            first time an item needs generating.
        label: names an in-memory model's weights (e.g. "sft step 200 of <run_dir>"); it is
            recorded in the results and the resume fingerprint. Required with ``model``.

    Returns:
        ``{benchmark name: result dict}`` as written to ``results/<name>.json``.

    Raises:
        ConfigError: a bad ``eval`` section (naming the key).
        ValueError: a rows file with duplicate ids, or predictions from different settings
            (the model's weights included).
        RunLocked: another live process is evaluating into the same folder.
    """
    settings = eval_settings(cfg.eval)
    if model is not None and not label:
        raise ValueError("run_eval: give a label naming the in-memory model's weights (it is "
                         "recorded, and guards resuming against a different model)")
    out_dir = Path(settings.output_dir or cfg.run_dir)
    lazy = LazyModel(cfg, settings, model, processor)
    prompt = resolve_prompt_settings(settings.prompt_from, settings.prompt_settings,
                                     (settings.adapter, str(cfg.model.name_or_path)))
    with run_lock(out_dir):  # a second evaluation of this folder would interleave predictions
        results = {name: evaluate_benchmark(name, spec, cfg, settings, lazy, out_dir, label,
                                            prompt)
                   for name, spec in settings.benchmarks.items()}
        write_summary(results, out_dir / "reports")
    return results
