"""Batched generation for evaluation: prompts from rows, decoding from config, left padding.

:func:`prompt_row` turns any row into a prompt row, :func:`generate_rows` turns a batch of prompt
rows into completions through the prompt-only ``AudioCollator`` (the same rendering as SFT), and
:func:`accuracy_of` is the ONE rule for held-out accuracy, used by the harness and by the SFT /
GRPO held-out evaluation alike, so both report the same number.

Every generate call suppresses the ``<|AUDIO|>`` / ``<|IMAGE|>`` / ``<|VIDEO|>`` placeholders (a
sampled placeholder breaks the next forward) and pads on the left (right padding in batched
generation was a bug of the public release: the model then continues after pad tokens).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from audsemthinker import format as fmt

TEMPLATES = ("audsem", "r1_aqa", "muchomusic")
"""Prompt templates by name: the paper's (system prompt + instruction prefix + question +
choices), R1-AQA's, and MuchoMusic's own. Rows of our own datasets carry their prompt messages."""


@dataclass
class Decoding:
    """The ``eval.decoding`` config section.

    Greedy when ``do_sample`` is false and ``num_beams`` is 1; beam search with ``num_beams`` > 1
    (the paper: 5 beams, 400 new tokens); sampling with ``do_sample`` (temperature, top_p, top_k
    are only read then).
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 50
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0


def decoding_from(section: Mapping | Decoding | None) -> Decoding:
    """Build :class:`Decoding` from a config mapping; unknown keys are an error naming them.

    Raises:
        ValueError: an unknown key or an impossible value (e.g. ``num_beams`` < 1).
    """
    if isinstance(section, Decoding):
        d = section
    else:
        data = dict(section or {})
        unknown = sorted(set(data) - set(Decoding.__dataclass_fields__))
        if unknown:
            raise ValueError(f"eval.decoding: unknown keys {unknown}; known: "
                             f"{sorted(Decoding.__dataclass_fields__)}")
        d = Decoding(**data)
    if d.max_new_tokens < 1 or d.num_beams < 1:
        raise ValueError(f"eval.decoding: max_new_tokens and num_beams must be >= 1, got {d}")
    if d.do_sample and d.temperature <= 0:
        raise ValueError("eval.decoding: sampling needs temperature > 0")
    return d


