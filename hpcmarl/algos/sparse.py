"""Dynamic sparse training for plain torch modules: Erdos-Renyi layer densities, masks that survive
optimizer steps, target copies and checkpoints, and RigL-style topology evolution
(docs/algorithms/qmix.md#sparse-networks-and-rigl, #pitfalls). Pure torch, no MPI.

Every 2-D ``*.weight`` parameter is sparse (biases and other parameters stay dense). Each training step:

    loss.backward()
    dense = {n: p.grad.clone() ...}     (only in the few steps before a topology update: inactive weights
                                         are stored zeros, so autograd's gradient is already dense)
    masks.mask_grads(model); opt.step(); masks.apply(model); masks.apply_optimizer(opt, model)
    every Delta_T steps while t < T_end:
        masks.topology_update(model, dense, cosine_drop_fraction(t, zeta0, T_end), opt)
    after every target-network copy or checkpoint load: masks.apply(target)

Tie-breaking: equal scores are ordered by a fixed random permutation per layer drawn from the
constructor's generator, so ties (e.g. zero gradients of dead units) are deterministic for a given seed
without favouring low indices.

FLOP convention (masked dense matmuls give no wall-clock speed-up, so report FLOPs): forward of one
linear layer = 2 * active * rows (multiply + add) + out_features * rows (bias); backward ~= 2 x forward
(input-gradient and weight-gradient halves, both sparse); a dense-gradient step for growth computes the
weight-gradient half densely, i.e. adds 2 * (total - active) * rows.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn


def erdos_renyi_densities(shapes: Dict[str, Tuple[int, ...]], sparsity: float) -> Dict[str, float]:
    """Per-layer densities ``eps (fan_in + fan_out) / (fan_in fan_out)`` for weights of shape
    ``(fan_out, fan_in)``, ``eps`` chosen so that the active total is ``round((1 - sparsity) total)``.
    Layers that would exceed density 1 are kept dense and ``eps`` is re-solved for the rest."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    numel = {n: math.prod(s) for n, s in shapes.items()}
    fans = {n: (s[0], numel[n] // s[0]) for n, s in shapes.items()}  # (fan_out, fan_in)
    target = round((1.0 - sparsity) * sum(numel.values()))
    dense: set = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        if not rest:
            return {n: 1.0 for n in shapes}
        eps = (target - sum(numel[n] for n in dense)) / sum(fo + fi for fo, fi in (fans[n] for n in rest))
        dens = {n: eps * (fans[n][0] + fans[n][1]) / numel[n] for n in rest}
        over = {n for n, d in dens.items() if d > 1.0}
        if not over:  # eps only grows as layers turn dense, so adding all offenders at once is exact
            return {**{n: 1.0 for n in dense}, **dens}
        dense |= over


def cosine_drop_fraction(step: int, zeta0: float, t_end: int) -> float:
    """RigL's drop fraction ``zeta0 / 2 (1 + cos(pi step / t_end))`` for ``step < t_end``, else 0."""
    return 0.5 * zeta0 * (1.0 + math.cos(math.pi * step / t_end)) if step < t_end else 0.0


def is_sparse_weight(name: str, p: torch.Tensor) -> bool:
    """The parameters that carry masks: every 2-D ``*.weight`` and a GRU cell's ``weight_ih``/``weight_hh`` (biases
    and the rest stay dense)."""
    return p.dim() == 2 and name.rsplit(".", 1)[-1] in ("weight", "weight_ih", "weight_hh")


def linear_flops(active_weights: int, out_features: int, rows: int) -> float:
    """Forward FLOPs of one linear layer on ``rows`` inputs counting active weights only (with bias)."""
    return float(2 * active_weights * rows + out_features * rows)


def _top(score: torch.Tensor, k: int, order: torch.Tensor) -> torch.Tensor:
    """Flat indices of the ``k`` largest entries of flat ``score``; ties go to the earlier in ``order``."""
    return order[torch.sort(score[order], descending=True, stable=True).indices[:k]]


class SparseMasks:
    """Boolean masks for every 2-D ``*.weight`` of ``module`` at Erdos-Renyi densities for ``sparsity``.

    The initial mask keeps the largest-|w| entries of the module's current (dense) weights, which are
    then masked in place. Masks are keyed by ``module.named_parameters()`` names, so :meth:`apply` works
    on any module of the same structure (target networks). ``version`` counts topology changes.
    """

    def __init__(self, module: nn.Module, sparsity: float, generator: Union[torch.Generator, int] = 0):
        gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(generator)
        weights = {n: p for n, p in module.named_parameters() if is_sparse_weight(n, p)}
        self.sparsity_target = sparsity
        self.densities = erdos_renyi_densities({n: tuple(p.shape) for n, p in weights.items()}, sparsity)
        self.masks: Dict[str, torch.Tensor] = {}
        self._order: Dict[str, torch.Tensor] = {}
        for n, p in weights.items():
            self._order[n] = torch.randperm(p.numel(), generator=gen).to(p.device)
            keep = _top(p.detach().abs().flatten(), max(1, round(self.densities[n] * p.numel())), self._order[n])
            m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            m[keep] = True
            self.masks[n] = m.view_as(p)
        self.version = 0
        self.apply(module)

    def _params(self, module: nn.Module) -> List[Tuple[str, nn.Parameter, torch.Tensor]]:
        params = dict(module.named_parameters())
        missing = [n for n in self.masks if n not in params]
        if missing:
            raise KeyError(f"module lacks masked parameters {missing}")
        return [(n, params[n], m) for n, m in self.masks.items()]

    @torch.no_grad()
    def apply(self, module: nn.Module) -> None:
        """Zero the inactive weights in place (after optimizer steps, target copies, checkpoint loads)."""
        for _, p, m in self._params(module):
            p.masked_fill_(~m, 0.0)

    @torch.no_grad()
    def mask_grads(self, module: nn.Module) -> None:
        """Zero the gradients of inactive weights (call between ``backward`` and ``opt.step``)."""
        for _, p, m in self._params(module):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0.0)

    @torch.no_grad()
    def apply_optimizer(self, opt: torch.optim.Optimizer, module: nn.Module) -> None:
        """Zero the inactive entries of every per-weight optimizer state tensor (Adam ``exp_avg``,
        ``exp_avg_sq``, ``max_exp_avg_sq``, RMSprop ``square_avg``, SGD ``momentum_buffer``, ...)."""
        for _, p, m in self._params(module):
            for v in opt.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v.masked_fill_(~m, 0)

    @torch.no_grad()
    def topology_update(self, module: nn.Module, dense_grads: Dict[str, torch.Tensor], fraction: float,
                        opt: Optional[torch.optim.Optimizer] = None) -> Dict[str, int]:
        """Per layer with ``n_on`` active weights: drop the ``floor(fraction n_on)`` active weights of
        smallest current |w| and grow as many previously inactive ones with the largest
        |``dense_grads[name]``| at exactly 0. Active counts never change. Pass ``opt`` (or call
        :meth:`apply_optimizer`) so the dropped weights' optimizer state is cleared."""
        dropped = 0
        for n, p, m in self._params(module):
            flat, n_on = m.flatten(), int(m.sum())
            k = min(math.floor(fraction * n_on), m.numel() - n_on)
            if k <= 0:
                continue
            ninf = torch.tensor(-math.inf, device=p.device)
            w = p.detach().abs().flatten().float()
            g = dense_grads[n].detach().to(p.device).abs().flatten().float()
            drop = _top(torch.where(flat, -w, ninf), k, self._order[n])
            grow = _top(torch.where(flat, ninf, g), k, self._order[n])
            new, grown = flat.clone(), torch.zeros_like(flat)
            new[drop], new[grow], grown[grow] = False, True, True
            self.masks[n] = new.view_as(p)
            p.masked_fill_(grown.view_as(p), 0.0)
            dropped += k
        if dropped:
            self.version += 1
            self.apply(module)
            if opt is not None:
                self.apply_optimizer(opt, module)
        return {"dropped": dropped, "grown": dropped}

    def active_counts(self) -> Dict[str, Tuple[int, int]]:
        """``(active, total)`` per sparse layer."""
        return {n: (int(m.sum()), m.numel()) for n, m in self.masks.items()}

    def density(self) -> float:
        """Fraction of active weights over all sparse layers."""
        counts = self.active_counts().values()
        return sum(a for a, _ in counts) / max(1, sum(t for _, t in counts))

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density()

    def state_arrays(self, prefix: str = "mask/") -> Dict[str, np.ndarray]:
        """Masks as uint8 arrays (``prefix + name``) plus ``prefix + "version"`` (int64); no pickle."""
        out = {prefix + n: m.cpu().numpy().astype(np.uint8) for n, m in self.masks.items()}
        out[prefix + "version"] = np.array(self.version, dtype=np.int64)
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray], prefix: str = "mask/") -> None:
        """Restore masks (and ``version``) from :meth:`state_arrays`; call :meth:`apply` on the module next."""
        for n, m in self.masks.items():
            a = np.asarray(arrays[prefix + n])
            if a.shape != tuple(m.shape):
                raise ValueError(f"mask {n}: shape {a.shape} != {tuple(m.shape)}")
            self.masks[n] = torch.from_numpy(a != 0).to(m.device)
        if prefix + "version" in arrays:
            self.version = int(arrays[prefix + "version"])
