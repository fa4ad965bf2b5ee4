"""Dataset builders by name, and the one loop that turns a builder's items into files.

A builder is a generator function ``builder(out_dir, **kwargs)`` registered with
:func:`register_builder`. It yields ``(split, row)`` for each example (rows from
:mod:`audsemthinker.data.examples`), :class:`Skip` for each source item it cannot use, and
:class:`Meta` for facts about the source (file hashes, versions, an expected total).
:func:`build_dataset` owns everything else, the same for every builder: kwargs checked against
the builder's signature before any work, unique ids, every row's audio decoded through
:func:`audsemthinker.audio.load_audio` (its duration recorded, broken audio skipped by reason),
``<split>.jsonl`` written atomically, the report written, and ``strict`` handling.

Add a builder of your own::

    from audsemthinker.data.registry import register_builder

    @register_builder("my_corpus")
    def my_corpus(out_dir, *, csv_path, kind="sft"):
        ...
        yield "train", to_sft_row(...)

or name it in a config as ``builder: my_package.my_module:my_corpus``.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from audsemthinker.data.build_rows import (
    load_tokenizer,
    longer_than,
    row_tokens,
    store_capped,
)
from audsemthinker.data.builders import (
    BuildError,
    IncompleteBuild,
    Meta,
    Skip,
    available_builders,
    check_kwargs,
    get_builder,
    holdout,
    register_builder,
)
from audsemthinker.data.built import (
    build_settings,
    marker_path,
    plain_config,
    remove_stale_splits,
    resolve_folder,
    write_marker,
)
from audsemthinker.data.examples import ExampleWriter
from audsemthinker.data.report import BuildReport

__all__ = [
    "BuildError",
    "IncompleteBuild",
    "Meta",
    "Skip",
    "available_builders",
    "build_dataset",
    "build_from_config",
    "check_kwargs",
    "ensure_built",
    "get_builder",
    "holdout",
    "register_builder",
    "row_tokens",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# The build loop
# --------------------------------------------------------------------------------------------
# Over 60 lines: the one build loop all builders share; each skip reason is one branch.
def build_dataset(name: str, out_dir: str | Path, strict: bool = False, *,
                  max_seconds: float | None = None, on_long: str = "truncate",
                  min_seconds: float = 0.1, check_audio: bool = True, tokenizer: Any = None,
                  progress: bool = False, plot: bool = True, report_name: str = "build_report",
                  **kwargs: Any) -> BuildReport:
    """Run builder ``name`` and write ``out_dir/<split>.jsonl`` plus the build report.

    Args:
        name: a registered builder name (see :func:`available_builders`) or
            ``"module:function"``.
        out_dir: the dataset folder; audio the builder creates goes under ``out_dir/audio``.
        strict: raise :class:`BuildError` at the first bad item instead of skipping it.
        max_seconds: longest clip (None: no limit); see ``on_long``.
        on_long: ``truncate`` (keep the row with the clip's first ``max_seconds``, stored as
            ``out_dir/audio/capped/<id>.flac`` so the file holds what the row's ``duration``
            says) or ``skip`` (reason ``too_long``).
        min_seconds: shortest clip kept (reason ``too_short``).
        check_audio: decode every row's audio (durations, broken files). Turning it off trusts
            the source and leaves durations empty.
        tokenizer: a tokenizer/processor, or a path to load one from, for tokens-per-example
            statistics (None: not computed).
        progress: show a tqdm progress bar.
        plot: write the duration histogram PNG.
        report_name: report file stem (``<report_name>.json`` / ``.md`` / ``_durations.png``);
            builds that share a folder (MMAU test-mini and test) use different names.
        **kwargs: the builder's own arguments.

    Returns:
        The :class:`BuildReport` (also written as ``build_report.json`` / ``.md``).

    Raises:
        ValueError: an unknown builder name.
        TypeError: a builder argument the builder does not take (named in the message).
        BuildError: under ``strict`` at the first bad item.
    """
    from audsemthinker.audio import AudioError, load_audio

    builder = get_builder(name)
    kwargs = check_kwargs(builder, kwargs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A build that dies from here on must not look complete: no old report or marker survives.
    marker_path(out, report_name).unlink(missing_ok=True)
    (out / f"{report_name}.json").unlink(missing_ok=True)
    tok = load_tokenizer(tokenizer)
    report = BuildReport(name=name, out_dir=str(out), kwargs=kwargs, strict=strict,
                         audio_checks=dict(max_seconds=max_seconds, on_long=on_long,
                                           min_seconds=min_seconds, check_audio=check_audio))
    audio_root = (out / "audio").resolve()
    start, seen = time.perf_counter(), set()

    def skip(item_id: str, reason: str, detail: str = "", audio: str | None = None) -> None:
        if strict:
            raise BuildError(reason, item_id, detail)
        report.add_skip(item_id, reason, detail)
        # Audio the builder wrote for a dropped row goes too (another row may hard-link it).
        if audio and Path(audio).resolve().parent == audio_root:
            Path(audio).unlink(missing_ok=True)

    with ExitStack() as stack:
        writers: dict[str, ExampleWriter] = {}
        bar = _progress(stack, progress, name)
        for item in builder(out, **kwargs):
            if isinstance(item, Meta):
                report.meta.update(item.values)
                if bar is not None and "total" in item.values:
                    bar.total = item.values["total"]
                continue
            if bar is not None:
                bar.update(1)
            if isinstance(item, Skip):
                skip(item.id, item.reason, item.detail)
                continue
            split, row = item
            item_id = str(row.get("id") or "")
            if not item_id:
                skip("<no id>", "missing_field", "id")
                continue
            if item_id in seen:
                skip(item_id, "duplicate_id", f"split {split}")
                continue
            if not row.get("audio"):
                skip(item_id, "missing_field", "audio")
                continue
            n_samples = 0
            if check_audio:
                try:
                    wave = load_audio(row["audio"], max_seconds, on_long, min_seconds)
                except AudioError as e:
                    skip(item_id, e.reason, e.detail or str(e), row["audio"])
                    continue
                n_samples = len(wave)
                row["duration"] = round(n_samples / 16000, 3)
                if max_seconds is not None and row["duration"] >= max_seconds - 1e-3:
                    report.at_max_seconds += 1
                    if longer_than(row["audio"], max_seconds):
                        row = store_capped(row, wave, audio_root, item_id)
                        report.capped += 1
            seen.add(item_id)
            if split not in writers:
                writers[split] = stack.enter_context(ExampleWriter(out / f"{split}.jsonl"))
                report.files[split] = str(out / f"{split}.jsonl")
            writers[split].write(row)
            tokens = row_tokens(row, tok, n_samples) if tok is not None else None
            report.add_kept(split, row.get("duration") or 0.0, tokens)
    report.elapsed_s = time.perf_counter() - start
    path = report.write(out, plot=plot, stem=report_name)
    log.info("built %s: kept %d, skipped %d -> %s", name, report.total_kept,
             report.total_skipped, path)
    _check_complete(name, report)
    return report


def _check_complete(name: str, report: BuildReport) -> None:
    """Refuse a build that kept nothing, or nothing of a split the source holds.

    Only builders that declare it through :class:`Meta` are checked (``require_rows``,
    ``source_splits``): a benchmark split may legitimately hold no usable item.

    Raises:
        IncompleteBuild: naming the split, how many items were skipped and the commonest
            reason with one example's detail.
    """
    if report.meta.get("require_rows") and report.total_kept == 0:
        raise IncompleteBuild(f"{name}: 0 rows kept, {report.total_skipped} skipped"
                              f"{_top_skip(report)} (report: {report.report_path})")
    lost = [s for s in report.meta.get("source_splits") or () if not report.kept.get(s)]
    if lost:
        raise IncompleteBuild(f"{name}: split(s) {lost} exist in the source but kept 0 rows"
                              f"{_top_skip(report)} (report: {report.report_path})")


def _top_skip(report: BuildReport) -> str:
    if not report.skipped:
        return ""
    reason, v = max(report.skipped.items(), key=lambda kv: kv[1]["count"])
    ex = v["examples"][0] if v["examples"] else {"id": "", "detail": ""}
    return f"; most skipped as {reason} ({v['count']}), e.g. {ex['id']!r}: {ex['detail']}"


def _progress(stack: ExitStack, enabled: bool, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return stack.enter_context(tqdm(desc=f"build {name}", unit="item"))


def build_from_config(data_cfg: Any, progress: bool = True) -> BuildReport:
    """Build the dataset a ``configs/data/*.yaml`` node describes.

    The node holds ``builder``, ``out_dir``, ``strict``, ``kwargs`` (the builder's arguments),
    and optionally ``audio`` (``max_seconds``, ``on_long``, ``min_seconds``, ``check_audio``),
    ``tokenizer`` and ``report_name``. After the build, split files of an older build that this
    one did not write are removed, and the completion marker (the settings and their hash,
    :mod:`audsemthinker.data.built`) is written last.

    Raises:
        ValueError / TypeError / BuildError: as :func:`build_dataset`; a node key that is not
            one of the above is a TypeError naming it.
    """
    cfg = plain_config(data_cfg)
    known = {"builder", "out_dir", "strict", "kwargs", "audio", "tokenizer", "report_name"}
    unknown = set(cfg) - known
    if unknown:
        raise TypeError(f"data config: unknown key(s) {sorted(unknown)}; expected {sorted(known)}")
    report_name = cfg.get("report_name") or "build_report"
    report = build_dataset(cfg["builder"], cfg["out_dir"], bool(cfg.get("strict", False)),
                           tokenizer=cfg.get("tokenizer"), progress=progress,
                           report_name=report_name,
                           **(cfg.get("audio") or {}), **(cfg.get("kwargs") or {}))
    written = [Path(p).name for p in report.files.values()]
    remove_stale_splits(Path(cfg["out_dir"]), written, report_name, cfg.get("kwargs") or {})
    write_marker(cfg["out_dir"], report_name, build_settings(cfg), written)
    return report


def ensure_built(data_cfg: Any, progress: bool = True) -> Path:
    """The folder holding the rows a data config describes, built first when needed.

    A folder is trusted only when its completion marker holds the same settings; a folder built
    with other settings is left alone and this config gets ``<out_dir>-<hash>`` (see
    :mod:`audsemthinker.data.built`); a half-written folder is rebuilt.

    Returns:
        The folder to read the splits from (``out_dir`` or its keyed sibling).
    """
    cfg = plain_config(data_cfg)
    folder, needs_build = resolve_folder(cfg)
    if needs_build:
        log.info("building data '%s' into %s", cfg.get("builder"), folder)
        build_from_config({**cfg, "out_dir": str(folder)}, progress=progress)
    return folder
