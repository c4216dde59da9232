"""IMDM's total-correlation metric of samples that share their noise.

Samples are grouped (IMDM: duplicates drawn with the same ε seed and start state; only the
sampler's token draws differ). Within a group of n samples of L tokens the plug-in estimate is

    T = Σ_j H(X_j) − H(X_1, …, X_L)   (bits),

H from the empirical frequencies of the n samples (position j's tokens for H(X_j), whole
sequences for the joint). T = 0 when the positions vary independently given the shared noise;
a sampler whose tokens are decided jointly by ε leaves little freedom to the draws. The result
is the mean over groups of at least two samples (IMDM's ``metrics.TC``), with the means of
Σ_j H(X_j) and H(X) beside it.
"""

from __future__ import annotations

import math

import torch

__all__ = ["entropy_bits", "total_correlation"]


def entropy_bits(counts: torch.Tensor) -> float:
    """Plug-in entropy in bits of a vector of counts."""
    c = counts[counts > 0].double()
    p = c / c.sum()
    return float(-(p * p.log2()).sum())


def total_correlation(samples: torch.Tensor, groups: torch.Tensor) -> dict:
    """``{"tc", "sum_marginal_entropy", "joint_entropy", "groups", "group_size"}`` (bits) of
    ``samples`` [N, L] (token ids) grouped by ``groups`` [N] (see the module docstring)."""
    samples = torch.as_tensor(samples).cpu()
    groups = torch.as_tensor(groups).cpu().reshape(-1)
    if samples.dim() != 2 or groups.shape[0] != samples.shape[0]:
        raise ValueError(
            f"mdfast: 'samples' must be [N, L] and 'groups' [N], got {list(samples.shape)} and "
            f"{list(groups.shape)}"
        )
    tcs, margs, joints, sizes = [], [], [], []
    for g in torch.unique(groups).tolist():
        x = samples[groups == g]
        if x.shape[0] < 2:
            continue
        _, joint_counts = torch.unique(x, dim=0, return_counts=True)
        h_joint = entropy_bits(joint_counts)
        h_marg = sum(entropy_bits(torch.unique(x[:, j], return_counts=True)[1])
                     for j in range(x.shape[1]))  # fmt: skip
        tcs.append(h_marg - h_joint)
        margs.append(h_marg)
        joints.append(h_joint)
        sizes.append(x.shape[0])
    if not tcs:
        return {"tc": math.nan, "sum_marginal_entropy": math.nan, "joint_entropy": math.nan,
                "groups": 0, "group_size": 0}  # fmt: skip
    n = len(tcs)
    return {"tc": sum(tcs) / n, "sum_marginal_entropy": sum(margs) / n,
            "joint_entropy": sum(joints) / n, "groups": n,
            "group_size": sum(sizes) / n}  # fmt: skip
