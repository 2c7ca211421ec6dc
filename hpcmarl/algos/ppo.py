"""IPPO / MAPPO: GAE, the clipped-surrogate loss and the learner's compute (plain torch, no MPI).

The communication shell (``hpcmarl.roles.rollouts``) hands :meth:`PPOLearner.update` the unrolls its actors
sent and a ``reduce_grads`` callable that averages gradients across learners (Horovod or MPI).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Literal

import numpy as np
import torch

from hpcmarl.algos import ppo_fused
from hpcmarl.algos.normalize import ValueNorm, masked_mean, standardized
from hpcmarl.algos.ppo_recurrent import CriticCarry, chunk_dist, chunk_values, replay_critic, replay_policy
from hpcmarl.comm.spec import Record
from hpcmarl.envs import EnvSpec
from hpcmarl.models import ActorCritic, joint_input, load_torch_state_arrays, torch_state_arrays
from hpcmarl.typedconfig import check


@dataclass
class PPOConfig:
    """IPPO / MAPPO hyper-parameters (MAPPO-paper MPE settings, with lr and epochs tuned on simple_spread_v3)."""

    name: str = "mappo"  # ippo: per-agent critic on local observations; mappo: centralized critic
    unroll_length: int = 25  # T: steps per env copy in one unroll
    lr: float = 5e-4  # Adam learning rate
    lr_anneal_steps: int = 0  # > 0: the learning rate decays linearly from lr to 0 over this many env steps
    # (JaxMARL's ANNEAL_LR over its TOTAL_TIMESTEPS; set it to train.total_env_steps); 0: constant
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # lambda of generalised advantage estimation
    nstep: int = 0  # > 0: n-step advantages (the n-step return minus V; EPyMARL's MAPPO uses 5) instead of GAE
    clip: float = 0.2  # epsilon of the clipped surrogate: the ratio is clipped to [1 - clip, 1 + clip]
    decoupled_clip: bool = False  # clip around the learner's policy at the update's start (the proximal policy),
    # weighted by proximal / behaviour probability (decoupled PPO, Hilton et al. 2022): with actors.overlap the
    # unrolls' lag then clips no more than synchronous collection does; the same objective when synchronous
    epochs: int = 5  # passes over each update's unrolls
    minibatches: int = 1  # gradient steps per epoch (the unrolls split into this many minibatches)
    entropy_coef: float = 0.01  # weight of the entropy bonus in the loss
    value_coef: float = 1.0  # weight of the value loss in the loss
    value_clip: float = 0.2  # 0 disables value clipping
    max_grad_norm: float = 10.0  # gradients are clipped to this global L2 norm
    normalize_advantages: bool = True  # standardise the advantages of each group over the update's samples
    value_norm: bool = True  # critic predicts returns normalised by running statistics (MAPPO's ValueNorm)
    reward_norm: bool = False  # learn from rewards standardised by their running mean and std over all learners
    # (EPyMARL's standardise_rewards): rare sparse rewards (RWARE's deliveries) stand out of the zeros
    log_std_init: float = -0.5  # Gaussian heads (continuous actions): the initial log standard deviation of the
    # learned std (-0.5: 0.61; 0: 1.0)
    state_std: bool = False  # Gaussian heads: the std is an output of the policy network (softplus; BenchMARL's
    # MAPPO) instead of one learned parameter per action dimension
    squash_actions: bool = False  # Gaussian heads: the env gets tanh(sample) mapped into its action box (BenchMARL's
    # tanh-normal) instead of the sample clipped to the box
    hidden: int = 64  # units per hidden layer of the policy and critic MLPs
    layers: int = 2  # hidden layers of the policy and critic MLPs
    activation: Literal["tanh", "relu"] = "tanh"  # tanh | relu: after every hidden layer of the policy and critic MLPs
    # (algo.encoder=mlp; JaxMARL's SMAX baselines use relu)
    critic_input: Literal["obs", "state"] = "obs"  # mappo: "obs" = all agents' observations concatenated; "state" =
    # env.state()
    encoder: Literal["mlp", "conv"] = "mlp"  # mlp | conv: two 3x3 convolutions (32 channels, ReLU) over image
    # observations (H, W, C) before the MLP (policy; IPPO critic too), e.g. Connect Four's 6x7x2 board
    reward: Literal["auto", "individual", "team"] = "auto"  # individual: each agent learns from its own reward; team:
    # from its group's mean reward (MAPPO's shared reward); auto: team on cooperative envs, individual otherwise
    # (returns are logged as summed)
    bootstrap_truncated: bool = True  # a time-limit truncation bootstraps from V(final observation); false cuts
    # the return there as at a termination
    recurrent: bool = False  # rMAPPO/rIPPO: a GRU policy (MLP features -> GRU cell -> head), hidden state carried
    # through whole episodes (across unrolls; each unroll stores the state it started from)
    agent_id: bool = False  # each agent's one-hot index within its group appended to its observation (the policy's;
    # IPPO's critic too): agents sharing one network can then act differently (EPyMARL's obs_agent_id)
    critic_recurrent: bool = False  # mappo with recurrent: the centralized critic has a GRU too (JaxMARL's MAPPO);
    # the learner carries its hidden state per actor and env copy from one unroll to the next
    chunk_length: int = 0  # recurrent: the update replays the GRU over chunks of this many steps (0 = the whole
    # unroll), each starting from the hidden state the replay computed there; minibatches are sets of chunks

    @property
    def uses_state(self) -> bool:
        return centralized_critic(self) and self.critic_input == "state"

    def validate(self, cfg) -> None:
        """Checks beyond the types (called by :func:`hpcmarl.config.validate`)."""
        check(self.unroll_length >= 1, "algo.unroll_length", "must be >= 1")
        check(self.lr > 0, "algo.lr", "must be > 0")
        check(self.lr_anneal_steps == 0 or self.lr_anneal_steps >= cfg.train.total_env_steps, "algo.lr_anneal_steps",
              f"must be 0 (constant) or >= train.total_env_steps ({cfg.train.total_env_steps}): the env steps "
              f"after it would train at learning rate 0")
        check(0 < self.gamma <= 1, "algo.gamma", "must be in (0, 1]")
        check(0 <= self.gae_lambda <= 1, "algo.gae_lambda", "must be in [0, 1]")
        check(self.nstep >= 0, "algo.nstep", "must be >= 0 (0 = GAE)")
        check(self.clip > 0, "algo.clip", "must be > 0")
        check(self.epochs >= 1, "algo.epochs", "must be >= 1")
        check(self.minibatches >= 1, "algo.minibatches", "must be >= 1")
        check(self.minibatches <= self.unroll_length * cfg.env.num_envs, "algo.minibatches",
               f"must be <= unroll_length * env.num_envs = {self.unroll_length * cfg.env.num_envs}")
        check(math.isfinite(self.log_std_init), "algo.log_std_init", "must be a finite number")
        check(self.hidden >= 1, "algo.hidden", "must be >= 1")
        check(self.layers >= 1, "algo.layers", "must be >= 1")
        if self.activation != "tanh":
            check(self.encoder == "mlp", "algo.activation", "works with algo.encoder=mlp only (conv: ReLU)")
            check(not cfg.league.enabled, "algo.activation", "league pool members are rebuilt as tanh networks; "
                  "leave it at tanh in league mode")
        for key in ("state_std", "squash_actions"):
            check(not (getattr(self, key) and cfg.league.enabled), f"algo.{key}", "league pool members are rebuilt "
                  "with a learned log-std and clipped actions; leave it false in league mode")
        check(self.chunk_length >= 0, "algo.chunk_length", "must be >= 0 (0 = the whole unroll)")
        if self.agent_id:
            check(self.encoder == "mlp", "algo.agent_id", "works with algo.encoder=mlp only")
            check(not cfg.league.enabled, "algo.agent_id", "league pool members are played without agent ids; "
                  "leave it off in league mode")
        check(not (self.decoupled_clip and self.recurrent), "algo.decoupled_clip", "works with feed-forward "
              "policies only (algo.recurrent: false)")
        if self.recurrent:
            L = self.chunk_length or self.unroll_length
            check(self.unroll_length % L == 0, "algo.chunk_length",
                  f"must divide algo.unroll_length ({self.unroll_length})")
            check(self.minibatches <= (self.unroll_length // L) * cfg.env.num_envs, "algo.minibatches",
                  f"recurrent: must be <= chunks per unroll x env.num_envs = "
                  f"{(self.unroll_length // L) * cfg.env.num_envs}")
            check(self.encoder == "mlp", "algo.recurrent", "works with algo.encoder=mlp only")
            check(not cfg.league.enabled, "algo.recurrent", "league mode plays pool members without hidden states; "
                  "use a feed-forward policy there")
        if self.critic_recurrent:
            check(self.recurrent, "algo.critic_recurrent", "needs algo.recurrent: true (the update replays both GRUs "
                  "over the same chunks)")
            check(centralized_critic(self), "algo.critic_recurrent", f"is for a centralized critic (mappo), not "
                  f"{self.name}'s")


def centralized_critic(cfg) -> bool:
    """The registry entry of ``cfg.name`` has a centralized critic (MAPPO; IPPO's critics read local observations)."""
    from hpcmarl.algos import base

    return base.get(cfg.name).centralized_critic


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, gamma: float, lam: float,
        terminated: torch.Tensor = None, next_values: torch.Tensor = None, nstep: int = 0):
    """Generalised advantage estimation over the first (time) axis.

    ``rewards``/``dones``: ``[T, ...]``; ``values``: ``[T+1, ...]`` (the last row bootstraps).
    ``dones[t]`` = 1 when the agent's episode ended at step t: the trace is cut there. Without ``terminated``
    every end is terminal (no bootstrap); with it, an end that is not a termination (a time-limit truncation)
    bootstraps from ``next_values[t]`` (``[T, ...]``, the value of the final observation) instead of
    ``values[t+1]`` (the next episode's first observation). ``nstep`` > 0: n-step advantages instead (``lam`` is
    not used), the n-step return ``r_t + ... + gamma^(n-1) r_(t+n-1) + gamma^n V(s_(t+n))`` minus ``V(s_t)``, cut at
    episode ends and at the unroll's end as GAE is (EPyMARL's MAPPO, ``q_nstep``). Returns ``(advantages,
    returns)``, both ``[T, ...]``.
    """
    if terminated is None:
        terminated, next_values = dones, torch.zeros_like(rewards)
    cont = 1.0 - dones
    boot = values[1:] * cont + next_values * (dones - terminated)  # done - terminated = truncated only
    delta = rewards + gamma * boot - values[:-1]
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    if nstep > 0:  # the sum of n discounted TD errors: sum_k gamma^k delta_(t+k), stopping at an episode's end
        weight = torch.ones_like(rewards)
        for k in range(min(nstep, T)):
            adv[:T - k] += weight[:T - k] * delta[k:]
            weight[:T - k - 1] *= gamma * cont[k:T - 1]
        return adv, adv + values[:-1]
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        last = delta[t] + gamma * lam * cont[t] * last
        adv[t] = last
    return adv, adv + values[:-1]


