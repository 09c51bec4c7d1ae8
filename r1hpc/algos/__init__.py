"""The GRPO math as pure torch functions, with tensor shapes in every docstring.

B = outputs in the batch (prompts x G), T = response length (padded), V = vocabulary,
H = hidden size, G = number of groups.

- advantages: group-relative advantages (GRPO, Dr. GRPO), broadcast to tokens.
- policy_loss: clipped surrogate (symmetric / clip-higher / dual clip) and ``grpo_loss``.
- kl: k1 / k2 / k3 per-token KL estimators.
- aggregation: token-mean and the seq-mean-* loss reductions.
- logprobs: chunked chosen-token log-probs and entropy, from logits or from hidden states.
- filters: DAPO dynamic sampling (overlong reward shaping is r1hpc.rewards.length).
- metrics: reward, length and KL metrics.
- settings: GRPOSettings, the loss and update settings every backend takes.
"""

from r1hpc.algos.advantages import GroupStats, group_advantages, group_stats, token_advantages
from r1hpc.algos.aggregation import AGG_MODES, agg_loss, masked_mean, masked_sum
from r1hpc.algos.filters import dynamic_sampling_mask
from r1hpc.algos.kl import KL_ESTIMATORS, kl_per_token
from r1hpc.algos.logprobs import entropy_from_logits, logprobs_from_hidden, logprobs_from_logits
from r1hpc.algos.metrics import approx_kl, response_length_metrics, reward_metrics
from r1hpc.algos.policy_loss import clipped_surrogate, grpo_loss
from r1hpc.algos.settings import GRPOSettings

__all__ = [
    "AGG_MODES",
    "KL_ESTIMATORS",
    "GRPOSettings",
    "GroupStats",
    "agg_loss",
    "approx_kl",
    "clipped_surrogate",
    "dynamic_sampling_mask",
    "entropy_from_logits",
    "group_advantages",
    "group_stats",
    "grpo_loss",
    "kl_per_token",
    "logprobs_from_hidden",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "response_length_metrics",
    "reward_metrics",
    "token_advantages",
]
