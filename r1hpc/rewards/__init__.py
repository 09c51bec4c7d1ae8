"""Rule-based rewards of the R1 recipe, as pure functions ``(completion, example) -> float | None``.

None means "not applicable to this example" (e.g. the code reward on a math prompt). Rewards
parse or run model output, so they are only ever called inside an isolated worker process:
use ``r1hpc.rewards.scorer.score_batch``, never call them from the trainer process.

``REWARD_FUNCS`` is the one explicit table of reward names used in configs (``reward_weights``).
"""

from __future__ import annotations

from collections.abc import Callable

from r1hpc.rewards.code import code_reward
from r1hpc.rewards.format import format_reward
from r1hpc.rewards.language import language_consistency_reward
from r1hpc.rewards.length import overlong_penalty
from r1hpc.rewards.math_accuracy import accuracy_math

RewardFunc = Callable[[str, dict], "float | None"]

REWARD_FUNCS: dict[str, RewardFunc] = {
    "accuracy_math": accuracy_math,
    "format": format_reward,
    "language_consistency": language_consistency_reward,
    "code": code_reward,
    "overlong": overlong_penalty,
}

# The rewards that grade against the example's reference (answer or tests). A prompt with no
# reference (rl_all's general prompts, rewarded by the learned reward model) is scored by the others.
REFERENCE_GRADED: frozenset[str] = frozenset({"accuracy_math", "code"})

__all__ = ["REWARD_FUNCS", "REFERENCE_GRADED", "RewardFunc"]
