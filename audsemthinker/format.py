"""The one owner of every string the model sees or emits.

Tags, the nine sound-semantic descriptor categories, the system prompt, the instruction prefix
with its length budget, the multiple-choice layout, evaluation prompt templates, and the parsers
that invert them. Nothing else in the package spells these strings, so a prompt change is a
one-line diff here and every builder, reward and scorer follows.

This module imports nothing heavy (no torch), so rewards and scoring that use it test in
milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------
# Tags and variants
# --------------------------------------------------------------------------------------------
THINK, SEMANTIC, ANSWER = "think", "semantic_elements", "answer"
VARIANTS = ("semantic", "simple")
"""`semantic`: think + semantic_elements + answer (the paper); `simple`: think + answer."""

FORMAT_PATTERNS = {
    "semantic": re.compile(
        r"<think>.*?</think>\s*<semantic_elements>.*?</semantic_elements>\s*<answer>.*?</answer>",
        re.DOTALL,
    ),
    "simple": re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL),
}
"""Exact fullmatch patterns of the paper's format reward (docs/recipe.md)."""


def first_block(text: str, tag: str) -> str | None:
    """The content of the first ``<tag>...</tag>`` (what ``re.search(r"<tag>(.*?)</tag>",
    DOTALL)`` returns), or None.

    Two ``str.find`` calls instead of the regex: the regex retries at every later ``<tag>``
    once the first one has no closing tag, which is quadratic (seconds on a 100k-character
    completion of repeated ``<think>``). If the first opening tag has no closing tag after it,
    no later one has either, so the first opening tag decides.
    """
    text = str(text)
    start = text.find(f"<{tag}>")
    if start < 0:
        return None
    start += len(tag) + 2
    end = text.find(f"</{tag}>", start)
    return text[start:end] if end >= 0 else None


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown format variant {variant!r}; expected one of {VARIANTS}")
    return variant


# --------------------------------------------------------------------------------------------
# The nine sound semantic descriptor categories (docs/recipe.md)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Category:
    """One sound-semantic descriptor category.

    Attributes:
        key: stable identifier used in configs (e.g. ``reward.targets``).
        name: the paper's name, the spelling we render.
        question: the wh-question it answers ("who", "what", ...), or "".
        covers: what the data-generation prompt asks for.
        aliases: other spellings accepted when parsing model output (lower-case).
    """

    key: str
    name: str
    question: str
    covers: str
    aliases: tuple[str, ...] = field(default_factory=tuple)


CATEGORIES: tuple[Category, ...] = (
    Category("agents", "Sound-generating agents", "who",
             "sound-generating animated beings, with descriptive adjectives",
             ("sound-generating animated beings", "sound generating agents", "agents", "who")),
    Category("sources", "Physical sound sources", "what",
             "physical objects / substances generating sound",
             ("physical objects", "sound sources", "sources", "what")),
    Category("mechanisms", "Sound generation mechanisms", "how",
             "actions / mechanisms of sound generation",
             ("actions", "mechanisms", "sound generation mechanism", "how")),
    Category("temporal", "Temporal context", "when", "temporal context, if present",
             ("time", "temporal", "when")),
    Category("spatial", "Spatial context", "where", "spatial context and environment",
             ("environment", "spatial", "where", "spatial context and environment")),
    Category("surfaces", "Acoustic surfaces", "",
             "surfaces and materials contributing to the sound",
             ("surfaces", "materials", "acoustic surfaces and materials")),
    Category("signal", "Signal descriptors", "",
             "signal-level descriptors (loudness, pitch, frequency content, ...)",
             ("signal-level descriptors", "signal level descriptors", "signal")),
    Category("auditory", "Auditory attributes", "",
             "auditory sensation attributes (timbre, roughness, sharpness, ...)",
             ("auditory sensation attributes", "auditory sensations", "auditory")),
    Category("non_auditory", "Non-auditory sensation", "",
             "subjective / emotional descriptors",
             ("non-auditory sensations", "subjective descriptors", "emotional descriptors",
              "non auditory sensation", "non-auditory")),
)
CATEGORY_KEYS = tuple(c.key for c in CATEGORIES)


