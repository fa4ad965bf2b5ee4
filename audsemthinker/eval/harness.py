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
from audsemthinker.eval.generate import (  # noqa: F401  (accuracy_of, generate_answers: API)
    accuracy_of,
    decoding_dict,
    decoding_from,
    generate_answers,
    generate_rows,
    make_collator,
    prompt_row,
    row_audio,
    row_correct,
)
from audsemthinker.eval.lock import run_lock
from audsemthinker.eval.predictions import PredictionStore
from audsemthinker.eval.report import sha256_file, write_json_atomic
from audsemthinker.eval.run_prompt import SETTING_KEYS, PromptSettings, resolve_prompt_settings
from audsemthinker.eval.settings import (
    BenchmarkSpec,
    EvalSettings,
    ensure_rows,
    eval_settings,
    load_rows,
)
from audsemthinker.eval.tables import write_reports, write_summary
from audsemthinker.redact import redact

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def load_model(cfg: DictConfig, settings: EvalSettings):
    """Load the thinker named by ``cfg.model`` (hub id or folder), plus ``eval.adapter`` if set.

    Returns:
        ``(model, processor)``; the model in eval mode on ``settings.device``.
    """
    import torch

    from audsemthinker.config import to_dataclass
    from audsemthinker.model.loader import ModelConfig, check_token_ids, load_thinker
    from audsemthinker.model.processor import build_processor

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    mcfg = to_dataclass(cfg.model, ModelConfig)
    model = load_thinker(mcfg, device=device)
    processor = build_processor(mcfg.name_or_path)
    check_token_ids(model, processor.tokenizer)
    if settings.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, settings.adapter, is_trainable=False)
        if settings.merge_adapter:
            model = model.merge_and_unload()
        log.info("evaluating adapter %s on %s", settings.adapter, mcfg.name_or_path)
    return model.eval(), processor


class _LazyModel:
    """Loads the model on first use, so re-scoring a finished evaluation loads nothing."""

    def __init__(self, cfg, settings, model=None, processor=None):
        self.cfg, self.settings, self.pair = cfg, settings, None
        if model is not None:
            if processor is None:
                raise ValueError("run_eval: pass the processor together with the model")
            self.pair = (model.eval(), processor)
        elif processor is not None:
            raise ValueError("run_eval: a processor without a model")

    def get(self):
        if self.pair is None:
            self.pair = load_model(self.cfg, self.settings)
        return self.pair


def model_info(cfg: DictConfig, settings: EvalSettings, label: str | None = None) -> dict:
    """What was evaluated: the base (hub id or folder), the adapter, the dtype, and the label
    of a model handed over in memory (whose weights the path alone does not name)."""
    return {"name_or_path": str(cfg.model.name_or_path), "adapter": settings.adapter,
            "dtype": str(cfg.model.get("dtype")), "in_memory": label}


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
                      lazy: _LazyModel, settings: EvalSettings,
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
# Scoring
# --------------------------------------------------------------------------------------------
def score_accuracy(rows: list[Mapping], completions: Mapping[str, str]) -> dict:
    """Option accuracy of our own rows (:func:`row_correct`), total and per ``task``.

    Returns:
        ``{benchmark, method, n_items, total, groups: {"task": {...}}}`` with ``accuracy`` in
        percent, ``correct`` and ``n`` per cell; the total equals :func:`accuracy_of`.
    """
    total, groups = [0, 0], {}
    for row in rows:
        ok = row_correct(row, completions[row["id"]])
        for t in (total, groups.setdefault(str(row.get("task", "all")), [0, 0])):
            t[0] += ok
            t[1] += 1

    def cell(t):
        return {"accuracy": 100.0 * t[0] / t[1] if t[1] else None, "correct": t[0], "n": t[1]}
    out = {"benchmark": "accuracy", "method": "option_match", "n_items": len(rows),
           "total": cell(total), "groups": {"task": {k: cell(v) for k, v in groups.items()}}}
    if rows:  # the very function the SFT / GRPO held-out evaluation reports
        out["total"]["accuracy"] = accuracy_of(rows, [completions[r["id"]] for r in rows])
    return out


