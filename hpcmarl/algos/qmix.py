"""QMIX / VDN value decomposition with the MAST components (algorithms.md section 4). Pure torch, no MPI.

Actors act epsilon-greedily with per-agent utility networks Q_i(o_i, id_i, .) (parameters shared inside a
policy group, the agent's one-hot index appended to its observation) and send T-step unrolls as in the
rollout flow; the learner stitches them back into whole episodes per env copy (:class:`EpisodeStitcher`),
keeps them in an episode replay (:class:`EpisodeReplay`) and trains on batches of episodes:

    Q_tot(s_t, a_t) = mixer([Q_i(o_t^i, a_t^i)]_i, s_t)         (VDN: the sum; QMIX: monotonic hypernet mixer)
    b_{t+1}^i       = SM_{omega,alpha}(Q_i^target(o_{t+1}^i, .))  over available actions (mellowmax_omega > 0)
                    = Q_i^target(o_{t+1}^i, argmax_a Q_i(o_{t+1}^i, a))   otherwise (double Q)
    boot_t          = mixer^target(b_{t+1}, s_{t+1})
    G_t             = r_t + gamma (1 - term_t) [(1 - lambda) boot_t + lambda G_{t+1}]
    loss            = mean over valid steps of (Q_tot(s_t, a_t) - stopgrad(G_t))^2

r_t is the team reward (every agent's reward summed). lambda = 0 gives one-step targets; MAST's hybrid
schedule uses 0 until ``td_lambda_after`` env steps and ``td_lambda`` afterwards. With ``bootstrap_truncated`` (off by
default here) an episode ended by a time limit bootstraps from its final observation. ``recurrent``: PyMARL's RNN agent
(:class:`RNNAgent`), run through whole episodes from a zero state.

MAST (sparsity > 0): the whole network (agent nets and mixer) is sparse with Erdos-Renyi layer
densities, RigL topology updates every ``topology_every`` gradient steps until ``topology_end``, masks
applied after every step, to Adam's moments, to the target network and on checkpoint load
(:mod:`hpcmarl.algos.sparse`). The dual replay draws ``recent_fraction`` of every batch from the
``recent_episodes`` newest episodes.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from hpcmarl.algos.ppo import ValueNorm, load_torch_state_arrays, torch_state_arrays
from hpcmarl.algos.sparse import SparseMasks, cosine_drop_fraction, is_sparse_weight, linear_flops
from hpcmarl.envs import EnvSpec
from hpcmarl.models import Inference, checksum, flat_params, joint_input, mlp
from hpcmarl.comm.spec import META_INDEX, Record
from hpcmarl.typedconfig import check


# --------------------------------------------------------------------------------------------------
# targets (pure functions)
# --------------------------------------------------------------------------------------------------
def soft_mellowmax(q: torch.Tensor, omega: float, alpha: float = 0.0, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SM_{omega,alpha}(q) = [LSE((alpha + omega) q) - LSE(alpha q)] / omega over the last axis, with
    unavailable actions (``mask`` False) left out of both sums. Rows without any available action give 0."""
    if mask is None:
        mask = torch.ones_like(q, dtype=torch.bool)
    neg = torch.tensor(float("-inf"), dtype=q.dtype, device=q.device)
    hi = torch.where(mask, (alpha + omega) * q, neg)
    lo = torch.where(mask, alpha * q, neg)
    out = (torch.logsumexp(hi, -1) - torch.logsumexp(lo, -1)) / omega
    return torch.where(mask.any(-1), out, torch.zeros_like(out))