def _norm_label(s: str) -> str:
    s = re.sub(r"^[\s\-*#\d.)(]+", "", s.lower())
    return re.sub(r"[\s_:]+", " ", s).strip(" :-*")


_LABEL_TO_KEY: dict[str, str] = {}
for _c in CATEGORIES:
    for _label in (_c.key, _c.name, *_c.aliases):
        _LABEL_TO_KEY[_norm_label(_label)] = _c.key


def category_key(label: str) -> str | None:
    """Map a category heading as written by a model or a dataset to its key, or None."""
    n = _norm_label(label)
    if n in _LABEL_TO_KEY:
        return _LABEL_TO_KEY[n]
    # Headings like "Sound-generating animated beings with descriptive adjectives".
    for lab, key in sorted(_LABEL_TO_KEY.items(), key=lambda kv: -len(kv[0])):
        if len(lab) > 5 and n.startswith(lab):
            return key
    return None


def render_semantic_elements(elements: dict[str, list[str]]) -> str:
    """Render ``{category key: [element, ...]}`` as one line per non-empty category.

    Example: ``"- Sound-generating agents: a dog\\n- Signal descriptors: loud, high pitch"``.
    """
    unknown = set(elements) - set(CATEGORY_KEYS)
    if unknown:
        raise ValueError(f"unknown semantic categories {sorted(unknown)}; known: {CATEGORY_KEYS}")
    lines = [f"- {c.name}: {', '.join(elements[c.key])}"
             for c in CATEGORIES if elements.get(c.key)]
    return "\n".join(lines)


_HEADING = re.compile(r"(?:^|(?<=\d[.)])|(?<=[-*\u2022#]))[\s*]*"
                      r"(?P<label>[A-Za-z][A-Za-z /&'\-]{0,80}?)[\s*]*:")
"""A candidate heading: a label and a colon at the start of a line or right after a number
(``2.``) or a bullet; it is one only when :func:`category_key` knows the label."""
_BULLET = re.compile(r"(?:^|\s*(?<=\S)|\s+)[-*\u2022]\s+|^\s*\d+[.)]\s+")
_TRAILING_MARK = re.compile(r"(?:\d+[.)]|[-*\u2022#])[\s*]*$")
_EMPTY_ITEMS = ("none", "n/a", "not present")


def _headed_pieces(line: str) -> list[tuple[str | None, str]]:
    """``[(category key or None, text), ...]``: a line cut before every category heading in it.

    The release stored the block with its newlines removed (``1. Sound-generating agents:- a
    dog- a man2. Physical sound sources:- a leash``), so headings can sit mid-line, glued to
    the previous element; a number or bullet that introduces a heading is cut off the element
    before it.
    """
    cuts = [(m.start("label"), m.end(), key) for m in _HEADING.finditer(line)
            if (key := category_key(m.group("label"))) is not None]
    if not cuts:
        return [(None, line)]
    pieces = [(None, line[: cuts[0][0]])]
    for i, (_, end, key) in enumerate(cuts):
        stop = cuts[i + 1][0] if i + 1 < len(cuts) else len(line)
        pieces.append((key, line[end:stop]))
    return [(k, _TRAILING_MARK.sub("", t) if i + 1 < len(pieces) else t)
            for i, (k, t) in enumerate(pieces)]


def _items(text: str) -> list[str]:
    """Elements of one heading's text: bullets (``- a- b`` or ``- a``) when it has them,
    else comma/semicolon separated."""
    text = text.strip()
    if not text:
        return []
    if _BULLET.match(text):
        parts = _BULLET.split(text)
    else:
        parts = re.split(r"[,;]", text)
    return [p.strip() for p in parts if p.strip()
            and p.strip().lower() not in _EMPTY_ITEMS]


