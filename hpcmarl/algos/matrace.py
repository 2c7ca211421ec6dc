"""MA-Trace: multi-agent V-trace with the joint importance ratio and a centralized critic
(algorithms.md sections 2-3). Pure torch, no MPI.

Per policy group, per step t of an unroll (time-major ``[T, B]``):

    log rho_t = sum_i [log pi(a_t^i | o_t^i) - log mu(a_t^i | o_t^i)]     (joint ratio over the group's
                                                                          agents that act; others count 1)
    rho_t = min(rho_bar, e^{log rho_t}),  c_t = lam min(c_bar, e^{log rho_t})
    delta_t = rho_t (r_t + gamma_t V(s_{t+1}) - V(s_t)),  gamma_t = gamma (1 - done_t)
    v_t = V(s_t) + delta_t + gamma_t c_t (v_{t+1} - V(s_{t+1})),   v_T = V(s_T)  (bootstrap)
    A_t = min(rho_pg_bar, e^{log rho_t}) (r_t + gamma_t v_{t+1} - V(s_t))

r_t is the team reward (the group's rewards summed) and V one team value per step. ``correction``:
``joint`` (MA-Trace), ``per_agent`` (DecMA-Trace: each agent its own ratio and its own value on its
observation) or ``none`` (no importance weights: plain n-step actor-critic on lagged data).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

CORRECTIONS = ("joint", "per_agent", "none")


class VTrace(NamedTuple):
    vs: torch.Tensor  # V-trace value targets v_t           [T, B]
    pg_advantages: torch.Tensor  # A_t                      [T, B]
    rho: torch.Tensor  # clipped rho_t                       [T, B]
    c: torch.Tensor  # clipped trace coefficients c_t       [T, B]


@torch.no_grad()
def vtrace(log_rhos: torch.Tensor, discounts: torch.Tensor, rewards: torch.Tensor, values: torch.Tensor,
           bootstrap: torch.Tensor, rho_bar: Optional[float] = 1.0, c_bar: Optional[float] = 1.0,
           rho_pg_bar: Optional[float] = 1.0, lam: float = 1.0) -> VTrace:
    """V-trace targets and policy-gradient advantages, computed backwards (no gradient flows through
    them). ``discounts`` is gamma * (1 - done_t); a ``None`` bar means no truncation."""
    rhos = torch.exp(log_rhos)
    clip = lambda x, bar: x if bar is None else torch.clamp(x, max=bar)
    rho = clip(rhos, rho_bar)
    c = lam * clip(rhos, c_bar)
    values_tp1 = torch.cat([values[1:], bootstrap.unsqueeze(0)], 0)
    deltas = rho * (rewards + discounts * values_tp1 - values)
    acc = torch.zeros_like(bootstrap)
    out = torch.empty_like(values)
    for t in range(values.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * c[t] * acc
        out[t] = acc
    vs = out + values
    vs_tp1 = torch.cat([vs[1:], bootstrap.unsqueeze(0)], 0)
    adv = clip(rhos, rho_pg_bar) * (rewards + discounts * vs_tp1 - values)
    return VTrace(vs, adv, rho, c)


def joint_log_ratio(logp: torch.Tensor, logp_behaviour: torch.Tensor, acting: torch.Tensor) -> torch.Tensor:
    """Sum over agents (last axis) of per-agent log-ratios; agents that do not act (dead, absent)
    contribute 0, i.e. a ratio of 1. ``[T, B, n] -> [T, B]``."""
    return ((logp - logp_behaviour) * acting).sum(-1)


def adaptive_entropy_loss(log_coef: torch.Tensor, entropy: torch.Tensor, target: float, speed: float):
    """SEED RL's Lagrangian entropy cost: coefficient beta = exp(speed * psi), trained on
    ``beta * stopgrad(entropy - target)``; returns (beta, its loss term)."""
    beta = torch.exp(speed * log_coef)
    return beta.detach(), beta * (entropy.detach() - target)
