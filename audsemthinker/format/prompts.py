"""The system prompt, caption prompts and instruction prefixes (ours and the release's)."""

from __future__ import annotations

from audsemthinker.format.tags import check_variant

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
