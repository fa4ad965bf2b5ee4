"""Synthetic audio QA whose answers are decidable from the audio alone.

Four tasks (:data:`SYNTHETIC_TASKS`): the pitch of a tone (low ~300 Hz vs high ~1200 Hz), how many
beeps (1-4), noise vs tone, and a chirp rising vs falling. Amplitude, phase, frequency jitter
and timing are random, the question wording is drawn independently of the class and options are
shuffled per item, so the text carries no signal: a model can only answer by listening (with
silent audio a model stays at chance). Classes are exactly balanced per split when the split
size is a multiple of the class count.

Everything is a pure function of ``(seed, split, index)``: the same config gives the same clips
and rows, and changing ``n_train`` does not change the validation or test items. The think text
is short (at most ~15 words) and the answers are single words, so the tiny 2-layer model of the
learning tests can learn to emit the whole target; :func:`vocabulary_text` lists every string
the generator can emit so the tiny tokenizer's BPE covers them compactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np

from audsemthinker import format as fmt
from audsemthinker.data.examples import row_maker
from audsemthinker.data.registry import Meta, register_builder

SR = 16000
QUESTION_TYPES = ("mc_qa", "qa", "aac")
SPLITS = ("train", "valid", "test")
JITTER = 0.08  # relative frequency jitter
BEEP_S, MIN_GAP_S = 0.08, 0.1
COUNT_WORDS = ("one", "two", "three", "four")


def _hz(f: float) -> int:
    """Frequencies are named to the nearest 100 Hz: learnable from audio, a finite vocabulary."""
    return int(round(f / 100.0) * 100)


def _fade(x: np.ndarray, ms: float = 5.0) -> np.ndarray:
    n = min(len(x) // 2, int(SR * ms / 1000))
    if n:
        ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _tone(f: float, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SR
    return _fade(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Tasks: audio from (class, rng), text from (class, named parameters)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthTask:
    """One synthetic task: its classes (the short answers) and how to render audio and text."""

    name: str
    classes: tuple[str, ...]
    questions: tuple[str, ...]
    render: Callable[[str, float, np.random.Generator], tuple[np.ndarray, dict]]
    text_params: Callable[[str], list[dict]]  # every text-relevant parameter set of a class
    think: Callable[[str, dict], str]
    elements: Callable[[str, dict], dict]
    qa_answer: Callable[[str, dict], str]
    caption: Callable[[str, dict], str]


def _hz_grid(center: float) -> list[dict]:
    hz = {_hz(center * (1 + j)) for j in np.linspace(-JITTER, JITTER, 33)}
    return [{"hz": h} for h in sorted(hz)]


PITCH_HZ = {"low": 300.0, "high": 1200.0}


def _pitch(label: str, duration: float, rng) -> tuple[np.ndarray, dict]:
    f = PITCH_HZ[label] * rng.uniform(1 - JITTER, 1 + JITTER)
    return _tone(f, int(duration * SR), rng), {"hz": _hz(f), "freq": round(f, 2)}


COUNT_HZ = 1000.0


def _count(label: str, duration: float, rng) -> tuple[np.ndarray, dict]:
    k = COUNT_WORDS.index(label) + 1
    n = int(duration * SR)
    room = duration - 0.1 - k * BEEP_S  # 50 ms margins at both ends
    gap = rng.uniform(MIN_GAP_S, min(0.2, room / max(k - 1, 1))) if k > 1 else 0.0
    start = rng.uniform(0.05, 0.05 + room - (k - 1) * gap)
    f = COUNT_HZ * rng.uniform(1 - JITTER, 1 + JITTER)
    x = np.zeros(n, dtype=np.float32)
    for i in range(k):
        a = int((start + i * (BEEP_S + gap)) * SR)
        x[a:a + int(BEEP_S * SR)] = _tone(f, int(BEEP_S * SR), rng)
    return x, {"hz": _hz(f), "freq": round(f, 2), "beeps": k, "gap_s": round(gap, 3)}


NOISE_TONE_HZ = (300.0, 2000.0)


def _noise(label: str, duration: float, rng) -> tuple[np.ndarray, dict]:
    n = int(duration * SR)
    if label == "noise":
        x = rng.standard_normal(n).astype(np.float32)
        return _fade(x / np.abs(x).max()), {}
    f = rng.uniform(*NOISE_TONE_HZ)
    return _tone(f, n, rng), {"hz": _hz(f), "freq": round(f, 2)}


CHIRP_HZ = (300.0, 1500.0)


def _chirp(label: str, duration: float, rng) -> tuple[np.ndarray, dict]:
    lo, hi = (f * rng.uniform(1 - JITTER, 1 + JITTER) for f in CHIRP_HZ)
    f0, f1 = (lo, hi) if label == "rising" else (hi, lo)
    n = int(duration * SR)
    t = np.arange(n) / SR
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)) + rng.uniform(0, 2 * np.pi)
    return _fade(np.sin(phase).astype(np.float32)), {"from_hz": _hz(f0), "to_hz": _hz(f1)}


def _chirp_params(label: str) -> list[dict]:
    los, his = [p["hz"] for p in _hz_grid(CHIRP_HZ[0])], [p["hz"] for p in _hz_grid(CHIRP_HZ[1])]
    pairs = product(los, his) if label == "rising" else product(his, los)
    return [{"from_hz": a, "to_hz": b} for a, b in pairs]


TONE_SOURCE, NOISE_SOURCE = "a sine tone generator", "a white noise generator"
SYNTH = "electronic synthesis"

TASKS: dict[str, SynthTask] = {t.name: t for t in (
    SynthTask(
        "pitch", ("low", "high"),
        ("Is the tone low or high in pitch?", "What is the pitch of this tone?"),
        _pitch, lambda c: _hz_grid(PITCH_HZ[c]),
        lambda c, p: f"I hear one steady tone near {p['hz']} Hz. That is a {c} pitch.",
        lambda c, p: {"sources": [TONE_SOURCE], "mechanisms": [SYNTH],
                      "signal": [f"{c} pitch", f"{p['hz']} Hz"]},
        lambda c, p: f"The tone is {c}.",
        lambda c, p: f"A steady {c} tone near {p['hz']} Hz."),
    SynthTask(
        "count", COUNT_WORDS,
        ("How many beeps are in the clip?", "Count the beeps you hear."),
        _count,
        lambda c: [dict(p, beeps=COUNT_WORDS.index(c) + 1) for p in _hz_grid(COUNT_HZ)],
        lambda c, p: f"I hear short beeps separated by silence. I count {c} of them.",
        lambda c, p: {"sources": [TONE_SOURCE], "mechanisms": [SYNTH],
                      "temporal": [f"{c} beeps in a row"], "signal": [f"{p['hz']} Hz"]},
        lambda c, p: f"There are {c} beeps." if c != "one" else "There is one beep.",
        lambda c, p: f"{c.capitalize()} short beeps near {p['hz']} Hz." if c != "one"
        else f"One short beep near {p['hz']} Hz."),
    SynthTask(
        "noise", ("noise", "tone"),
        ("Is this sound noise or a tone?", "Is this a hiss or a pitched tone?"),
        _noise,
        lambda c: [{}] if c == "noise" else
        [{"hz": h} for h in range(int(NOISE_TONE_HZ[0]), int(NOISE_TONE_HZ[1]) + 1, 100)],
        lambda c, p: ("I hear a broadband hiss with no clear pitch, so it is noise."
                      if c == "noise" else
                      f"I hear one clear pitch near {p['hz']} Hz, so it is a tone."),
        lambda c, p: ({"sources": [NOISE_SOURCE], "mechanisms": [SYNTH],
                       "signal": ["broadband", "no pitch"]} if c == "noise" else
                      {"sources": [TONE_SOURCE], "mechanisms": [SYNTH],
                       "signal": ["pure tone", f"{p['hz']} Hz"]}),
        lambda c, p: "It is noise." if c == "noise" else "It is a tone.",
        lambda c, p: ("A burst of white noise." if c == "noise"
                      else f"A steady pure tone near {p['hz']} Hz.")),
    SynthTask(
        "chirp", ("rising", "falling"),
        ("Does the pitch rise or fall?", "Is the sweep rising or falling?"),
        _chirp, _chirp_params,
        lambda c, p: (f"The pitch glides from {p['from_hz']} Hz to {p['to_hz']} Hz, "
                      f"so the sweep is {c}."),
        lambda c, p: {"sources": [TONE_SOURCE], "mechanisms": [SYNTH],
                      "temporal": [f"pitch {c} over the clip"],
                      "signal": [f"{p['from_hz']} Hz to {p['to_hz']} Hz"]},
        lambda c, p: f"The pitch is {c}.",
        lambda c, p: f"A tone sweeping {'up' if c == 'rising' else 'down'} in pitch."),
)}
SYNTHETIC_TASKS = tuple(TASKS)


# --------------------------------------------------------------------------------------------
# Items and the builder
# --------------------------------------------------------------------------------------------
def make_item(task: str, label: str, rng: np.random.Generator, duration: float = 1.0
              ) -> tuple[np.ndarray, dict]:
    """One clip of ``task`` with class ``label``: ``(waveform, generating parameters)``.

    The waveform is float32 at 16 kHz with a random peak amplitude in [0.2, 0.8].

    Raises:
        ValueError: an unknown task/label, or a duration too short for the task.
    """
    if task not in TASKS or label not in TASKS[task].classes:
        raise ValueError(f"unknown synthetic task/label {task!r}/{label!r}; tasks: "
                         f"{ {t.name: t.classes for t in TASKS.values()} }")
    if task == "count" and duration < 0.1 + 4 * BEEP_S + 3 * MIN_GAP_S:
        raise ValueError(f"count needs duration >= {0.1 + 4 * BEEP_S + 3 * MIN_GAP_S:.2f} s")
    wave, params = TASKS[task].render(label, duration, rng)
    amp = float(rng.uniform(0.2, 0.8))
    return (wave * amp).astype(np.float32), {**params, "amplitude": round(amp, 3)}


OPTION_ORDERS = ("shuffled", "fixed")


def item_text(task: str, label: str, params: dict, qtype: str, rng: np.random.Generator,
              option_order: str = "shuffled") -> dict:
    """Question, choices, answer, think and semantic elements of one item.

    ``option_order="fixed"`` lists a multiple-choice item's options in the task's class order
    (pitch: A. low, B. high), so the letter names the heard class directly; ``shuffled`` (the
    default) makes the letter depend on both the clip and the option order.
    """
    t = TASKS[task]
    elements = fmt.render_semantic_elements(t.elements(label, params))
    out = {"think": t.think(label, params), "semantic_elements": elements, "choices": None}
    if qtype == "aac":
        out.update(question=str(rng.choice(fmt.CAPTION_PROMPTS)), answer=t.caption(label, params))
    elif qtype == "qa":
        out.update(question=str(rng.choice(t.questions)), answer=t.qa_answer(label, params))
    else:
        order = rng.permutation(len(t.classes))  # drawn either way: the clip stream stays
        choices = [t.classes[i] for i in (order if option_order == "shuffled" else
                                          range(len(t.classes)))]
        out.update(question=str(rng.choice(t.questions)), choices=choices,
                   answer=fmt.mc_answer(choices, choices.index(label)))
    return out


def _plan(n: int, combos: list[tuple[str, str]], rng: np.random.Generator) -> list[tuple]:
    """``n`` (task, qtype, label) triples: combos round-robin, classes balanced within each."""
    per = {c: [] for c in combos}
    for i in range(n):
        per[combos[i % len(combos)]].append(i)
    plan = [None] * n
    for (task, qtype), idx in per.items():
        classes = TASKS[task].classes
        labels = [classes[j % len(classes)] for j in range(len(idx))]
        for i, lab in zip(idx, rng.permutation(labels)):
            plan[i] = (task, qtype, str(lab))
    return plan


@register_builder("synthetic")
def synthetic(out_dir: Path, *, n_train: int = 64, n_valid: int = 16, n_test: int = 16,
              tasks: list[str] | tuple[str, ...] = ("pitch", "noise"),
              question_types: list[str] | tuple[str, ...] = ("mc_qa",), duration: float = 1.0,
              seed: int = 0, variant: str = "semantic", length_budget: int | None = None,
              prepend_instruction: bool = True, kind: str = "sft",
              option_order: str = "shuffled", sft_tasks: list[str] | None = None,
              sft_blind_tasks: list[str] | None = None):
    """Write synthetic clips to ``out_dir/audio`` and yield their rows.

    Args:
        out_dir: dataset folder.
        n_train, n_valid, n_test: items per split (0 leaves the split out).
        tasks: subset of :data:`SYNTHETIC_TASKS`.
        question_types: subset of ``mc_qa`` (shuffled options, gold ``"B. high"``), ``qa``
            (a short sentence) and ``aac`` (a caption for a caption prompt).
        duration: clip length in seconds (1.0 keeps CPU training fast).
        seed: everything derives from it; each split has its own stream.
        variant, length_budget, prepend_instruction: prompt/target options (see
            :func:`audsemthinker.format.user_prompt`).
        kind: ``sft`` rows (with the target) or ``grpo`` rows (prompt only).
        option_order: ``shuffled`` per item, or ``fixed`` (the task's class order).
        sft_tasks: with ``kind=sft``, the train split covers only these tasks; the valid and
            test splits, and GRPO rows, cover every task. A task left out of SFT is one the
            SFT model was never taught and GRPO can still learn (None: every task).
        sft_blind_tasks: with ``kind=sft``, the train rows of these tasks carry the text (think
            and answer) of a class drawn independently of the clip: SFT teaches their question
            format and option letters but not what the clip sounds like, so the SFT model
            answers them by letter at chance and GRPO has a signal to learn the rest from.

    Yields:
        ``(split, row)`` pairs; rows carry ``label``, ``question_type`` and ``params``.

    Raises:
        ValueError: an unknown task, question type or kind (before anything is written).
    """
    import soundfile as sf

    bad = [t for t in tasks if t not in TASKS] + [q for q in question_types
                                                  if q not in QUESTION_TYPES]
    if option_order not in OPTION_ORDERS:
        bad.append(option_order)
    bad += [t for t in [*(sft_tasks or ()), *(sft_blind_tasks or ())] if t not in tasks]
    if bad or not tasks or not question_types:
        raise ValueError(f"synthetic: unknown or empty tasks/question_types/option_order/"
                         f"sft_tasks {bad}; tasks {SYNTHETIC_TASKS}, question types "
                         f"{QUESTION_TYPES}, option orders {OPTION_ORDERS}, sft_tasks and "
                         f"sft_blind_tasks among tasks")
    make_row = row_maker(kind)
    combos = [(t, q) for t in tasks for q in question_types]
    train_combos = [c for c in combos if kind != "sft" or not sft_tasks or c[0] in sft_tasks]
    audio_dir = Path(out_dir) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    yield Meta({"total": n_train + n_valid + n_test, "seed": seed, "duration": duration})
    for s, (split, n) in enumerate(zip(SPLITS, (n_train, n_valid, n_test))):
        plan = _plan(int(n), train_combos if split == "train" else combos,
                     np.random.default_rng([seed, s]))
        for i, (task, qtype, label) in enumerate(plan):
            rng = np.random.default_rng([seed, s, i])
            wave, params = make_item(task, label, rng, duration)
            item_id = f"syn-{split}-{i:05d}-{task}-{qtype}"
            path = audio_dir / f"{item_id}.wav"
            sf.write(str(path), wave, SR, subtype="PCM_16")
            blind = kind == "sft" and split == "train" and task in (sft_blind_tasks or ())
            text_label, text_params = (_blind_text(task, label, params, [seed, s, i])
                                       if blind else (label, params))
            text = item_text(task, text_label, text_params, qtype, rng, option_order)
            yield split, make_row(id=item_id, audio=str(path.resolve()), task=task,
                                  variant=variant, prepend_instruction=prepend_instruction,
                                  length_budget=length_budget, source="synthetic",
                                  question_type=qtype, label=label, params=params, **text)


def _blind_text(task: str, label: str, params: dict, key: list[int]) -> tuple[str, dict]:
    """A class (and text parameters) drawn from their own stream, independent of the clip."""
    rng = np.random.default_rng([*key, 1])
    classes = TASKS[task].classes
    text_label = str(classes[int(rng.integers(len(classes)))])
    if text_label == label:
        return label, params
    options = TASKS[task].text_params(text_label)
    return text_label, options[int(rng.integers(len(options)))]


def vocabulary_text() -> list[str]:
    """Every string the generator can put in a question, choice, think, element or answer."""
    lines = [" ".join(COUNT_WORDS), " ".join(fmt.CAPTION_PROMPTS)]
    for t in TASKS.values():
        lines += [*t.questions, " ".join(t.classes)]
        for c in t.classes:
            for p in t.text_params(c):
                lines += [t.think(c, p), t.qa_answer(c, p), t.caption(c, p),
                          fmt.render_semantic_elements(t.elements(c, p))]
    return list(dict.fromkeys(lines))
