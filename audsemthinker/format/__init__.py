"""The one owner of every string the model sees or emits.

Tags, the nine sound-semantic descriptor categories, the system prompt, the instruction prefix
with its length budget, the multiple-choice layout, evaluation prompt templates, and the parsers
that invert them. Nothing else in the package spells these strings, so a prompt change is a
one-line diff here and every builder, reward and scorer follows.

This package imports nothing heavy (no torch), so rewards and scoring that use it test in
milliseconds.
"""

from audsemthinker.format.categories import (
    CATEGORIES,
    CATEGORY_KEYS,
    Category,
    category_key,
    parse_semantic_elements,
    render_semantic_elements,
)
from audsemthinker.format.choices import (
    MUCHOMUSIC_ANSWER_CUE,
    MUCHOMUSIC_TEMPLATE,
    OPTION_LETTERS,
    R1_AQA_TEMPLATE,
    format_choices,
    mc_answer,
    mc_question,
    muchomusic_prompt,
    r1_aqa_prompt,
    split_mc_question,
    user_prompt,
)
from audsemthinker.format.completions import (
    Parts,
    extract_answer,
    is_well_formed,
    parse,
    render_target,
    think_words,
)
from audsemthinker.format.matching import (
    answer_to_text,
    match_option,
    normalize,
    split_option,
    word_set,
)
from audsemthinker.format.prompts import (
    CAPTION_PROMPTS,
    INSTRUCTIONS,
    SYSTEM_PROMPT,
    instruction_prefix,
    release_instruction,
)
from audsemthinker.format.tags import (
    ANSWER,
    FORMAT_PATTERNS,
    SEMANTIC,
    THINK,
    VARIANTS,
    check_variant,
    first_block,
)

__all__ = [
    "ANSWER",
    "CAPTION_PROMPTS",
    "CATEGORIES",
    "CATEGORY_KEYS",
    "Category",
    "FORMAT_PATTERNS",
    "INSTRUCTIONS",
    "MUCHOMUSIC_ANSWER_CUE",
    "MUCHOMUSIC_TEMPLATE",
    "OPTION_LETTERS",
    "Parts",
    "R1_AQA_TEMPLATE",
    "SEMANTIC",
    "SYSTEM_PROMPT",
    "THINK",
    "VARIANTS",
    "answer_to_text",
    "category_key",
    "check_variant",
    "extract_answer",
    "first_block",
    "format_choices",
    "instruction_prefix",
    "is_well_formed",
    "match_option",
    "mc_answer",
    "mc_question",
    "muchomusic_prompt",
    "normalize",
    "parse",
    "parse_semantic_elements",
    "r1_aqa_prompt",
    "release_instruction",
    "render_semantic_elements",
    "render_target",
    "split_mc_question",
    "split_option",
    "think_words",
    "user_prompt",
    "word_set",
]
