"""A benchmark's predictions scored: accuracy, the official rule per variant, MMAU's submission."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from audsemthinker import format as fmt
from audsemthinker.eval import scoring
from audsemthinker.eval.generate import accuracy_of, row_correct
from audsemthinker.eval.settings import (
    BenchmarkSpec,
)


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
