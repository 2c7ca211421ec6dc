"""Masked means, standardisation and running normalisers shared by the learners (PPO's advantages and ValueNorm,
MA-Trace's advantages, QMIX's reward standardisation)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def standardized(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` less its mean over the entries where ``mask`` is 1, over their standard deviation."""
    mean = masked_mean(x, mask)
    return (x - mean) / (masked_mean((x - mean) ** 2, mask).sqrt() + 1e-8)


class ValueNorm:
    """Running mean/variance of value targets (MAPPO's ValueNorm): the critic predicts normalised
    values. Statistics are updated from sums reduced over all learners, so they stay identical. ``min_var`` floors the
    variance (value targets: 1e-2; QMIX's reward standardisation: 1e-4, so rare sparse rewards keep their weight)."""

    def __init__(self, beta: float = 0.99999, eps: float = 1e-5, min_var: float = 1e-2):
        self.beta, self.eps, self.min_var = beta, eps, min_var
        self.mean = self.mean_sq = self.debias = 0.0

    def update(self, x: torch.Tensor, mask: torch.Tensor, reduce_sums: Callable = None) -> None:
        sums = np.array([float((x * mask).sum()), float((x * x * mask).sum()), float(mask.sum())])
        if reduce_sums is not None:
            sums = reduce_sums(sums)
        if sums[2] <= 0:
            return
        w = self.beta
        self.mean = w * self.mean + (1 - w) * sums[0] / sums[2]
        self.mean_sq = w * self.mean_sq + (1 - w) * sums[1] / sums[2]
        self.debias = w * self.debias + (1 - w)

    def stats(self):
        d = max(self.debias, self.eps)
        mean, mean_sq = self.mean / d, self.mean_sq / d
        return mean, max(mean_sq - mean * mean, self.min_var) ** 0.5

    def normalize(self, x):
        m, s = self.stats()
        return (x - m) / s

    def scale(self, x):
        """``x`` divided by the running std, not centred."""
        return x / self.stats()[1]

    def denormalize(self, x):
        m, s = self.stats()
        return x * s + m

    def to_array(self) -> np.ndarray:
        """The running statistics for a checkpoint: mean, mean of squares, debiasing weight."""
        return np.array([self.mean, self.mean_sq, self.debias])

    def load_array(self, a) -> None:
        self.mean, self.mean_sq, self.debias = (float(x) for x in a)
