"""QMIX / VDN, actor side: epsilon-greedy inference over the agents' utility nets (dense or sparse weights)."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from hpcmarl.algos.qmix.networks import agent_input, agent_nets, one_hot, rnn_input, sparse_layout
from hpcmarl.envs import EnvSpec
from hpcmarl.models import Inference, checksum


class QInference(Inference):
    """Actor side: epsilon-greedy over available actions; ``epsilon`` arrives with every weights message.
    Sparse policies (:meth:`set_masks` called) receive only their active weights in :meth:`load`."""

    def __init__(self, spec: EnvSpec, hidden: int, layers: int, recurrent: bool = False):
        self.spec = spec
        self.policies = agent_nets(spec, hidden, layers, recurrent)
        self.recurrent = recurrent
        self.h: Dict[str, torch.Tensor] = {}  # recurrent: hidden state and last action per env copy and agent
        self.last: Dict[str, torch.Tensor] = {}
        self.params = list(self.policies.parameters())
        self.squashed = False
        self.version, self.checksum, self.epsilon = -1, 0.0, 0.0
        self.layout = sparse_layout(self.policies)
        self.masks: Optional[List[torch.Tensor]] = None
        self.mask_version = -1

    def mask_bytes(self) -> int:
        return (sum(p.numel() for _, p, m in self.layout if m) + 7) // 8

    def set_masks(self, bits: np.ndarray, version: int) -> None:
        flat = torch.from_numpy(np.unpackbits(bits)[:8 * self.mask_bytes()].astype(bool))
        self.masks, off = [], 0
        for _, p, masked in self.layout:
            if masked:
                self.masks.append(flat[off:off + p.numel()].view_as(p))
                off += p.numel()
        self.mask_version = version

    def load(self, flat: np.ndarray, version: int) -> None:
        if self.masks is None:
            return super().load(flat, version)
        vals, off, masks = torch.from_numpy(flat), 0, iter(self.masks)
        with torch.no_grad():
            for _, p, masked in self.layout:
                if masked:
                    m = next(masks)
                    k = int(m.sum())
                    p.zero_()
                    p[m] = vals[off:off + k]
                else:
                    k = p.numel()
                    p.copy_(vals[off:off + k].view_as(p))
                off += k
        assert off == flat.size, f"sparse weights message has {flat.size} values, the masks need {off}"
        self.version, self.checksum = version, checksum(flat)

    def hidden(self, group: str, lead: tuple) -> torch.Tensor:
        """The hidden state (:meth:`Inference.hidden`), and the last actions the recurrent nets take in beside it."""
        last = self.last.get(group)
        if last is None or tuple(last.shape[:-1]) != tuple(lead):
            self.last[group] = torch.zeros(*lead, self.spec.group(group).n_actions)
        return super().hidden(group, lead)

    @torch.no_grad()
    def act(self, obs: Dict[str, np.ndarray], masks: Dict[str, np.ndarray], greedy: bool = False,
            rows: Optional[slice] = None):
        """Actions and the log-probability of each under the epsilon-greedy policy (``rows``: as
        :meth:`Inference.act`'s)."""
        eps = 0.0 if greedy else self.epsilon
        actions, logps = {}, {}
        for g in self.spec.groups:
            m = torch.from_numpy(masks[g.name])
            o = torch.from_numpy(obs[g.name])
            if self.recurrent:
                h = self.hidden(g.name, o.shape[:-1]) if rows is None else self.h[g.name][rows]
                last = self.last[g.name] if rows is None else self.last[g.name][rows]
                q, h = self.policies[g.name](rnn_input(o, last), h)
                self.carry(self.h, g.name, h, rows)
            else:
                q = self.policies[g.name](agent_input(o))
            q = q.masked_fill(~m, float("-inf"))
            best = q.argmax(-1)
            avail = m.float()
            n_avail = avail.sum(-1).clamp_min(1.0)
            if eps > 0:
                rand = torch.multinomial(avail.reshape(-1, avail.shape[-1]) + 1e-12, 1).reshape(best.shape)
                a = torch.where(torch.rand(best.shape) < eps, rand, best)
            else:
                a = best
            p = eps / n_avail + (1.0 - eps) * (a == best).float()
            if self.recurrent:
                self.carry(self.last, g.name, one_hot(a, g.n_actions), rows)
            actions[g.name] = a.numpy()
            logps[g.name] = torch.log(p).numpy().astype(np.float32)
        return actions, logps

    def episodes_ended(self, envs) -> None:
        super().episodes_ended(envs)
        if self.recurrent and len(envs):
            for last in self.last.values():
                last[list(envs)] = 0.0


def q_inference(spec: EnvSpec, algo) -> QInference:
    """The actors' epsilon-greedy agent networks of a QMIX/VDN config (the algorithm registry's ``inference``)."""
    return QInference(spec, algo.hidden, algo.layers, bool(getattr(algo, "recurrent", False)))