def parse_semantic_elements(block: str) -> dict[str, list[str]]:
    """Parse a semantic-elements block into ``{category key: [element, ...]}``.

    Accepts our one-line form (``- Name: a, b``), the dataset's heading-plus-bullets form
    (``1. Name:`` followed by ``- a`` lines) and that form with its newlines removed, as the
    release stores it (``1. Name:- a- b2. Other name:- c``). Unknown headings and stray text
    are ignored; never raises on any string.
    """
    out: dict[str, list[str]] = {}
    current: str | None = None
    for raw in str(block).splitlines():
        for key, text in _headed_pieces(raw.strip()):
            if key is not None:
                current = key
                out.setdefault(key, []).extend(_items(text))
            elif current is not None and _BULLET.match(text.strip()):
                out.setdefault(current, []).extend(_items(text))
    return {k: v for k, v in out.items() if v}


# --------------------------------------------------------------------------------------------
# Prompts (docs/recipe.md)
# --------------------------------------------------------------------------------------------
SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)

CAPTION_PROMPTS = (
    "Describe the audio in detail.",
    "What can you hear in this audio clip?",
    "Provide a detailed caption for this audio.",
    "Describe the sounds in this recording.",
    "Write a description of what is happening in the audio.",
    "Explain what you hear in this clip.",
    "Give a detailed account of the audio content.",
    "Summarize the audio in a few sentences.",
    "What sounds are present in this audio, and how are they produced?",
    "Caption this audio clip.",
)


def instruction_prefix(variant: str = "semantic", multiple_choice: bool = False,
                       length_budget: int | None = None) -> str:
    """The instruction placed before the question when ``prepend_to_prompt`` is on.

    Args:
        variant: ``semantic`` (three parts) or ``simple`` (think + answer).
        multiple_choice: add that the answer must be one of the options.
        length_budget: if set, ask for a thinking process of about this many words; the number
            is filled in (the public release left the literal ``{args.target_length}``).
    """
    check_variant(variant)
    parts = [
        "You are given a question and an audio clip. First, think about the question and the "
        "audio and put your thoughts in <think> and </think> tags."
    ]
    if variant == "semantic":
        parts.append("Then list the semantic elements of the sound in <semantic_elements> "
                     "and </semantic_elements> tags.")
    parts.append("Then give your answer in <answer> and </answer> tags.")
    if multiple_choice:
        parts.append("The answer must be one of the given options.")
    if length_budget is not None:
        parts.append(f"Your thinking process should be approximately {int(length_budget)} "
                     "words long.")
    return " ".join(parts)


def release_instruction(variant: str = "semantic", length_budget: int | None = None) -> str:
    """The public release's instruction wording, to evaluate its checkpoints on their own prompt.

    Copied in meaning and letter from the release's MMAU evaluation scripts
    (``training/evaluate/mmau_mini_omni.py`` without a budget; with a budget,
    ``mmau_mini_omni_targetlength.py``, whose text also ends in ``"Question: "``). The question
    follows directly, without a newline (see :func:`user_prompt`).
    """
    check_variant(variant)
    parts = ["You are given a question and an audio clip. Your task is to answer the question "
             "based on the audio clip. The answers are multiple choice, so you need to select the "
             "correct answer from the given options. First, think about the question and the "
             "audio clip and put your thoughts in <think> and </think> tags."]
    if length_budget is not None:
        parts.append(f"Your thinking process should be approximately {int(length_budget)} words "
                     "long.")
    if variant == "semantic":
        parts.append("Then reason about the semantic elements involved in the audio clip and put "
                     "your reasoning in <semantic_elements> and </semantic_elements> tags.")
    parts.append("Then answer the question based on the audio clip, put your answer in <answer> "
                 "and </answer> tags.")
    return " ".join(parts) + (" Question: " if length_budget is not None else " ")


INSTRUCTIONS = ("audsem", "release")
"""Instruction wordings by name: ours (:func:`instruction_prefix`) and the public release's
(:func:`release_instruction`)."""


OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_choices(choices: list[str]) -> str:
    """``["x", "y"]`` -> ``"A. x\\nB. y"``."""
    if len(choices) > len(OPTION_LETTERS):
        raise ValueError(f"at most {len(OPTION_LETTERS)} choices, got {len(choices)}")
    return "\n".join(f"{OPTION_LETTERS[i]}. {c}" for i, c in enumerate(choices))


def mc_question(question: str, choices: list[str]) -> str:
    """The paper's multiple-choice layout: ``question\\nChoices:\\nA. ...\\nB. ...``."""
    return f"{question}\nChoices:\n{format_choices(choices)}"


def split_mc_question(text: str) -> tuple[str, list[str] | None]:
    """Invert :func:`mc_question`: ``"q\\nChoices:\\nA. x\\nB. y"`` -> ``("q", ["x", "y"])``.

    The published AudSem ``mc_qa`` shards store the question with its choices block already
    appended; builders split it off and re-render, so every prompt comes from one function.
    Text without a well-formed block (letters A, B, ... in order) comes back unchanged with
    ``None``.
    """
    text = str(text)
    head, sep, block = text.rpartition("\nChoices:\n")
    if not sep:
        return text, None
    choices = []
    for i, line in enumerate(block.strip("\n").split("\n")):
        prefix = f"{OPTION_LETTERS[i]}. " if i < len(OPTION_LETTERS) else None
        if prefix is None or not line.startswith(prefix):
            return text, None
        choices.append(line[len(prefix):])
    return head, choices


def mc_answer(choices: list[str], index: int) -> str:
    """The gold answer string of the training data: ``"B. The sound of birds"``."""
    return f"{OPTION_LETTERS[index]}. {choices[index]}"


def user_prompt(question: str, choices: list[str] | None = None, variant: str = "semantic",
                prepend_instruction: bool = True, length_budget: int | None = None,
                instruction: str = "audsem") -> str:
    """The full user text of a training/eval prompt (audio goes in a separate content part).

    ``instruction`` names the wording (:data:`INSTRUCTIONS`): ``audsem`` puts our prefix on its
    own line before the question; ``release`` is the public release's text, followed directly
    by the question.
    """
    if instruction not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction {instruction!r}; expected one of {INSTRUCTIONS}")
    body = mc_question(question, choices) if choices else question
    if not prepend_instruction:
        return body
    if instruction == "release":
        return release_instruction(variant, length_budget) + body
    prefix = instruction_prefix(variant, multiple_choice=bool(choices), length_budget=length_budget)
    return f"{prefix}\n{body}"


# Evaluation prompt templates, selectable by name (docs/scoring.md).
R1_AQA_TEMPLATE = ("{question} Please choose the answer from the following options: "
                   "{choices}. Output the final answer in <answer> </answer>.")
MUCHOMUSIC_TEMPLATE = "Question: {question}\n Options: {options} \n The correct answer is: "
MUCHOMUSIC_ANSWER_CUE = "The correct answer is:"


def r1_aqa_prompt(question: str, choices: list[str]) -> str:
    return R1_AQA_TEMPLATE.format(question=question, choices=str(list(choices)))


def muchomusic_prompt(question: str, options: list[str]) -> str:
    opts = " ".join(f"({OPTION_LETTERS[i]}) {o}" for i, o in enumerate(options))
    return MUCHOMUSIC_TEMPLATE.format(question=question, options=opts)