def ppo_loss(new_logp, old_logp, adv, new_v, old_v, returns, entropy, mask, clip: float, value_clip: float,
             entropy_coef: float, value_coef: float, prox_logp=None):
    """Clipped-surrogate PPO loss averaged over rows where ``mask`` is 1. Returns ``(loss, stats)``. ``old_logp``:
    the behaviour policy's log-probs; ``prox_logp`` (decoupled PPO): the proximal policy's, the clip is then applied
    to ``new / prox`` and weighted by ``prox / old``; ``approx_kl`` and ``clip_fraction`` are measured against the
    policy that is clipped around."""
    ratio, prox_logp, prox_ratio, weight = ppo_fused.ratios(new_logp, old_logp, prox_logp)
    pg = -torch.min(ratio * adv, torch.clamp(prox_ratio, 1 - clip, 1 + clip) * weight * adv)
    v_err = (new_v - returns) ** 2
    if value_clip > 0:
        v_clipped = old_v + torch.clamp(new_v - old_v, -value_clip, value_clip)
        v_err = torch.max(v_err, (v_clipped - returns) ** 2)
    pg_loss = masked_mean(pg, mask)
    v_loss = 0.5 * masked_mean(v_err, mask)
    ent = masked_mean(entropy, mask)
    loss = pg_loss + value_coef * v_loss - entropy_coef * ent
    with torch.no_grad():
        log_ratio = new_logp - prox_logp
        stats = {
            "policy_loss": pg_loss.item(),
            "value_loss": v_loss.item(),
            "entropy": ent.item(),
            "approx_kl": masked_mean((prox_ratio - 1) - log_ratio, mask).item(),
            "clip_fraction": masked_mean(((prox_ratio - 1).abs() > clip).float(), mask).item(),
        }
    return loss, stats


