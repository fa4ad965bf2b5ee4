"""GRPO reward functions, selected by name from ``configs/reward/*.yaml``.

Every reward is a plain function ``f(completions, **columns) -> list[float]`` built by a
``get_*_reward(**cfg)`` factory and registered by name; :func:`build_rewards` turns a config into
TRL's ``reward_funcs`` and ``reward_weights``. Pure Python: importing this package never imports
torch. Registered: accuracy, format, length (docs/recipe.md), semantic_coverage,
semantic_consistency, open_answer, overlong (DAPO's soft overlong penalty).
"""

# Importing the reward modules registers them (each imports the registry first).
from audsemthinker.rewards.accuracy import get_accuracy_reward
from audsemthinker.rewards.format_reward import get_format_reward
from audsemthinker.rewards.length import get_length_reward
from audsemthinker.rewards.open_answer import (
    JudgeUnavailableError,
    OpenAIJudge,
    get_open_answer_reward,
)
from audsemthinker.rewards.overlong import get_overlong_reward
from audsemthinker.rewards.registry import (
    REWARDS,
    available_rewards,
    build_rewards,
    completion_text,
    get_reward,
    register,
)
from audsemthinker.rewards.semantic import (
    get_semantic_consistency_reward,
    get_semantic_coverage_reward,
)

__all__ = [
    "REWARDS",
    "JudgeUnavailableError",
    "OpenAIJudge",
    "available_rewards",
    "build_rewards",
    "completion_text",
    "get_accuracy_reward",
    "get_format_reward",
    "get_length_reward",
    "get_open_answer_reward",
    "get_overlong_reward",
    "get_reward",
    "get_semantic_consistency_reward",
    "get_semantic_coverage_reward",
    "register",
]
