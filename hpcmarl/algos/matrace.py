"""MA-Trace: multi-agent V-trace with the joint importance ratio and a centralized critic
(docs/algorithms/matrace.md). Pure torch, no MPI.

Per policy group, per step t of an unroll (time-major ``[T, B]``):

    log rho_t = sum_i [log pi(a_t^i | o_t^i) - log mu(a_t^i | o_t^i)]     (joint ratio over the group's
                                                                          agents that act; others count 1)
    rho_t = min(rho_bar, e^{log rho_t}),  c_t = lam min(c_bar, e^{log rho_t})
    delta_t = rho_t (r_t + gamma_t V(s_{t+1}) - V(s_t)),  gamma_t = gamma (1 - done_t)
    v_t = V(s_t) + delta_t + gamma_t c_t (v_{t+1} - V(s_{t+1})),   v_T = V(s_T)  (bootstrap)
    A_t = min(rho_pg_bar, e^{log rho_t}) (r_t + gamma_t v_{t+1} - V(s_t))

r_t is the team reward (the group's rewards summed) and V one team value per step. ``correction``:
``joint`` (MA-Trace), ``per_agent`` (DecMA-Trace: each agent its own ratio and its own value on its
observation) or ``none`` (no importance weights: plain n-step actor-critic on lagged data). ``agent_returns``: each
agent its own return and value V^i, with its trace cut where it dies (MAPPO's per-agent returns): it gets the team
reward while it acts, and the same ratio.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional

import torch

from hpcmarl.algos.normalize import standardized
from hpcmarl.typedconfig import check


class VTrace(NamedTuple):
    vs: torch.Tensor  # V-trace value targets v_t           [T, B]
    pg_advantages: torch.Tensor  # A_t                      [T, B]
    rho: torch.Tensor  # clipped rho_t                       [T, B]
    c: torch.Tensor  # clipped trace coefficients c_t       [T, B]


@dataclass
class MATraceConfig:
    """MA-Trace (docs/algorithms/matrace.md): actors never wait for the learner; V-trace with the joint
    importance ratio and a centralized team critic corrects the policy lag."""

    name: str = "matrace"  # the algorithm (see `correction` for its variants)
    correction: Literal["joint", "per_agent", "none"] = "joint"  # joint (MA-Trace) | per_agent (DecMA-Trace: own ratio
    # + own critic) | none
    unroll_length: int = 25  # T: steps per env copy in one unroll
    lr: float = 1e-3  # Adam learning rate
    gamma: float = 0.99  # discount factor
    lam: float = 1.0  # trace lambda
    rho_bar: float = 1.0  # truncation of rho in the TD error (must be >= c_bar)
    c_bar: float = 1.0  # truncation of the trace coefficients
    rho_pg_bar: float = 1.0  # truncation of rho in the policy gradient
    baseline_cost: float = 0.5  # weight of the value (baseline) loss in the loss
    agent_returns: bool = False  # each agent's return ends at its death (MAPPO's per-agent returns): it gets the team
    # reward while it acts and a value of its own (the centralized critic one output per agent); false: one team return
    normalize_advantages: bool = False  # standardise the policy-gradient advantages over the batch's acting steps
    # (as PPO's; not in the MA-Trace paper): the entropy bonus and lr act on one scale whatever the rewards' scale
    reward_scale: float = 1.0  # the team reward is multiplied by this for learning (returns are logged unscaled)
    entropy_coef: float = 0.01  # (initial) entropy coefficient
    entropy_adaptive: bool = True  # SEED RL's Lagrangian coefficient, driven towards entropy_target
    entropy_target: float = 1e-5  # entropy_adaptive: the entropy the coefficient drives the policy towards
    entropy_speed: float = 10.0  # entropy_adaptive: coefficient = exp(entropy_speed * psi), psi trained
    max_grad_norm: float = 40.0  # gradients are clipped to this global L2 norm
    epochs: int = 1  # gradient steps per batch (1 = IMPALA)
    batch_unrolls: int = 1  # unrolls per learner update (from the learner's queue)
    queue_size: int = 4  # unrolls a learner holds waiting to be trained on
    queue_full: Literal["wait", "drop"] = "wait"  # wait: actors block on their send (back-pressure) | drop: the newest
    # unroll is dropped
    push_every: int = 1  # hand out new weights every this many updates (> 1 injects policy lag)
    hidden: int = 64  # units per hidden layer of the policy and critic MLPs
    layers: int = 2  # hidden layers of the policy and critic MLPs
    agent_id: bool = False  # each agent's one-hot index within its group appended to its policy's observation:
    # agents sharing one network can then act differently (as PPO's algo.agent_id)
    critic_input: Literal["obs", "state"] = "obs"  # "obs" = all agents' observations concatenated; "state" =
    # env.state()
    bootstrap_truncated: bool = True  # a time-limit truncation bootstraps from V(final observation); false cuts
    # the return there as at a termination

    @property
    def uses_state(self) -> bool:
        return self.critic_input == "state"

    def validate(self, cfg) -> None:
        """Checks beyond the types (called by :func:`hpcmarl.config.validate`)."""
        for k in ("unroll_length", "epochs", "batch_unrolls", "queue_size", "push_every", "hidden", "layers"):
            check(getattr(self, k) >= 1, f"algo.{k}", "must be >= 1")
        check(self.lr > 0, "algo.lr", "must be > 0")
        check(0 < self.gamma <= 1, "algo.gamma", "must be in (0, 1]")
        check(0 <= self.lam <= 1, "algo.lam", "must be in [0, 1]")
        check(self.c_bar > 0 and self.rho_pg_bar > 0, "algo.c_bar", "truncation levels must be > 0")
        check(self.rho_bar >= self.c_bar, "algo.rho_bar", f"must be >= algo.c_bar ({self.c_bar})")
        check(self.entropy_coef > 0, "algo.entropy_coef", "must be > 0")
        check(self.queue_size >= self.batch_unrolls, "algo.queue_size",
              f"must be >= algo.batch_unrolls ({self.batch_unrolls})")


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


# --------------------------------------------------------------------------------------------------
# learner (torch, no MPI)
# --------------------------------------------------------------------------------------------------
class TeamActorCritic(torch.nn.Module):
    """Policies shared within each group; per group either one team critic on the joint input
    (concatenated observations or the env state; one output per agent with ``agent_returns``) or, for DecMA-Trace, a
    per-agent critic on the agent's own observation; plus the adaptive entropy coefficient's parameter psi."""

    def __init__(self, spec, cfg):
        super().__init__()
        from hpcmarl.models import GroupPolicy, mlp

        self.spec = spec
        self.per_agent = cfg.correction == "per_agent"
        self.agent_values = cfg.agent_returns and not self.per_agent  # the centralized critic: a value per agent
        self.policies = torch.nn.ModuleDict({g.name: GroupPolicy(g, cfg.hidden, cfg.layers, agent_id=cfg.agent_id)
                                              for g in spec.groups})
        joint_in = spec.state_dim or spec.joint_obs_dim
        self.critics = torch.nn.ModuleDict({g.name: mlp(g.obs_dim if self.per_agent else joint_in, cfg.hidden,
                                                        cfg.layers, g.n if self.agent_values else 1)
                                            for g in spec.groups})
        import math

        self.entropy_psi = torch.nn.Parameter(torch.tensor(math.log(cfg.entropy_coef) / cfg.entropy_speed))

    def policy_parameters(self):
        return list(self.policies.parameters())

    def values(self, b, name: str) -> torch.Tensor:
        """Team values ``[T+1, B]`` (per-agent values ``[T+1, B, n]`` for DecMA-Trace or with ``agent_returns``)."""
        if self.per_agent:
            return self.critics[name](b[f"{name}/obs"]).squeeze(-1)
        from hpcmarl.models import joint_input

        x = joint_input(self.spec, {g.name: b[f"{g.name}/obs"] for g in self.spec.groups}, b.get("state"))
        out = self.critics[name](x)
        return out if self.agent_values else out.squeeze(-1)


class MATraceLearner:
    """One gradient step (per epoch) of MA-Trace on a batch of unrolls; ``reduce_grads(params, weight)``
    averages gradients across learners."""

    def __init__(self, spec, cfg, device: torch.device, seed: int, init_seed: int = 0):
        torch.manual_seed(seed)
        self.spec, self.cfg, self.device = spec, cfg, device
        self.model = TeamActorCritic(spec, cfg).to(device)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5, fused=True)

    @torch.no_grad()
    def truncation_bootstrap(self, b, name: str) -> torch.Tensor:
        """``gamma * V(final observation)`` at steps where the env copy's episode was truncated (no agent of the
        group terminated), else 0: added to the reward of a step whose discount is 0, it makes V-trace bootstrap
        there without carrying the trace into the next episode. Team ``[T, B]`` (per-agent ``[T, B, n]``; with
        ``agent_returns`` at each agent's own truncation)."""
        fb = {f"{g.name}/obs": b[f"{g.name}/final_obs"] for g in self.spec.groups}
        if "final_state" in b:
            fb["state"] = b["final_state"]
        final = self.model.values(fb, name)
        if self.cfg.agent_returns:
            return self.cfg.gamma * final * (b[f"{name}/done"] - b[f"{name}/terminated"])  # truncated, not terminated
        trunc = b["env_done"] * (1.0 - b[f"{name}/terminated"].amax(-1))  # [T, B]
        return self.cfg.gamma * final * (trunc.unsqueeze(-1) if final.dim() == 3 else trunc)

    def loss(self, b) -> tuple:
        c = self.cfg
        discounts = c.gamma * (1.0 - b["env_done"])  # [T, B]
        total, stats = 0.0, {}
        ent_sum, ent_n = 0.0, 0.0
        beta = torch.exp(c.entropy_speed * self.model.entropy_psi).detach()
        for g in self.spec.groups:
            n = g.name
            acting = b[f"{n}/alive"][:-1]  # [T, B, n]
            dist = self.model.policies[n].dist(b[f"{n}/obs"][:-1], b[f"{n}/action_mask"] if g.discrete else None)
            logp = dist.log_prob(b[f"{n}/action"])  # [T, B, n]
            team_r = b[f"{n}/reward"].sum(-1) * c.reward_scale  # [T, B]
            values = self.model.values(b, n)
            boot = self.truncation_bootstrap(b, n) if c.bootstrap_truncated else 0.0
            log_rho = (logp.detach() - b[f"{n}/logp"]) * acting
            if c.correction == "joint":
                log_rho = log_rho.sum(-1)
            elif c.correction == "none":
                log_rho = torch.zeros_like(log_rho.sum(-1))
            if values.dim() == 3:  # a return per agent: DecMA-Trace (own ratio, own value) or agent_returns
                nag = acting.shape[-1]
                each = lambda x: x.unsqueeze(-1).expand_as(acting)
                if c.agent_returns:  # the team reward while the agent acts; its trace ends at its death
                    rew = team_r.unsqueeze(-1) * acting
                    disc = c.gamma * (1.0 - torch.maximum(b[f"{n}/done"], each(b["env_done"])))
                else:
                    rew, disc = each(team_r), each(discounts)
                flat = lambda x: x.reshape(x.shape[0], -1)
                vt = vtrace(flat(log_rho if log_rho.dim() == 3 else each(log_rho)), flat(disc), flat(rew + boot),
                            flat(values[:-1]).detach(), values[-1].reshape(-1).detach(), c.rho_bar, c.c_bar,
                            c.rho_pg_bar, c.lam)
                shape = acting.shape
                vs, adv = vt.vs.reshape(shape), vt.pg_advantages.reshape(shape)
                if c.normalize_advantages:
                    adv = standardized(adv, acting)
                pg = -(logp * adv * acting).sum() / acting[..., 0].numel()
                vl = 0.5 * (((vs - values[:-1]) ** 2) * acting).sum() / max(1.0, float(acting.sum())) * nag
            else:
                vt = vtrace(log_rho, discounts, team_r + boot, values[:-1].detach(), values[-1].detach(),
                            c.rho_bar, c.c_bar, c.rho_pg_bar, c.lam)
                adv = standardized(vt.pg_advantages, acting.amax(-1)) if c.normalize_advantages else vt.pg_advantages
                pg = -((logp * acting).sum(-1) * adv).mean()
                vl = 0.5 * ((vt.vs - values[:-1]) ** 2).mean()
            ent = (dist.entropy() * acting).sum(-1).mean()  # summed over agents, mean over steps
            total = total + pg + c.baseline_cost * vl - beta * ent
            ent_sum, ent_n = ent_sum + ent, ent_n + 1
            stats.update({f"{n}/policy_loss": pg.item(), f"{n}/value_loss": vl.item(), f"{n}/entropy": ent.item(),
                          f"{n}/rho_mean": vt.rho.mean().item(), f"{n}/c_mean": vt.c.mean().item()})
        if c.entropy_adaptive:
            total = total + adaptive_entropy_loss(self.model.entropy_psi, ent_sum / ent_n, c.entropy_target,
                                                  c.entropy_speed)[1]
        stats["entropy_coef"] = beta.item()
        return total, stats

    def update(self, unrolls, reduce_grads=None, reduce_sums=None, env_steps: int = 0) -> dict:
        from hpcmarl.algos.ppo import batch_from_unrolls

        b = batch_from_unrolls(self.spec, unrolls, self.device)
        n_rows = float(b["env_done"].numel())
        out = {}
        for _ in range(self.cfg.epochs):
            loss, stats = self.loss(b)
            self.opt.zero_grad(set_to_none=False)
            loss.backward()
            if reduce_grads is not None:
                reduce_grads(self.params, n_rows)
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
            self.opt.step()
            out = stats
        return out

    def policy_flat(self):
        from hpcmarl.models import flat_params

        return flat_params(self.model.policy_parameters())

    def state_arrays(self):
        from hpcmarl.models import torch_state_arrays

        return torch_state_arrays(self.model, self.opt)

    def load_state_arrays(self, arrays) -> None:
        from hpcmarl.models import load_torch_state_arrays

        load_torch_state_arrays(self.model, self.opt, arrays, self.device)