def batch_from_unrolls(spec: EnvSpec, unrolls: List[Record], device) -> Dict[str, torch.Tensor]:
    """Concatenate unrolls along the env axis and move them to the device (with the final observations of truncated
    episodes, ``<group>/final_obs`` and ``final_state``)."""
    cat = lambda key, dtype: torch.from_numpy(np.concatenate([u[key] for u in unrolls], axis=1)).to(device, dtype)
    b = {}
    for g in spec.groups:
        n = g.name
        b[f"{n}/obs"] = cat(f"{n}/obs", torch.float32)
        b[f"{n}/alive"] = cat(f"{n}/alive", torch.float32)
        b[f"{n}/action"] = cat(f"{n}/action", torch.long if g.discrete else torch.float32)
        b[f"{n}/logp"] = cat(f"{n}/logp", torch.float32)
        b[f"{n}/reward"] = cat(f"{n}/reward", torch.float32)
        b[f"{n}/terminated"] = cat(f"{n}/terminated", torch.float32)
        b[f"{n}/done"] = torch.maximum(b[f"{n}/terminated"], cat(f"{n}/truncated", torch.float32))
        if g.discrete:
            b[f"{n}/action_mask"] = cat(f"{n}/action_mask", torch.bool)
        b[f"{n}/final_obs"] = cat(f"{n}/final_obs", torch.float32)
        if f"{n}/h0" in unrolls[0].views:  # recurrent policies: [E, n, H] per unroll
            b[f"{n}/h0"] = torch.from_numpy(np.concatenate([u[f"{n}/h0"] for u in unrolls], axis=0)).to(device)
    if spec.state_dim:
        b["state"] = cat("state", torch.float32)
        b["final_state"] = cat("final_state", torch.float32)
    b["env_done"] = cat("env_done", torch.float32)
    return b