def score_benchmark(spec: BenchmarkSpec, rows: list[dict],
                    records: Mapping[str, dict]) -> dict | None:
    """Score the rows with the benchmark's official rule; None without gold answers.

    ``rows`` are all rows asked for, ``records`` the generated ones. MMAU leaves a row never
    generated out of the denominator (counted as skipped), as its official script leaves out an
    item without ``model_output``; MuchoMusic counts it unanswered (wrong). Our own rows are
    scored over the generated ones.
    """
    if spec.scorer == "mmau":
        if rows and not any(str(r.get("answer") or "").strip() for r in rows):
            return None  # MMAU test: answers withheld, the server scores the submission
        return scoring.score_mmau(rows, {i: r["prediction"] for i, r in records.items()})
    if spec.scorer == "muchomusic":
        return scoring.score_muchomusic(rows, muchomusic_outputs(records))
    return score_accuracy([r for r in rows if r["id"] in records],
                          {i: r["completion"] for i, r in records.items()})


def muchomusic_outputs(records: Mapping[str, dict]) -> dict[str, str]:
    """The text each MuchoMusic pick reads: the ``<answer>`` content (whole text if absent)."""
    return {i: fmt.extract_answer(r["completion"]) for i, r in records.items()}


def score_variants(spec: BenchmarkSpec, rows: list[dict], records: Mapping[str, dict],
                   judge_cache: Path | None = None) -> dict:
    """Other readings reported beside the official score.

    For MuchoMusic: the word-boundary letter pick (``word_boundary``) and, when ``spec.judge``
    is set, the LLM judge by AudioBench's protocol (``llm_judge``, verdicts cached per item in
    ``judge_cache``, the judge model and endpoint recorded). None for the other scorers.
    """
    if spec.scorer != "muchomusic":
        return {}
    outputs = muchomusic_outputs(records)
    out = {"word_boundary": scoring.score_muchomusic(rows, outputs, pick="word_boundary")}
    if spec.judge:
        from audsemthinker.eval.judge import judge_muchomusic
        from audsemthinker.judge import JudgeClient

        settings = dict(spec.judge)
        protocol = settings.pop("protocol", "binary")
        out["llm_judge"] = judge_muchomusic(rows, outputs, JudgeClient(**settings), judge_cache,
                                            protocol=protocol)
    return out


_MMAU_KEYS = ("id", "audio_id", "question", "choices", "answer", "dataset", "task", "split",
              "category", "sub-category", "difficulty")


def mmau_submission(spec: BenchmarkSpec, rows: list[dict], records: Mapping[str, dict]) -> list:
    """The MMAU submission: each item plus ``model_output`` and ``model_prediction`` (same value).

    Items come from the official metadata file when ``spec.metadata`` is set (verbatim), else
    from the rows' MMAU fields. An item never generated (excluded audio) carries neither key,
    which the official script skips; an empty answer is written as ``""``, which it scores
    wrong, so its printed accuracy equals ours.
    """
    if spec.metadata and Path(spec.metadata).suffix == ".json":
        import json

        items = json.loads(Path(spec.metadata).read_text(encoding="utf-8"))
        wanted = {r["id"] for r in rows}
        items = [it for it in items if str(it.get("id")) in wanted]
    else:
        items = [{k: r[k] for k in _MMAU_KEYS if k in r} for r in rows]
    out = []
    for item in items:
        item = dict(item)
        pred = records.get(str(item["id"]), {}).get("prediction")
        if pred is not None:
            item["model_output"] = item["model_prediction"] = pred
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------
# Entry
# --------------------------------------------------------------------------------------------
def evaluate_benchmark(name: str, spec: BenchmarkSpec, cfg, settings: EvalSettings,
                       lazy: _LazyModel, out_dir: Path, label: str | None = None,
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
    lazy = _LazyModel(cfg, settings, model, processor)
    prompt = resolve_prompt_settings(settings.prompt_from, settings.prompt_settings,
                                     (settings.adapter, str(cfg.model.name_or_path)))
    with run_lock(out_dir):  # a second evaluation of this folder would interleave predictions
        results = {name: evaluate_benchmark(name, spec, cfg, settings, lazy, out_dir, label,
                                            prompt)
                   for name, spec in settings.benchmarks.items()}
        write_summary(results, out_dir / "reports")
    return results
