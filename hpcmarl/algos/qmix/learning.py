"""QMIX / VDN, learner side: the target math (Soft Mellowmax, TD(lambda) returns) and :class:`QMIXLearner`
(replay, gradient steps, MAST topology updates, target network, FLOPs accounting, checkpoint state)."""
from __future__ import annotations

import copy
import json
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from hpcmarl.algos.normalize import ValueNorm
from hpcmarl.algos.offpolicy import EpisodeReplay, EpisodeStitcher
from hpcmarl.algos.qmix.networks import QNet, pack_masks, sparse_layout
from hpcmarl.algos.sparse import SparseMasks, cosine_drop_fraction, linear_flops
from hpcmarl.comm.spec import META_INDEX, Record
from hpcmarl.envs import EnvSpec
from hpcmarl.models import checksum, flat_params, joint_input, load_torch_state_arrays, torch_state_arrays


# --------------------------------------------------------------------------------------------------
# targets (pure functions)
# --------------------------------------------------------------------------------------------------
def soft_mellowmax(q: torch.Tensor, omega: float, alpha: float = 0.0,
                   mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SM_{omega,alpha}(q) = [LSE((alpha + omega) q) - LSE(alpha q)] / omega over the last axis, with
    unavailable actions (``mask`` False) left out of both sums. Rows without any available action give 0."""
    if mask is None:
        mask = torch.ones_like(q, dtype=torch.bool)
    neg = torch.tensor(float("-inf"), dtype=q.dtype, device=q.device)
    hi = torch.where(mask, (alpha + omega) * q, neg)
    lo = torch.where(mask, alpha * q, neg)
    out = (torch.logsumexp(hi, -1) - torch.logsumexp(lo, -1)) / omega
    return torch.where(mask.any(-1), out, torch.zeros_like(out))


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


def mix_rows(net, qs: torch.Tensor, s: torch.Tensor, rows: Optional[torch.Tensor]) -> torch.Tensor:
    """``net.mix`` of ``qs [B, L, N]`` and ``s [B, L, S]`` on the ``rows [B, L]`` that are set (None: all);
    0 elsewhere."""
    if rows is None:
        return net.mix(qs, s)
    return qs.new_zeros(rows.shape).index_put((rows,), net.mix(qs[rows], s[rows]))


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
        self.masks = (SparseMasks(self.net, cfg.sparsity, torch.Generator().manual_seed(init_seed))
                      if cfg.sparsity > 0 else None)
        self.target = copy.deepcopy(self.net)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.params = list(self.net.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, fused=True)
        self.replay = EpisodeReplay(spec, cfg.buffer_episodes, cfg.episode_limit)
        self.stitcher = EpisodeStitcher(spec, cfg.episode_limit, cfg.bootstrap_truncated)
        self.rng = np.random.default_rng(seed)
        # standardised team rewards: the std is floored at 0.01 (value targets: 0.1, which shrank LBF's sparse
        # rewards, std ~0.02, 5-fold against the Q-values' noise: it learned nothing); the floor caps the scale before
        # rewards come
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
                    self.linears.append((f"{name}.{w}", counts.get(f"{name}.{w}", (p.numel(),))[0], p.numel(),
                                         p.shape[0]))

    # ---- actors ------------------------------------------------------------------------------------
    def _policy_masks(self) -> List[torch.Tensor]:
        return [self.masks.masks[f"policies.{n}"] for n, _, m in sparse_layout(self.net.policies) if m]

    def policy_flat(self) -> np.ndarray:
        """What actors receive: every utility-net parameter, or (sparse) only the active weights."""
        if self.masks is None:
            return flat_params(self.net.policies.parameters())
        masks = iter(self._policy_masks())
        parts = [p.detach()[next(masks)] if m else p.detach().reshape(-1)
                 for _, p, m in sparse_layout(self.net.policies)]
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

    def _step_flops(self, valid: torch.Tensor, dense_grad: bool) -> tuple:
        """(FLOPs of one gradient step on a batch with ``valid [B, L]``, extra FLOPs of its dense weight-gradient
        pass if any). The rows computed: recurrent agents step the obs rows of running episodes only
        (``length + 1`` each), feed-forward ones every padded row; the mixer mixes the real steps."""
        B, L = valid.shape
        steps = int(valid.sum())
        agent_rows = steps + B if self.net.recurrent else B * (L + 1)

        def forward(dense=False):
            agents = sum(self._linear_flops(f"policies.{g.name}.", agent_rows * g.n, dense) for g in self.spec.groups)
            return agents + self._linear_flops("mixer.", steps, dense)

        mixing = self.net.mixer.mixing_flops(steps) if self.net.mixer is not None else 0.0
        fwd = forward() + mixing
        # online forward + target forward + backward (~2x the online forward)
        extra = forward(dense=True) - forward() if dense_grad else 0.0  # the weight-gradient half, dense
        return 4 * fwd, extra

    # ---- update ----------------------------------------------------------------------------------------
    def loss(self, b: Dict[str, torch.Tensor], lam: float) -> tuple:
        c, spec = self.cfg, self.spec
        obs = {g.name: b[f"{g.name}/obs"] for g in spec.groups}  # [B, L+1, n, d]
        acts = {g.name: b[f"{g.name}/action"] for g in spec.groups}  # [B, L, n] (recurrent agents' inputs)
        valid = b["valid"]
        lengths = valid.sum(1).long()
        q_all = self.net.utilities(obs, acts, lengths)
        with torch.no_grad():
            q_tgt = self.target.utilities(obs, acts, lengths)
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
        rows = None if bool(valid.all()) else valid > 0  # padded steps: no mixing (their values are unused)
        q_tot = mix_rows(self.net, torch.cat(taken, -1), s[:, :-1], rows)
        with torch.no_grad():
            boot_tot = mix_rows(self.target, torch.cat(boots, -1), s[:, 1:], rows)
            r = b["reward"] * c.reward_scale
            if self.reward_norm is not None:
                r = self.reward_norm.normalize(r) if c.reward_center else self.reward_norm.scale(r)
            target = lambda_returns(r, b["terminal"], valid, boot_tot, c.gamma, lam)
        n_valid = valid.sum().clamp_min(1.0)
        td = (q_tot - target) * valid
        loss = (td ** 2).sum() / n_valid
        stats = {"loss": loss.item(), "q_taken": float((q_tot.detach() * valid).sum() / n_valid),
                 "target_mean": float((target * valid).sum() / n_valid),
                 "td_abs": float(td.detach().abs().sum() / n_valid)}
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
            r = torch.from_numpy(np.concatenate([ep["reward"] for ep in new] or [np.zeros(0, np.float32)])
                                 * c.reward_scale)
            self.reward_norm.update(r, torch.ones_like(r), reduce_sums)
        not_ready = np.array([float(self.replay.size < max(1, c.learning_starts))])
        ready = (reduce_sums(not_ready) if reduce_sums is not None else not_ready)[0] == 0
        lam = c.td_lambda if env_steps >= c.td_lambda_after else 0.0
        totals = {"loss": 0.0, "q_taken": 0.0, "target_mean": 0.0, "td_abs": 0.0, "grad_norm": 0.0}
        flops = dense = 0.0
        n = 0
        topo = {"dropped": 0, "grown": 0}
        for _ in range(c.train_steps if ready else 0):
            b = self.replay.batch(self.replay.sample(c.batch_episodes, self.rng, c.recent_episodes, c.recent_fraction),
                                  self.device)
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
                    got = self.masks.topology_update(
                        self.net, grads, cosine_drop_fraction(self.steps, c.drop_fraction, c.topology_end))
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
            f, d = self._step_flops(b["valid"], evolve)
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
            out["reward_norm"] = self.reward_norm.to_array()
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
            self.reward_norm.load_array(arrays["reward_norm"])
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