@dataclass
class QMIXConfig:
    """QMIX / VDN on the rollout flow, with the MAST sparse-training components (algorithms.md section 4).

    MAST values the paper does not give (alpha, lambda, the switch step, buffer sizes and split) are
    our choices, documented in the README; every component can be switched off for ablations."""

    name: str = "qmix"  # qmix (monotonic hypernetwork mixer) | vdn (sum of utilities)
    unroll_length: int = 25  # T: steps per env copy in one unroll (MPE: one whole episode)
    episode_limit: int = 0  # longest stored episode segment; 0 = the env's max_cycles
    lr: float = 5e-4  # Adam
    gamma: float = 0.99
    reward_scale: float = 1.0  # team reward multiplier for learning (returns are logged unscaled)
    reward_norm: bool = False  # standardise team rewards with running mean/std (over all learners' episodes)
    hidden: int = 64
    layers: int = 2
    mixer_embed: int = 32
    hyper_hidden: int = 64
    eps_start: float = 1.0  # epsilon-greedy exploration, annealed linearly over eps_anneal_steps env steps
    eps_end: float = 0.05
    eps_anneal_steps: int = 100_000
    buffer_episodes: int = 5000  # replay capacity (episode segments, FIFO)
    batch_episodes: int = 32
    learning_starts: int = 32  # episodes in every learner's replay before training starts
    train_steps: int = 1  # gradient steps per learner update (one update = one unroll per actor)
    target_update: int = 200  # gradient steps between hard target-network copies (unless target_tau > 0)
    target_tau: float = 0.0  # > 0: soft target update theta' <- tau theta + (1 - tau) theta' after every step
    max_grad_norm: float = 10.0
    # ---- MAST ----
    sparsity: float = 0.0  # fraction of zero weights in agent nets and mixer (Erdos-Renyi per layer); 0 = dense
    topology_every: int = 200  # gradient steps between RigL drop/grow updates (0 = static sparse masks)
    topology_end: int = 50_000  # no topology updates from this gradient step on (cosine schedule ends here)
    drop_fraction: float = 0.5  # zeta_0: initial fraction of active weights dropped and regrown
    mellowmax_omega: float = 0.0  # Soft Mellowmax bootstrap (omega > 0; 0 = double-Q max)
    mellowmax_alpha: float = 0.0
    td_lambda: float = 0.0  # lambda of the TD(lambda) targets (0 = one-step)
    td_lambda_after: int = 0  # hybrid targets: one-step until this many env steps, TD(lambda) afterwards
    recent_episodes: int = 0  # dual replay: size of the newest-episodes buffer (0 = single buffer)
    recent_fraction: float = 0.5  # share of every batch drawn from the newest episodes
    checkpoint_replay: bool = True  # checkpoints hold each learner's replay buffer (a resume continues with it)
    critic_input: str = "obs"  # mixer input: "obs" = all agents' observations concatenated; "state" = env.state()
    bootstrap_truncated: bool = False  # true: an episode ended by a time limit bootstraps from its final observation
    # (the segment is not terminal). Off by default for value-based learners: on simple_spread (every episode ends by
    # its time limit) it left the Q-values without any anchor and they diverged (Q_tot 1,265 at 1M env steps on
    # standardised rewards, return falling from -65.7 at 250k to -75.3); cut there, Q stays ~11 and the return reaches
    # -54 by 800k (README, "Learning per sample")
    recurrent: bool = False  # PyMARL's RNN agent: input obs + last action (one-hot) + agent id, one ReLU layer of
    # `hidden`, a GRU cell, the Q head (`layers` unused); hidden state through whole episodes (MAST masks the GRU too)

    @property
    def uses_state(self) -> bool:
        return self.critic_input == "state"

    def validate(self, cfg) -> None:
        """Checks beyond the types (called by :func:`hpcmarl.config.validate`)."""
        check(self.name in ("qmix", "vdn"), "algo.name", "must be qmix or vdn")
        for k in ("unroll_length", "hidden", "layers", "mixer_embed", "hyper_hidden", "buffer_episodes",
                  "batch_episodes", "train_steps", "target_update"):
            check(getattr(self, k) >= 1, f"algo.{k}", "must be >= 1")
        for k in ("episode_limit", "eps_anneal_steps", "learning_starts", "topology_every", "topology_end",
                  "td_lambda_after", "recent_episodes"):
            check(getattr(self, k) >= 0, f"algo.{k}", "must be >= 0")
        check(self.lr > 0, "algo.lr", "must be > 0")
        check(0 < self.gamma <= 1, "algo.gamma", "must be in (0, 1]")
        check(0 <= self.eps_end <= self.eps_start <= 1, "algo.eps_start", "need 0 <= eps_end <= eps_start <= 1")
        check(self.learning_starts <= self.buffer_episodes, "algo.learning_starts",
               f"must be <= algo.buffer_episodes ({self.buffer_episodes})")
        check(self.recent_episodes <= self.buffer_episodes, "algo.recent_episodes",
               f"must be <= algo.buffer_episodes ({self.buffer_episodes})")
        check(0 <= self.sparsity < 1, "algo.sparsity", "must be in [0, 1)")
        check(0 <= self.drop_fraction <= 1, "algo.drop_fraction", "must be in [0, 1]")
        check(self.mellowmax_omega >= 0, "algo.mellowmax_omega", "must be >= 0 (0 = max)")
        check(0 <= self.td_lambda <= 1, "algo.td_lambda", "must be in [0, 1]")
        check(0 <= self.recent_fraction <= 1, "algo.recent_fraction", "must be in [0, 1]")
        check(0 <= self.target_tau <= 1, "algo.target_tau", "must be in [0, 1] (0 = hard copies every target_update steps)")
        check(self.critic_input in ("obs", "state"), "algo.critic_input", "must be 'obs' or 'state'")
        # algo.episode_limit >= 1: hpcmarl.config.validate asks it (the registry entry has needs_episode_limit=True)