def team_reward(reward: torch.Tensor, acting: torch.Tensor) -> torch.Tensor:
    """Every agent's reward replaced by the mean over the group's agents that acted (``[..., n]`` in and out)."""
    mean = (reward * acting).sum(-1, keepdim=True) / acting.sum(-1, keepdim=True).clamp_min(1.0)
    return mean.expand_as(reward) * (acting > 0)


class PPOLearner:
    """IPPO/MAPPO (:class:`hpcmarl.algos.base.Learner`)."""

    def __init__(self, spec: EnvSpec, cfg: PPOConfig, device: torch.device, seed: int, init_seed: int = 0):
        torch.manual_seed(seed)
        self.spec, self.cfg, self.device = spec, cfg, device
        self.model = ActorCritic(spec, centralized_critic(cfg), cfg.hidden, cfg.layers, cfg.encoder,
                                 cfg.recurrent, cfg.agent_id, cfg.log_std_init, cfg.activation,
                                 cfg.critic_recurrent, "state" if cfg.state_std else "log").to(device)
        self.params = list(self.model.parameters())
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5, fused=True)
        self.gen = torch.Generator().manual_seed(seed)
        self.value_norm = {g.name: ValueNorm() for g in spec.groups} if cfg.value_norm else None
        self.reward_norm = {g.name: ValueNorm(min_var=1e-4) for g in spec.groups} if cfg.reward_norm else None
        self.fused = ppo_fused.supported(self.model, cfg)  # the gradient step written out (no autograd)
        self.grad_step = ppo_fused.step  # compiled by compile_update
        self.critic_carry = CriticCarry([g.name for g in spec.groups], cfg.hidden, device) \
            if cfg.critic_recurrent else None

    def batch_from_unrolls(self, unrolls: List[Record]) -> Dict[str, torch.Tensor]:
        return batch_from_unrolls(self.spec, unrolls, self.device)

    @torch.no_grad()
    def advantages(self, b: Dict[str, torch.Tensor], reduce_sums: Callable = None) -> None:
        c, groups = self.cfg, self.spec.groups
        final = None  # values of the final observations of truncated episodes, [T, B, n]
        if c.critic_recurrent:  # and the critic's hidden state before every step, b["<group>/critic_h"]
            values, final, starts = replay_critic(self.model, b, c.bootstrap_truncated)
            b.update({f"{n}/critic_h": h for n, h in starts.items()})
        else:
            values = self.model.values({g.name: b[f"{g.name}/obs"] for g in groups}, b.get("state"))  # [T+1, B, n]
            if c.bootstrap_truncated:
                final = self.model.values({g.name: b[f"{g.name}/final_obs"] for g in groups}, b.get("final_state"))
        denorm = lambda n, v: self.value_norm[n].denormalize(v) if self.value_norm else v
        for g in groups:
            n = g.name
            mask = b[f"{n}/alive"][:-1]
            reward = team_reward(b[f"{n}/reward"], mask) if c.reward == "team" else b[f"{n}/reward"]
            if self.reward_norm:  # the agents that acted: a dead agent's zeros are not rewards
                self.reward_norm[n].update(reward, mask, reduce_sums)
                reward = self.reward_norm[n].normalize(reward) * mask
            adv, ret = gae(reward, denorm(n, values[n]), b[f"{n}/done"], c.gamma, c.gae_lambda,
                           *((b[f"{n}/terminated"], denorm(n, final[n])) if final is not None else (None, None)),
                           nstep=c.nstep)
            if self.value_norm:
                self.value_norm[n].update(ret, mask, reduce_sums)
                ret = self.value_norm[n].normalize(ret)
            if self.cfg.normalize_advantages:
                adv = standardized(adv, mask)
            b[f"{n}/adv"], b[f"{n}/ret"], b[f"{n}/value"] = adv, ret, values[n][:-1]

    # ---- update ------------------------------------------------------------------------------
    def update(self, unrolls: List[Record], reduce_grads: Callable = None, reduce_sums: Callable = None,
               env_steps: int = 0) -> Dict[str, float]:
        """PPO epochs over the unrolls; ``reduce_grads(params, weight)`` averages gradients across
        learners, ``reduce_sums(array)`` sums small statistics across learners; ``env_steps``: the run's env steps
        so far (``algo.lr_anneal_steps`` reads it)."""
        c = self.cfg
        if c.lr_anneal_steps:
            for group in self.opt.param_groups:
                group["lr"] = c.lr * max(0.0, 1.0 - env_steps / c.lr_anneal_steps)
        b = self.batch_from_unrolls(unrolls)
        if c.critic_recurrent:
            sources = CriticCarry.sources(unrolls)
            b.update({f"{n}/critic_h0": h for n, h in self.critic_carry.starts(sources).items()})
        self.advantages(b, reduce_sums)
        T, B = b[f"{self.spec.groups[0].name}/reward"].shape[:2]
        if c.critic_recurrent:  # where each env copy's next unroll starts
            self.critic_carry.keep(sources, {g.name: b[f"{g.name}/critic_h"][T] for g in self.spec.groups})
        n_rows = T * B
        # rows of a minibatch: single steps (t, env), or for recurrent policies chunks (c, env) of L steps
        L = (c.chunk_length or T) if c.recurrent else 1
        starts = replay_policy(self.model, b) if c.recurrent else None
        if c.decoupled_clip:
            self.proximal_logp(b)
        steps = torch.arange(L, device=self.device)[:, None]
        totals: Dict[str, float] = {}
        n_mb = 0
        # one learner's compiled step clips and takes Adam's step too (fused there); more learners average their
        # gradients in between
        whole = self.grad_step is not ppo_fused.step and reduce_grads is None
        for _ in range(c.epochs):
            perm = torch.randperm(n_rows // L, generator=self.gen)
            for chunk in perm.tensor_split(c.minibatches):  # exactly `minibatches` pieces on every learner
                chunk = chunk.to(self.device)
                idx_t, idx_b = (chunk // B) * L, chunk % B
                if c.recurrent:  # [L, M]: the chunk's steps, one column per chunk
                    idx_t, idx_b = idx_t[None, :] + steps, idx_b[None, :].expand(L, -1)
                if self.fused:
                    mb_stats = self.fused_grads(b, idx_t, idx_b, whole)
                else:
                    obs_mb = {g.name: b[f"{g.name}/obs"][idx_t, idx_b] for g in self.spec.groups}
                    state_mb = b["state"][idx_t, idx_b] if self.spec.state_dim else None
                    mb_stats = self.autograd_grads(b, idx_t, idx_b, obs_mb, state_mb, starts)
                if not whole:
                    if reduce_grads is not None:
                        reduce_grads(self.params, float(n_rows))
                    mb_stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, c.max_grad_norm))
                    self.opt.step()
                for k, v in mb_stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                n_mb += 1
        return {k: v / n_mb for k, v in totals.items()}

    def autograd_grads(self, b, idx_t, idx_b, obs_mb, state_mb, starts) -> Dict[str, float]:
        """The loss of one minibatch (rows ``idx_t``, ``idx_b`` of ``b``) backpropagated by autograd into the
        parameters' ``.grad``; returns its statistics."""
        c = self.cfg
        if c.critic_recurrent:
            x, done = joint_input(self.spec, obs_mb, state_mb), b["env_done"][idx_t, idx_b]
            values = {n: chunk_values(critic, x, b[f"{n}/critic_h"][idx_t[0], idx_b[0]], done)
                      for n, critic in self.model.critics.items()}
        else:
            values = self.model.values(obs_mb, state_mb)
        mb_stats: Dict[str, float] = {}
        loss = 0.0
        for g in self.spec.groups:
            n = g.name
            sel = lambda key: b[f"{n}/{key}"][idx_t, idx_b]
            mask = sel("alive")
            amask = sel("action_mask") if g.discrete else None
            if c.recurrent:
                dist = chunk_dist(self.model.policies[n], obs_mb[n], amask, starts[n][idx_t[0], idx_b[0]],
                                  b["env_done"][idx_t, idx_b])
            else:
                dist = self.model.policies[n].dist(obs_mb[n], amask)
            new_logp = dist.log_prob(sel("action"))
            l, st = ppo_loss(new_logp, sel("logp"), sel("adv"), values[n], sel("value"), sel("ret"),
                             dist.entropy(), mask, c.clip, c.value_clip, c.entropy_coef, c.value_coef,
                             sel("logp_prox") if c.decoupled_clip else None)
            loss = loss + l
            for k, v in st.items():
                mb_stats[f"{n}/{k}"] = v
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        return mb_stats

    @torch.no_grad()
    def proximal_logp(self, b: Dict[str, torch.Tensor]) -> None:
        """``b["<group>/logp_prox"]`` ``[T, B, n]``: the log-probs of the unrolls' actions under the current
        (feed-forward) policies, before the update's first step (``algo.decoupled_clip``)."""
        for g in self.spec.groups:
            n = g.name
            T, B = b[f"{n}/logp"].shape[:2]
            rows = lambda x: x[:T].reshape(T * B, *x.shape[2:])
            dist = self.model.policies[n].dist(rows(b[f"{n}/obs"]), rows(b[f"{n}/action_mask"]) if g.discrete
                                               else None)
            b[f"{n}/logp_prox"] = dist.log_prob(rows(b[f"{n}/action"])).reshape(T, B, -1)

    def fused_grads(self, b, idx_t, idx_b, whole: bool = False) -> Dict[str, float]:
        """As :meth:`autograd_grads`, with the gradient step written out (:mod:`hpcmarl.algos.ppo_fused`); with
        ``whole`` the step clips the gradients (``grad_norm`` among the statistics) and takes Adam's step too."""
        grads, stats = self.grad_step(self.model, self.cfg, b, idx_t, idx_b, *(
            (self.cfg.max_grad_norm, ppo_fused.adam_args(self.opt, self.params)) if whole else ()))
        for p in self.params:
            p.grad = grads[p]
        return dict(zip(stats, torch.stack(list(stats.values())).tolist()))

    def compile_update(self) -> bool:
        """Compile the written-out gradient step (``learner.compile``); False where this learner has none."""
        if self.fused:
            from hpcmarl.compiled import compiled

            self.grad_step = compiled(ppo_fused.step, "PPO's gradient step")
        return self.fused

    def policy_flat(self) -> np.ndarray:
        from hpcmarl.models import flat_params

        return flat_params(self.model.policy_parameters())

    # ---- checkpoint state ----------------------------------------------------------------------
    def _running_stats(self):
        """(checkpoint key, ValueNorm) of each group's value and reward normalisers that are on."""
        for kind, norms in (("value_norm", self.value_norm), ("reward_norm", self.reward_norm)):
            yield from ((f"{kind}/{g}", vn) for g, vn in (norms or {}).items())

    def state_arrays(self) -> Dict[str, np.ndarray]:
        """Parameters and optimizer state as plain arrays (no pickle)."""
        out = torch_state_arrays(self.model, self.opt)
        out["rng/learner_gen"] = self.gen.get_state().numpy()
        out.update({key: vn.to_array() for key, vn in self._running_stats()})
        return out

    def load_state_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        load_torch_state_arrays(self.model, self.opt, arrays, self.device)
        for key, vn in self._running_stats():
            if key in arrays:
                vn.load_array(arrays[key])
        if "rng/learner_gen" in arrays:
            self.gen.set_state(torch.from_numpy(np.array(arrays["rng/learner_gen"], dtype=np.uint8)))
