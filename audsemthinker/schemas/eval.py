"""The ``eval`` section and its benchmark entries."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BenchmarkSpec:
    """One entry of ``eval.benchmarks``.

    Attributes:
        scorer: ``mmau`` (official token-set rule), ``muchomusic`` (official letter/text pick)
            or ``accuracy`` (our rows: option match against the row's gold).
        rows: the JSONL of rows to evaluate (the benchmark builders' output, or e.g. the
            synthetic test split).
        metadata: the official metadata file (MMAU JSON / MuchoMusic CSV) whose sha256 every
            result records; the rows file is hashed when unset. The MMAU submission copies its
            items verbatim when it is a JSON file.
        version: benchmark version recorded in results ("original", "v05.15.25", ...).
        split: e.g. "test-mini" or "test" (recorded; the MMAU test split has no answers and
            gets a submission file instead of a score).
        submission: also write the MMAU submission file when answers are present.
        template: prompt template for this benchmark (default ``eval.prompt``).
        limit: evaluate only the first N rows (quick checks).
        judge: MuchoMusic only: also score with an LLM judge, AudioBench's protocol
            (``eval/judge.py``), reported beside the official score. The keys of
            ``audsemthinker.judge.JudgeClient`` (``base_url``, ``model``, ``api_key_env``,
            ``timeout_s``, ``max_retries``, ``backoff_s``, ``concurrency``,
            ``on_unavailable``) plus ``protocol`` (``binary``).
    """

    scorer: str = "mmau"
    rows: str = ""
    metadata: str | None = None
    version: str = "original"
    split: str | None = None
    submission: bool = False
    template: str | None = None
    limit: int | None = None
    judge: dict | None = None


@dataclass
class EvalSettings:
    """The ``eval`` section (see ``configs/eval/paper.yaml`` for every field in use).

    ``prompt_from`` / ``prompt_settings``: where the ``audsem`` prompt's settings come from
    (:mod:`audsemthinker.eval.run_prompt`). ``heldout_limit``: rows of the in-run held-out
    evaluation after SFT / GRPO (None: all).
    """

    benchmarks: dict[str, BenchmarkSpec] = field(default_factory=dict)
    prompt: str = "audsem"
    system_prompt: bool = True
    adapter: str | None = None
    merge_adapter: bool = False
    batch_size: int = 8
    decoding: dict = field(default_factory=dict)
    max_audio_seconds: float | None = None
    device: str = "auto"
    output_dir: str | None = None
    plot: bool = True
    prompt_from: str | None = "auto"
    prompt_settings: dict = field(default_factory=dict)
    heldout_limit: int | None = None