def lambda_returns(rewards: torch.Tensor, terminal: torch.Tensor, valid: torch.Tensor, boot: torch.Tensor,
                   gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) targets over ``[B, L]`` episode segments, backwards:
    ``G_t = r_t + gamma (1 - term_t) [(1 - lam) boot_t + lam G_{t+1}]`` where ``boot_t`` bootstraps the
    state after step t. At the last valid step of a segment that did not terminate ``G_{t+1}`` is replaced
    by ``boot_t``; padded steps (``valid`` 0) give 0. ``lam = 0``: one-step targets."""
    B, L = rewards.shape
    out = torch.zeros_like(rewards)
    nxt = torch.zeros_like(rewards[:, 0])
    for t in range(L - 1, -1, -1):
        more = valid[:, t + 1] if t + 1 < L else torch.zeros_like(valid[:, t])
        g_next = torch.where(more > 0, nxt, boot[:, t])
        g = rewards[:, t] + gamma * (1.0 - terminal[:, t]) * ((1.0 - lam) * boot[:, t] + lam * g_next)
        nxt = g * valid[:, t]
        out[:, t] = nxt
    return out


# --------------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------------
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
        return nn.ModuleDict({g.name: RNNAgent(g.obs_dim + g.n_actions + g.n, hidden, g.n_actions) for g in spec.groups})
    return nn.ModuleDict({g.name: mlp(g.obs_dim + g.n, hidden, layers, g.n_actions, act=nn.ReLU) for g in spec.groups})


def one_hot(actions: torch.Tensor, n: int) -> torch.Tensor:
    return nn.functional.one_hot(actions.long(), n).to(torch.float32)


class QMixer(nn.Module):
    """QMIX's monotonic mixer: hypernetworks on the state give non-negative weights (absolute values),
    so dQ_tot/dQ_i >= 0."""

    def __init__(self, state_dim: int, n_agents: int, embed: int, hyper_hidden: int):
        super().__init__()
        self.n, self.embed = n_agents, embed
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, hyper_hidden), nn.ReLU(), nn.Linear(hyper_hidden, n_agents * embed))
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
        self.mixer = QMixer(spec.state_dim or spec.joint_obs_dim, n, cfg.mixer_embed, cfg.hyper_hidden) if cfg.name == "qmix" else None

    def utilities(self, obs: Dict[str, torch.Tensor], actions: Dict[str, torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Per-group ``[..., n_g, A_g]`` action values. Recurrent agents: ``obs [B, L+1, n, d]`` of episodes from
        their start and the ``actions [B, L, n]`` taken; the GRU runs through them from a zero state."""
        if not self.recurrent:
            return {g.name: self.policies[g.name](agent_input(obs[g.name])) for g in self.spec.groups}
        out = {}
        for g in self.spec.groups:
            o, net = obs[g.name], self.policies[g.name]
            B, L1, n = o.shape[:3]
            h = o.new_zeros(B, n, net.hidden_size)
            last = o.new_zeros(B, n, g.n_actions)
            qs = []
            for t in range(L1):
                q, h = net(rnn_input(o[:, t], last), h)
                qs.append(q)
                if t < L1 - 1:
                    last = one_hot(actions[g.name][:, t], g.n_actions)
            out[g.name] = torch.stack(qs, 1)
        return out

    def mix(self, qs: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return qs.sum(-1) if self.mixer is None else self.mixer(qs, s)


def sparse_layout(policies: nn.Module) -> List[tuple]:
    """``(name, parameter, is_masked)`` of the utility nets in a fixed order: 2-D weights carry masks."""
    return [(n, p, is_sparse_weight(n, p)) for n, p in policies.named_parameters()]


def pack_masks(masks: List[torch.Tensor]) -> np.ndarray:
    return np.packbits(np.concatenate([m.detach().cpu().numpy().ravel() for m in masks]).astype(np.uint8))


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

    @torch.no_grad()
    def act(self, obs: Dict[str, np.ndarray], masks: Dict[str, np.ndarray], greedy: bool = False):
        """Actions and the log-probability of each under the epsilon-greedy policy."""
        eps = 0.0 if greedy else self.epsilon
        actions, logps = {}, {}
        for g in self.spec.groups:
            m = torch.from_numpy(masks[g.name])
            o = torch.from_numpy(obs[g.name])
            if self.recurrent:
                h = self.hidden(g.name, o.shape[:-1])
                last = self.last.get(g.name)
                if last is None or last.shape[:-1] != h.shape[:-1]:
                    last = torch.zeros(*o.shape[:-1], g.n_actions)
                q, self.h[g.name] = self.policies[g.name](rnn_input(o, last), h)
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
                self.last[g.name] = one_hot(a, g.n_actions)
            actions[g.name] = a.numpy()
            logps[g.name] = torch.log(p).numpy().astype(np.float32)
        return actions, logps

    def episodes_ended(self, envs) -> None:
        super().episodes_ended(envs)
        if self.recurrent and len(envs):
            for last in self.last.values():
                last[list(envs)] = 0.0


# --------------------------------------------------------------------------------------------------
# episodes: stitching unrolls, replay
# --------------------------------------------------------------------------------------------------

def q_inference(spec: EnvSpec, algo) -> QInference:
    """The actors' epsilon-greedy agent networks of a QMIX/VDN config (the algorithm registry's ``inference``)."""
    return QInference(spec, algo.hidden, algo.layers, bool(getattr(algo, "recurrent", False)))

class EpisodeStitcher:
    """Cuts T-step unrolls into episode segments per (actor, env copy): a segment ends with its episode
    (``terminal`` 1 at its last step) or after ``max_len`` steps (not terminal; the next observation is
    kept as row ``max_len`` for bootstrapping). With ``bootstrap_truncated`` an episode that ended by truncation
    (no agent terminated at its last step) is not terminal either: its final observation (and state) is that row.
    Every field is ``[length(+1), ...]``."""

    def __init__(self, spec: EnvSpec, max_len: int, bootstrap_truncated: bool = False):
        self.spec, self.max_len, self.bootstrap_truncated = spec, max_len, bootstrap_truncated
        self.partial: Dict[tuple, List[dict]] = {}

    def _rows(self, rec: Record, e: int, a: int, b: int) -> dict:
        out = {"reward": sum(rec[f"{g.name}/reward"][a:b, e].sum(-1) for g in self.spec.groups).astype(np.float32)}
        for g in self.spec.groups:
            n = g.name
            for k in ("obs", "alive", "action", "action_mask"):  # copies: the receive buffer is reused
                out[f"{n}/{k}"] = rec[f"{n}/{k}"][a:b, e].copy()
        if self.spec.state_dim:
            out["state"] = rec["state"][a:b, e].copy()
        return out

    def add(self, rec: Record, actor: int) -> List[dict]:
        """Episode segments completed by this unroll (arrays copied out of the receive buffer)."""
        T = rec["env_done"].shape[0]
        done_at = rec["env_done"]
        out = []
        for e in range(done_at.shape[1]):
            key = (actor, e)
            chunks = self.partial.setdefault(key, [])
            have = sum(len(c["reward"]) for c in chunks)
            start = 0
            while start < T:
                ends = np.flatnonzero(done_at[start:, e])
                end = start + int(ends[0]) + 1 if len(ends) else T
                end = min(end, start + self.max_len - have)
                chunks.append(self._rows(rec, e, start, end))
                have += end - start
                ended = bool(done_at[end - 1, e])
                truncated = ended and self.bootstrap_truncated and not any(
                    rec[f"{g.name}/terminated"][end - 1, e].any() for g in self.spec.groups)
                terminal = ended and not truncated
                if ended or have == self.max_len:
                    ep = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
                    ep["terminal"] = np.zeros(have, np.float32)
                    ep["terminal"][-1] = float(terminal)
                    for k in ["obs", "alive", "state"]:  # row `have`: what follows the segment
                        for g in (self.spec.groups if k != "state" else [None] if self.spec.state_dim else []):
                            name = f"{g.name}/{k}" if g is not None else k
                            if terminal:
                                last = np.zeros_like(rec[name][0, e])
                            elif truncated:  # the final observation; the agents it truncated
                                last = (rec[f"{g.name}/truncated"][end - 1, e] if k == "alive" else
                                        rec[f"{g.name}/final_obs" if g is not None else "final_state"][end - 1, e])
                            else:
                                last = rec[name][end, e]
                            ep[name] = np.concatenate([ep[name], last[None].astype(ep[name].dtype)])
                    for g in self.spec.groups:  # the next step's mask (unknown at the unroll's end or after a
                        k = f"{g.name}/action_mask"  # truncation: all available)
                        last = rec[k][end, e] if not ended and end < T else np.ones_like(rec[k][0, e])
                        ep[k] = np.concatenate([ep[k], last[None]])
                    out.append(ep)
                    chunks = self.partial[key] = []
                    have = 0
                start = end
        return out


class EpisodeReplay:
    """FIFO of episode segments padded to ``max_len`` (one ring of ``capacity``). The dual buffer of MAST
    is its newest ``recent`` entries: :meth:`sample` draws ``recent_fraction`` of a batch from them."""

    def __init__(self, spec: EnvSpec, capacity: int, max_len: int):
        self.spec, self.capacity, self.max_len = spec, capacity, max_len
        self.data: Dict[str, np.ndarray] = {}
        self.length = np.zeros(capacity, np.int64)
        self.size = self.pos = self.added = 0

    def add(self, ep: Dict[str, np.ndarray]) -> None:
        L = len(ep["reward"])
        if not self.data:
            shapes = {k: ((self.capacity, self.max_len + len(v) - L) + v.shape[1:], v.dtype) for k, v in ep.items()}
            need = sum(int(np.prod(sh)) * dt.itemsize for sh, dt in shapes.values())
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if need > 0.5 * ram:
                raise MemoryError(f"the episode replay needs {need / 2**30:.1f} GiB ({self.capacity} episodes x "
                                  f"{self.max_len} steps), more than half of this node's {ram / 2**30:.1f} GiB; "
                                  "lower algo.buffer_episodes or algo.episode_limit")
            self.data = {k: np.zeros(sh, dt) for k, (sh, dt) in shapes.items()}
        i = self.pos
        for k, v in ep.items():
            self.data[k][i] = 0
            self.data[k][i, :len(v)] = v
        self.length[i] = L
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.added += 1

    def sample(self, k: int, rng: np.random.Generator, recent: int = 0, recent_fraction: float = 0.0) -> np.ndarray:
        k_on = int(round(k * recent_fraction)) if recent > 0 else 0
        on = (self.pos - 1 - rng.integers(0, min(recent, self.size), k_on)) % self.capacity if k_on else np.zeros(0, np.int64)
        off = rng.integers(0, self.size, k - k_on)
        return np.concatenate([on, off]).astype(np.int64)

    def state_arrays(self, prefix: str = "local/replay/") -> Dict[str, np.ndarray]:
        """The filled rows (all of them once the ring is full), their lengths and the ring's counters."""
        n = self.capacity if self.size == self.capacity else self.size
        out = {f"{prefix}data/{k}": v[:n] for k, v in self.data.items()}
        out[f"{prefix}length"] = self.length[:n]
        out[f"{prefix}counters"] = np.array([self.size, self.pos, self.added], np.int64)
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray], prefix: str = "local/replay/") -> None:
        if f"{prefix}counters" not in arrays:
            return  # a checkpoint without the replay: it refills
        self.size, self.pos, self.added = (int(x) for x in arrays[f"{prefix}counters"])
        n = len(arrays[f"{prefix}length"])
        self.length[:] = 0
        self.length[:n] = arrays[f"{prefix}length"]
        self.data = {}
        for k, v in arrays.items():
            if k.startswith(f"{prefix}data/"):
                v = np.asarray(v)
                self.data[k[len(prefix) + 5:]] = full = np.zeros((self.capacity,) + v.shape[1:], v.dtype)
                full[:n] = v

    def batch(self, idx: np.ndarray, device) -> Dict[str, torch.Tensor]:
        """``[B, L(+1), ...]`` tensors trimmed to the longest sampled segment, plus ``valid [B, L]``."""
        L = int(self.length[idx].max())
        out = {}
        for k, v in self.data.items():
            extra = v.shape[1] - self.max_len
            out[k] = torch.from_numpy(v[idx, :L + extra]).to(device)
        out["valid"] = (torch.arange(L)[None, :] < torch.from_numpy(self.length[idx])[:, None]).float().to(device)
        return out


