"""The nine sound-semantic descriptor categories: their labels, rendering and parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


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