# --------------------------------------------------------------------------------------------
# Targets and parsing
# --------------------------------------------------------------------------------------------
def render_target(think: str, answer: str, semantic_elements: str | None = None,
                  variant: str = "semantic") -> str:
    """The assistant target: think, semantic elements (semantic variant), answer; one per line."""
    check_variant(variant)
    parts = [f"<think>{think}</think>"]
    if variant == "semantic":
        if semantic_elements is None:
            raise ValueError("the semantic variant needs semantic_elements")
        parts.append(f"<semantic_elements>{semantic_elements}</semantic_elements>")
    parts.append(f"<answer>{answer}</answer>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Parts:
    """What :func:`parse` finds in a completion; a missing block is ``None``."""

    think: str | None
    semantic_elements: str | None
    answer: str | None
    well_formed: bool


def parse(completion: str, variant: str = "semantic") -> Parts:
    """Split a completion into its blocks (first occurrence of each); never raises."""
    text = str(completion)
    found = {t: first_block(text, t) for t in (THINK, SEMANTIC, ANSWER)}
    return Parts(found[THINK], found[SEMANTIC], found[ANSWER], is_well_formed(text, variant))


def is_well_formed(completion: str, variant: str = "semantic") -> bool:
    return FORMAT_PATTERNS[check_variant(variant)].fullmatch(str(completion).strip()) is not None


def extract_answer(completion: str) -> str:
    """The first ``<answer>...</answer>`` content (DOTALL), or the whole text if absent."""
    block = first_block(completion, ANSWER)
    return (str(completion) if block is None else block).strip()


def think_words(completion: str) -> int:
    """Whitespace-separated words inside the first ``<think>`` block (0 if absent)."""
    block = first_block(completion, THINK)
    return len(block.split()) if block is not None else 0


_LETTER_RE = re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:]?(?:\s+|$)")
_LOWER_LETTER_RE = re.compile(r"^\s*(?:\(([a-z])\)|\[([a-z])\]|([a-z])[.:)]|([a-z])$)(?:\s+|$)")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation, fold whitespace: the comparison key for answers."""
    return " ".join(re.findall(r"\w+", str(text).lower()))


def word_set(text: str) -> set[str]:
    """MMAU's token set: every ``\\b\\w+\\b`` match in the lower-cased text.

    The official MMAU rule and the semantic-consistency reward both compare answers as sets of
    these tokens; one definition keeps them in step.
    """
    return set(re.findall(r"\b\w+\b", str(text).lower()))


def split_option(text: str, choices: list[str]) -> tuple[int | None, str]:
    """Split a leading option letter off an answer: ``"B. birds"`` -> ``(1, "birds")``.

    A letter counts only if it names an existing option and is followed by punctuation, space
    or the end (``"A dog barks"`` is ambiguous: it counts as letter A only if the rest is empty or
    matches option A).
    """
    text = str(text).strip()
    m = _LETTER_RE.match(text)
    if m and OPTION_LETTERS.index(m.group(1)) < len(choices):
        idx = OPTION_LETTERS.index(m.group(1))
        rest = text[m.end():].strip()
        bare_article = m.group(0).strip() == m.group(1)  # "A dog" vs "A. dog"
        if not bare_article or not rest or normalize(rest) == normalize(choices[idx]):
            return idx, rest
    # The release lower-cases answers before matching them, so "b" is option B to it. A
    # lower-case letter counts alone or marked ("b.", "(b)", "b)"), never as a word ("a dog").
    low = _LOWER_LETTER_RE.match(text)
    if low:
        letter = next(g for g in low.groups() if g).upper()
        if OPTION_LETTERS.index(letter) < len(choices):
            return OPTION_LETTERS.index(letter), text[low.end():].strip()
    return None, text


def match_option(text: str, choices: list[str]) -> int | None:
    """Which option an answer names: by letter, by text, or by both (consistent); else None.

    ``"B"``, ``"B. birds"``, ``"(B) birds"``, ``"birds"`` all give 1 for choices
    ``["dogs", "birds"]``; ``"B. dogs"`` (letter and text disagree) gives None.
    """
    choices = list(choices or [])
    idx, rest = split_option(text, choices)
    by_text = None
    key = normalize(rest)
    if key:
        hits = [i for i, c in enumerate(choices) if normalize(c) == key]
        by_text = hits[0] if len(hits) == 1 else None
    if idx is not None:
        return idx if (not key or by_text == idx or key == normalize(choices[idx])) else None
    return by_text


def answer_to_text(text: str, choices: list[str]) -> str:
    """Map a leading option letter to its choice text (for MMAU scoring); else the text as is."""
    idx, rest = split_option(text, choices)
    if idx is None:
        return str(text).strip()
    return choices[idx] if not rest else rest
