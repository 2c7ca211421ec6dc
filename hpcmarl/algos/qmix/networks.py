"""QMIX / VDN: network construction (agent utility nets, recurrent agent, monotonic mixer) and the sparse
layout of the utility nets that learner and actors share."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from torch import nn

from hpcmarl.algos.sparse import is_sparse_weight
from hpcmarl.envs import EnvSpec
from hpcmarl.models import mlp


def agent_input(obs: torch.Tensor) -> torch.Tensor:
    """``[..., n, d] -> [..., n, d + n]``: the observation with the agent's one-hot index appended."""
    n = obs.shape[-2]
    eye = torch.eye(n, dtype=obs.dtype, device=obs.device).expand(*obs.shape[:-1], n)
    return torch.cat([obs, eye], -1)


def rnn_input(obs: torch.Tensor, last_action: torch.Tensor) -> torch.Tensor:
    """``[..., n, d]`` + the previous action one-hot ``[..., n, A]`` -> ``[..., n, d + A + n]`` (agent id last)."""
    return agent_input(torch.cat([obs, last_action], -1))


class RNNAgent(nn.Module):
    """PyMARL's RNN agent: Linear + ReLU -> GRU cell -> Q-values; ``forward(x, h) -> (q, next h)``."""

    def __init__(self, inp: int, hidden: int, n_actions: int):
        super().__init__()
        self.hidden_size = hidden
        self.fc1 = nn.Linear(inp, hidden)
        self.rnn = nn.GRUCell(hidden, hidden)
        self.fc2 = nn.Linear(hidden, n_actions)

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        y = torch.relu(self.fc1(x))
        lead = y.shape[:-1]
        h2 = self.rnn(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1])).reshape(*lead, -1)
        return self.fc2(h2), h2


def agent_nets(spec: EnvSpec, hidden: int, layers: int, recurrent: bool = False) -> nn.ModuleDict:
    if recurrent:
        return nn.ModuleDict({g.name: RNNAgent(g.obs_dim + g.n_actions + g.n, hidden, g.n_actions)
                              for g in spec.groups})
    return nn.ModuleDict({g.name: mlp(g.obs_dim + g.n, hidden, layers, g.n_actions, act=nn.ReLU) for g in spec.groups})


def one_hot(actions: torch.Tensor, n: int) -> torch.Tensor:
    return nn.functional.one_hot(actions.long(), n).to(torch.float32)


class QMixer(nn.Module):
    """QMIX's monotonic mixer: hypernetworks on the state give non-negative weights (absolute values),
    so dQ_tot/dQ_i >= 0."""

    def __init__(self, state_dim: int, n_agents: int, embed: int, hyper_hidden: int):
        super().__init__()
        self.n, self.embed = n_agents, embed
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(),
                                      nn.Linear(hyper_hidden, n_agents * embed))
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, embed))
        self.v = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, qs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``qs [..., N]``, ``s [..., S]`` -> ``Q_tot [...]``."""
        w1 = self.hyper_w1(s).abs().view(*qs.shape[:-1], self.n, self.embed)
        h = nn.functional.elu(torch.einsum("...n,...ne->...e", qs, w1) + self.hyper_b1(s))
        return (h * self.hyper_w2(s).abs()).sum(-1) + self.v(s).squeeze(-1)

    def mixing_flops(self, rows: int) -> float:
        return float(rows) * (2 * self.n * self.embed + 4 * self.embed)


class QNet(nn.Module):
    """Utility networks per group (``policies``, the part actors hold) and the mixer (QMIX) or none (VDN)."""

    def __init__(self, spec: EnvSpec, cfg):
        super().__init__()
        self.spec = spec
        self.recurrent = bool(getattr(cfg, "recurrent", False))
        self.policies = agent_nets(spec, cfg.hidden, cfg.layers, self.recurrent)
        n = sum(g.n for g in spec.groups)
        self.mixer = (QMixer(spec.state_dim or spec.joint_obs_dim, n, cfg.mixer_embed, cfg.hyper_hidden)
                      if cfg.name == "qmix" else None)

    def utilities(self, obs: Dict[str, torch.Tensor], actions: Dict[str, torch.Tensor] = None,
                  lengths: torch.Tensor = None) -> Dict[str, torch.Tensor]:
        """Per-group ``[..., n_g, A_g]`` action values. Recurrent agents: ``obs [B, L+1, n, d]`` of episodes from
        their start and the ``actions [B, L, n]`` taken; the GRU runs through them from a zero state. With
        ``lengths [B]`` (each episode's steps; its obs rows are ``length + 1``) it steps only the episodes still
        running (longest first) and leaves 0 at the padded rows: the same values where rows are real, and about
        half the work on batches of episodes of mixed length."""
        if not self.recurrent:
            return {g.name: self.policies[g.name](agent_input(obs[g.name])) for g in self.spec.groups}
        B, L1 = next(iter(obs.values())).shape[:2]
        if lengths is None:
            order, inverse, rows = None, None, [B] * L1
        else:  # rows[t]: how many episodes, longest first, still have obs row t
            order = torch.argsort(lengths, descending=True, stable=True)
            inverse = torch.argsort(order)
            rows = (lengths[order].cpu()[None, :] + 1 > torch.arange(L1)[:, None]).sum(1).tolist()
        out = {}
        for g in self.spec.groups:
            o, net = obs[g.name], self.policies[g.name]
            a = actions[g.name]
            if order is not None:
                o, a = o[order], a[order]
            n = o.shape[2]
            h = o.new_zeros(B, n, net.hidden_size)
            last = o.new_zeros(B, n, g.n_actions)
            qs = []
            for t in range(L1):
                k = rows[t]
                q, h = net(rnn_input(o[:k, t], last[:k]), h[:k])
                qs.append(q if k == B else nn.functional.pad(q, (0, 0, 0, 0, 0, B - k)))
                if t < L1 - 1:
                    last = one_hot(a[:k, t], g.n_actions)
            q = torch.stack(qs, 1)
            out[g.name] = q if order is None else q[inverse]
        return out

    def mix(self, qs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return qs.sum(-1) if self.mixer is None else self.mixer(qs, s)


def sparse_layout(policies: nn.Module) -> List[tuple]:
    """``(name, parameter, is_masked)`` of the utility nets in a fixed order: 2-D weights carry masks."""
    return [(n, p, is_sparse_weight(n, p)) for n, p in policies.named_parameters()]


def pack_masks(masks: List[torch.Tensor]) -> np.ndarray:
    return np.packbits(np.concatenate([m.detach().cpu().numpy().ravel() for m in masks]).astype(np.uint8))