# --------------------------------------------------------------------------------------------------
# learner
# --------------------------------------------------------------------------------------------------
class QMIXLearner:
    """``init_seed`` (the same on every learner) draws the network and its masks; ``seed`` the replay sampling."""

    def __init__(self, spec: EnvSpec, cfg, device: torch.device, seed: int, init_seed: Optional[int] = None):
        for g in spec.groups:
            if not g.discrete:
                raise ValueError(f"{cfg.name} needs discrete actions; group {g.name!r} of {spec.name} is continuous")
        init_seed = seed if init_seed is None else init_seed
        torch.manual_seed(init_seed)
        self.spec, self.cfg, self.device = spec, cfg, device
        self.net = QNet(spec, cfg).to(device)
        self.masks = SparseMasks(self.net, cfg.sparsity, torch.Generator().manual_seed(init_seed)) if cfg.sparsity > 0 else None
        self.target = copy.deepcopy(self.net)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.params = list(self.net.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.replay = EpisodeReplay(spec, cfg.buffer_episodes, cfg.episode_limit)
        self.stitcher = EpisodeStitcher(spec, cfg.episode_limit, cfg.bootstrap_truncated)
        self.rng = np.random.default_rng(seed)
        # standardised team rewards: the std is floored at 0.01 (value targets: 0.1, which shrank LBF's sparse rewards,
        # std ~0.02, 5-fold against the Q-values' noise: it learned nothing); the floor caps the scale before rewards come
        self.reward_norm = ValueNorm(min_var=1e-4) if cfg.reward_norm else None
        self.steps = 0  # gradient steps taken
        self.flops = {"train": 0.0, "dense_grad": 0.0}
        # (name, active weights, outputs) of every linear layer; per-layer active counts never change
        counts = self.masks.active_counts() if self.masks is not None else {}
        self.linears = [(name, counts.get(f"{name}.weight", (m.weight.numel(),))[0], m.weight.numel(), m.out_features)
                        for name, m in self.net.named_modules() if isinstance(m, nn.Linear)]
        for name, m in self.net.named_modules():  # a GRU cell: two linear maps to 3 x hidden gate inputs
            if isinstance(m, nn.GRUCell):
                for w in ("weight_ih", "weight_hh"):
                    p = getattr(m, w)
                    self.linears.append((f"{name}.{w}", counts.get(f"{name}.{w}", (p.numel(),))[0], p.numel(), p.shape[0]))

    # ---- actors ------------------------------------------------------------------------------------
    def _policy_masks(self) -> List[torch.Tensor]:
        return [self.masks.masks[f"policies.{n}"] for n, _, m in sparse_layout(self.net.policies) if m]

    def policy_flat(self) -> np.ndarray:
        """What actors receive: every utility-net parameter, or (sparse) only the active weights."""
        if self.masks is None:
            return flat_params(self.net.policies.parameters())
        masks = iter(self._policy_masks())
        parts = [p.detach()[next(masks)] if m else p.detach().reshape(-1) for _, p, m in sparse_layout(self.net.policies)]
        return torch.cat(parts).cpu().numpy().astype(np.float32)

    @property
    def mask_version(self) -> Optional[int]:
        """Sparse networks: the version of the masks (changes with every topology update); dense: None."""
        return None if self.masks is None else self.masks.version

    def policy_masks(self) -> np.ndarray:
        """The utility nets' masks, packed bits (what actors get when :attr:`mask_version` changed)."""
        return pack_masks(self._policy_masks())

    def exploration(self, env_steps: int) -> float:
        c = self.cfg
        frac = min(1.0, env_steps / max(1, c.eps_anneal_steps))
        return c.eps_start + frac * (c.eps_end - c.eps_start)

    # ---- FLOPs (active weights only) ------------------------------------------------------------------
    def _linear_flops(self, prefix: str, rows: int, dense: bool = False) -> float:
        return sum(linear_flops(total if dense else active, out, rows)
                   for name, active, total, out in self.linears if name.startswith(prefix))

    def inference_flops(self) -> float:
        """Forward FLOPs of one env step on an actor (every agent's utility net)."""
        return sum(self._linear_flops(f"policies.{g.name}.", g.n) for g in self.spec.groups)

    def _step_flops(self, B: int, L: int, dense_grad: bool) -> tuple:
        """(FLOPs of one gradient step, extra FLOPs of its dense weight-gradient pass if any)."""
        def forward(dense=False):
            agents = sum(self._linear_flops(f"policies.{g.name}.", B * (L + 1) * g.n, dense) for g in self.spec.groups)
            return agents + self._linear_flops("mixer.", B * L, dense)

        mixing = self.net.mixer.mixing_flops(B * L) if self.net.mixer is not None else 0.0
        fwd = forward() + mixing
        # online forward + target forward + backward (~2x the online forward)
        extra = forward(dense=True) - forward() if dense_grad else 0.0  # the weight-gradient half, dense
        return 4 * fwd, extra

    # ---- update ----------------------------------------------------------------------------------------
    def loss(self, b: Dict[str, torch.Tensor], lam: float) -> tuple:
        c, spec = self.cfg, self.spec
        obs = {g.name: b[f"{g.name}/obs"] for g in spec.groups}  # [B, L+1, n, d]
        acts = {g.name: b[f"{g.name}/action"] for g in spec.groups}  # [B, L, n] (recurrent agents' inputs)
        q_all = self.net.utilities(obs, acts)
        with torch.no_grad():
            q_tgt = self.target.utilities(obs, acts)
        taken, boots = [], []
        for g in spec.groups:
            n = g.name
            alive = b[f"{n}/alive"].float()
            taken.append(q_all[n][:, :-1].gather(-1, b[f"{n}/action"].long().unsqueeze(-1)).squeeze(-1) * alive[:, :-1])
            mask = b[f"{n}/action_mask"][:, 1:].bool()
            with torch.no_grad():
                if c.mellowmax_omega > 0:
                    boot = soft_mellowmax(q_tgt[n][:, 1:], c.mellowmax_omega, c.mellowmax_alpha, mask)
                else:
                    best = q_all[n][:, 1:].detach().masked_fill(~mask, float("-inf")).argmax(-1, keepdim=True)
                    boot = q_tgt[n][:, 1:].gather(-1, best).squeeze(-1)
            boots.append(boot * alive[:, 1:])
        s = joint_input(spec, obs, b.get("state"))
        q_tot = self.net.mix(torch.cat(taken, -1), s[:, :-1])
        with torch.no_grad():
            boot_tot = self.target.mix(torch.cat(boots, -1), s[:, 1:])
            r = b["reward"] * c.reward_scale
            if self.reward_norm is not None:
                r = self.reward_norm.normalize(r)
            target = lambda_returns(r, b["terminal"], b["valid"], boot_tot, c.gamma, lam)
        valid = b["valid"]
        n_valid = valid.sum().clamp_min(1.0)
        td = (q_tot - target) * valid
        loss = (td ** 2).sum() / n_valid
        stats = {"loss": loss.item(), "q_taken": float((q_tot.detach() * valid).sum() / n_valid),
                 "target_mean": float((target * valid).sum() / n_valid), "td_abs": float(td.detach().abs().sum() / n_valid)}
        return loss, stats

    def update(self, unrolls: List[Record], reduce_grads: Callable = None, reduce_sums: Callable = None,
               env_steps: int = 0) -> Dict[str, float]:
        """Stitch the unrolls into the replay, then ``train_steps`` gradient steps on batches of episodes
        (every learner trains only once every learner holds ``learning_starts`` episodes)."""
        c = self.cfg
        new = [ep for u in unrolls for ep in self.stitcher.add(u, int(u["meta"][META_INDEX["actor"]]))]
        for ep in new:
            self.replay.add(ep)
        if self.reward_norm is not None:  # statistics from every learner's new episodes: identical everywhere
            r = torch.from_numpy(np.concatenate([ep["reward"] for ep in new] or [np.zeros(0, np.float32)]) * c.reward_scale)
            self.reward_norm.update(r, torch.ones_like(r), reduce_sums)
        not_ready = np.array([float(self.replay.size < max(1, c.learning_starts))])
        ready = (reduce_sums(not_ready) if reduce_sums is not None else not_ready)[0] == 0
        lam = c.td_lambda if env_steps >= c.td_lambda_after else 0.0
        totals = {"loss": 0.0, "q_taken": 0.0, "target_mean": 0.0, "td_abs": 0.0, "grad_norm": 0.0}
        flops = dense = 0.0
        n = 0
        topo = {"dropped": 0, "grown": 0}
        for _ in range(c.train_steps if ready else 0):
            b = self.replay.batch(self.replay.sample(c.batch_episodes, self.rng, c.recent_episodes, c.recent_fraction), self.device)
            loss, st = self.loss(b, lam)
            self.opt.zero_grad(set_to_none=False)
            loss.backward()
            if reduce_grads is not None:
                reduce_grads(self.params, float(b["valid"].sum()))
            self.steps += 1
            evolve = self.masks is not None and c.topology_every > 0 and self.steps % c.topology_every == 0 \
                and self.steps < c.topology_end
            grads = {k: self.net.get_parameter(k).grad.clone() for k in self.masks.masks} if evolve else None
            if self.masks is not None:
                self.masks.mask_grads(self.net)
            st["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm))
            self.opt.step()
            if self.masks is not None:
                if evolve:
                    got = self.masks.topology_update(self.net, grads, cosine_drop_fraction(self.steps, c.drop_fraction, c.topology_end))
                    for k in topo:
                        topo[k] += got[k]
                self.masks.apply(self.net)
                self.masks.apply_optimizer(self.opt, self.net)
            if c.target_tau > 0:
                with torch.no_grad():
                    for pt, p in zip(self.target.parameters(), self.params):
                        pt.lerp_(p, c.target_tau)
            elif self.steps % c.target_update == 0:
                self.target.load_state_dict(self.net.state_dict())
            if self.masks is not None and (evolve or c.target_tau > 0 or self.steps % c.target_update == 0):
                self.masks.apply(self.target)  # the target network always has the online network's masks
            f, d = self._step_flops(b["valid"].shape[0], b["valid"].shape[1], evolve)
            flops += f
            dense += d
            for k in totals:
                totals[k] += st[k]
            n += 1
        self.flops["train"] += flops + dense
        self.flops["dense_grad"] += dense
        out = {k: v / max(1, n) for k, v in totals.items()}
        out.update({"epsilon": self.exploration(env_steps), "td_lambda": lam, "train_steps": float(n),
                    "replay_episodes": float(self.replay.size), "flops/train_update": flops + dense,
                    "flops/train_total": self.flops["train"], "flops/inference_step": self.inference_flops(),
                    "sparsity": self.masks.sparsity if self.masks is not None else 0.0,  # measured, not assumed
                    "topology/dropped": float(topo["dropped"]), "topology/grown": float(topo["grown"])})
        return out

    # ---- checkpoint state --------------------------------------------------------------------------
    def state_arrays(self) -> Dict[str, np.ndarray]:
        out = torch_state_arrays(self.net, self.opt)
        if self.reward_norm is not None:
            out["reward_norm"] = np.array([self.reward_norm.mean, self.reward_norm.mean_sq, self.reward_norm.debias])
        out.update({f"target/{k}": v.detach().cpu().numpy().copy() for k, v in self.target.state_dict().items()})
        if self.masks is not None:
            out.update(self.masks.state_arrays())
        out["counters/qmix"] = np.array([self.steps, self.flops["train"], self.flops["dense_grad"]], np.float64)
        # this learner's own: its replay sampling generator and (algo.checkpoint_replay) its replay buffer
        out["rng/replay"] = np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), np.uint8).copy()
        if self.cfg.checkpoint_replay:
            out.update(self.replay.state_arrays())
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        load_torch_state_arrays(self.net, self.opt, arrays, self.device)
        if self.reward_norm is not None and "reward_norm" in arrays:
            self.reward_norm.mean, self.reward_norm.mean_sq, self.reward_norm.debias = (float(x) for x in arrays["reward_norm"])
        self.target.load_state_dict({k[len("target/"):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                     if k.startswith("target/")})
        if self.masks is not None:
            self.masks.load_state_arrays(arrays)
            for net in (self.net, self.target):
                self.masks.apply(net)
            self.masks.apply_optimizer(self.opt, self.net)
        if "rng/replay" in arrays:
            self.rng.bit_generator.state = json.loads(np.asarray(arrays["rng/replay"], np.uint8).tobytes().decode())
        self.replay.load_state_arrays(arrays)
        steps, train, dense = arrays["counters/qmix"]
        self.steps, self.flops = int(steps), {"train": float(train), "dense_grad": float(dense)}

    def checksum(self) -> float:
        return checksum(flat_params(self.params))