def generation_kwargs(decoding: Decoding, tokenizer) -> dict:
    """Keyword arguments for ``model.generate``: decoding, placeholder suppression, pad/eos ids.

    Sampling parameters are passed only when sampling (``do_sample=False`` makes generate ignore
    any the checkpoint's generation config holds).
    """
    from audsemthinker.model.tokens import PLACEHOLDER_TOKENS

    suppress = [tokenizer.convert_tokens_to_ids(t) for t in PLACEHOLDER_TOKENS]
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    kw = dict(max_new_tokens=decoding.max_new_tokens, num_beams=decoding.num_beams,
              do_sample=decoding.do_sample, suppress_tokens=suppress, eos_token_id=eos,
              pad_token_id=tokenizer.pad_token_id, num_return_sequences=1,
              repetition_penalty=decoding.repetition_penalty)
    if decoding.num_beams > 1:
        kw.update(length_penalty=decoding.length_penalty)
    if decoding.do_sample:
        kw.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k)
    return kw


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------
def prompt_text(row: Mapping, template: str, settings=None) -> str:
    """The user text of a benchmark row under a named template.

    With ``settings`` (:class:`audsemthinker.eval.run_prompt.PromptSettings`, the trained run's
    prompt), the ``audsem`` text is rendered now from the item's question and options, so the
    model sees the prompt it was trained with. Otherwise the builder's
    ``row["prompts"][template]`` is used when present, or the text is rendered from the row's
    question and options with :mod:`audsemthinker.format`.

    Raises:
        ValueError: an unknown template, or a row with neither prompts nor a question.
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
    if template == "audsem" and settings is not None and "question" in row:
        from audsemthinker.eval.run_prompt import render_audsem

        return render_audsem(row, settings)
    prompts = row.get("prompts") or {}
    if prompts.get(template):
        return str(prompts[template])
    if "question" not in row:
        raise ValueError(f"row {row.get('id')!r} has no prompts[{template!r}] and no question")
    options = list(row.get("options") or row.get("choices") or [])
    if template == "audsem":
        return fmt.user_prompt(row["question"], options or None)
    if template == "r1_aqa":
        return fmt.r1_aqa_prompt(row["question"], options)
    return fmt.muchomusic_prompt(row["question"], options)


def prompt_row(row: Mapping, template: str = "audsem", system_prompt: bool = True,
               settings=None) -> dict:
    """The row as the prompt-only collator takes it: with ``prompt`` messages to generate from.

    Rows of our own datasets keep their prompt (GRPO rows' ``prompt``, or SFT rows' ``messages``
    whose assistant turn the collator drops). Benchmark rows get ``prompt = [system?, user]``
    with the audio part first, then the template's text (:func:`prompt_text`).

    Args:
        row: a dataset row (``prompt`` / ``messages``) or a benchmark row (``audio`` plus
            ``prompts`` or question/choices).
        template: prompt template name for benchmark rows (see :data:`TEMPLATES`).
        system_prompt: prepend the model's own system prompt to benchmark rows.
        settings: the run's prompt settings for the ``audsem`` template (see
            :func:`prompt_text`).

    Raises:
        ValueError: a benchmark row without ``audio``, or as :func:`prompt_text`.
    """
    if row.get("prompt") or row.get("messages"):
        return dict(row)
    if not row.get("audio"):
        raise ValueError(f"row {row.get('id')!r} names no audio file")
    user = {"role": "user", "content": [{"type": "audio", "audio": str(row["audio"])},
                                        {"type": "text",
                                         "text": prompt_text(row, template, settings)}]}
    system = {"role": "system", "content": [{"type": "text", "text": fmt.SYSTEM_PROMPT}]}
    return {**row, "prompt": [system, user] if system_prompt else [user]}


def row_audio(row: Mapping, max_seconds: float | None = None) -> list:
    """Load every clip of a prompt row (as :func:`prompt_row` returns) as the collator would.

    The harness calls this per item before batching, so a broken file excludes that item
    (with its reason) instead of failing or reshaping a whole batch.

    Raises:
        audsemthinker.audio.AudioError: a clip is missing, unreadable, empty (``.reason``).
    """
    from audsemthinker.audio import load_audio
    from audsemthinker.data.collate import audio_paths, prompt_of

    return [load_audio(p, max_seconds=max_seconds) for p in audio_paths(row, prompt_of(row))]


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------
def make_collator(processor, max_audio_seconds: float | None = None):
    """The prompt-only :class:`AudioCollator` (left padding) that every eval batch goes through.

    Bad audio and over-long rows raise instead of being skipped: a batch must come back with
    exactly the rows it was given, in order (callers exclude broken items beforehand).
    """
    from audsemthinker.data.collate import AudioCollator

    return AudioCollator(processor, pad_side="left", prompt_only=True,
                         max_audio_seconds=max_audio_seconds, on_bad_audio="error",
                         on_overlong="error")


def generate_rows(model, collator, rows: Sequence[Mapping], decoding: Decoding) -> list[str]:
    """Generate one completion per prompt row (see :func:`prompt_row`), batched, in order.

    Args:
        model: the thinker (or a PeftModel around it), in eval mode.
        collator: from :func:`make_collator`.
        rows: prompt rows; their audio must load.
        decoding: how to decode.

    Returns:
        The decoded new tokens per row, special tokens removed, in input order.

    Raises:
        ValueError: the collator did not keep every row (a completion would be filed under the
            wrong id), or the tokenizer pads on the right.
    """

    if not rows:
        return []
    batch = collator(list(rows))
    if collator.last_kept != list(range(len(rows))):
        raise ValueError(f"the collator kept rows {collator.last_kept} of {len(rows)}")
    tok = collator.tokenizer
    if (batch["attention_mask"][:, -1] == 0).any():
        raise ValueError("batched generation needs left padding; right padding makes the model "
                         "continue after pad tokens")
    return generate_batch(model, tok, batch, decoding)


def generate_batch(model, tokenizer, batch: Mapping, decoding: Decoding) -> list[str]:
    """Generate from one collated prompt batch; the new tokens decoded, one string per row.

    The one place a batch meets ``model.generate`` (placeholders suppressed via
    :func:`generation_kwargs`), shared by the harness and the SFT/GRPO held-out accuracy.
    """
    import torch

    device = next(model.parameters()).device
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    batch = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
             for k, v in batch.items()}
    with torch.inference_mode():
        out = model.generate(**batch, **generation_kwargs(decoding, tokenizer))
    new = out[:, batch["input_ids"].shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate_answers(model, processor, rows: Sequence[Mapping], decoding: Decoding | Mapping,
                     batch_size: int = 8, template: str = "audsem", system_prompt: bool = True,
                     max_audio_seconds: float | None = None) -> list[str]:
    """Completions for ``rows``, in order: what held-out accuracy is computed from.

    The harness computes its predictions with the same :func:`generate_rows` and batching, so a
    harness run over a row file and this function agree completion for completion.

    Args:
        model: the thinker (or PeftModel), in eval mode.
        processor: the processor from ``build_processor``.
        rows: dataset or benchmark rows (see :func:`prompt_row`).
        decoding: a :class:`Decoding` or its config mapping.
        batch_size: items per generate call.
        template, system_prompt: as for :func:`prompt_row`.
        max_audio_seconds: truncate longer clips.

    Returns:
        One completion per row.

    Raises:
        audsemthinker.audio.AudioError: a row's audio is broken (this function promises one
            completion per row; the harness excludes such rows and reports them instead).
    """
    decoding = decoding_from(decoding)
    collator = make_collator(processor, max_audio_seconds)
    prompts = [prompt_row(r, template, system_prompt) for r in rows]
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        out += generate_rows(model, collator, prompts[start:start + batch_size], decoding)
    return out


def row_correct(row: Mapping, completion: str) -> bool:
    """Whether a completion's ``<answer>`` names the row's gold option (letter, text or both).

    The same rule as the GRPO accuracy reward (``rewards.accuracy.option_correct`` over
    :func:`format.match_option`), so training reward and reported accuracy agree.
    """
    from audsemthinker.rewards.accuracy import option_correct

    choices = row.get("choices") or row.get("options")
    return option_correct(fmt.extract_answer(completion), row.get("answer"),
                          list(choices) if choices else None)


def accuracy_of(rows: Sequence[Mapping], completions: Sequence[str]) -> float:
    """Held-out accuracy in percent: the share of completions whose answer names the gold option.

    Args:
        rows: rows with ``answer`` (e.g. ``"B. birds"``) and ``choices``.
        completions: one completion per row, in the same order.

    Returns:
        100 * correct / len(rows).

    Raises:
        ValueError: no rows, or a length mismatch (never silently zip diverging lists).
    """
    if len(rows) != len(completions):
        raise ValueError(f"{len(rows)} rows but {len(completions)} completions")
    if not rows:
        raise ValueError("accuracy of no rows is undefined")
    return 100.0 * sum(row_correct(r, c) for r, c in zip(rows, completions)) / len(rows)


def decoding_dict(decoding: Decoding) -> dict:
    """The decoding settings as a plain dict (for result files)."""
    return asdict(decoding)
