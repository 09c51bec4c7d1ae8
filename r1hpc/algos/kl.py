"""Per-token KL estimators between the policy and a reference policy (Schulman, "Approximating KL
divergence", 2020), as used for GRPO's KL penalty.

With samples drawn from the policy pi and ``log_ratio = logp_ref - logp`` (= log pi_ref/pi):

- ``k1 = -log_ratio`` = logp - logp_ref: unbiased, high variance, can be negative.
- ``k2 = 0.5 * log_ratio**2``: biased, low variance, >= 0.
- ``k3 = exp(log_ratio) - log_ratio - 1``: unbiased and always >= 0 (DeepSeekMath / R1's choice).

What is clamped (as verl's ``kl_penalty``): for k3 the log-ratio is clamped to [-20, 20] before
``exp`` so it cannot overflow; then the estimate of every estimator is clamped to [-10, 10]
(verl clamps only k3's; here k1/k2 get the same bound so no estimator lets one wild token dominate).
Where the clamp is active the token contributes no gradient.
"""

from __future__ import annotations

import torch

from r1hpc.algos._checks import check_float, check_same_shape

KL_ESTIMATORS = ("k1", "k2", "k3")
KL_CLAMP = 10.0
LOG_RATIO_CLAMP = 20.0


def kl_per_token(logp: torch.Tensor, logp_ref: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref).

    Args:
        logp: (B, T) log-probs of the sampled tokens under the policy (carries the gradient).
        logp_ref: (B, T) log-probs of the same tokens under the reference policy.
        estimator: "k1", "k2" or "k3".

    Returns:
        (B, T) float KL estimate per token, clamped to [-10, 10]; masking is the caller's job.
    """
    check_float("logp", logp)
    check_float("logp_ref", logp_ref)
    check_same_shape(logp=logp, logp_ref=logp_ref)
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    log_ratio = logp_ref - logp
    if estimator == "k1":
        kl = -log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio.square()
    else:
        lr = log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl = torch.exp(lr) - lr - 1.0
    return kl.clamp(-KL_CLAMP, KL_CLAMP)
