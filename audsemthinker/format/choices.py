"""The multiple-choice layout, user prompts and the benchmarks' own prompt templates."""

from __future__ import annotations

from audsemthinker.format.prompts import INSTRUCTIONS, instruction_prefix, release_instruction

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
