"""Building an actor's work without MPI: its seed, env copies (with its variant), sampler and trajectory writer
(the rollout flows), trajectory collector and gradient records (the gradient flow). The MPI role shells drive
these; serial mode and the sizing model (:mod:`hpcmarl.sizing`) use them in-process. ``ctx`` is anything with
the Context's ``cfg``, ``start_update`` (and, where used, ``layout``, ``rank``, ``run_dir``, ``stop_requested``)."""
from __future__ import annotations

import os
import time
from typing import Optional

import torch

from hpcmarl import storage
from hpcmarl.algos.base import rnn_hidden, uses_state
from hpcmarl.algos.nigt import trajectory_gradients
from hpcmarl.comm.spec import GRAD_INDEX, unroll_spec
from hpcmarl.config import delay_factors
from hpcmarl.envs import BatchedEnv, make_batched_env
from hpcmarl.models import make_inference
from hpcmarl.sampler import Sampler, TrajectoryCollector

G = GRAD_INDEX


def actor_seed(base: int, actor_index: int, start_update: int) -> int:
    return (base * 1_000_003 + actor_index * 10_007 + start_update * 101) % (2 ** 31)


def make_venv(ctx, actor_index: int, seed: int) -> BatchedEnv:
    """The actor's env copies (PettingZoo copies, or a batched simulator's for a ``jaxmarl:``/``vmas:`` name), with
    its variant from ``actors.variants`` (obs/reward scale, env kwargs)."""
    cfg = ctx.cfg
    variants = cfg.actors.variants
    v = variants[actor_index % len(variants)] if variants else {}
    scale = float(v.get("obs_scale", 1.0))
    return make_batched_env(cfg.env.name, cfg.env.num_envs, seed, {**cfg.env.kwargs, **v.get("env_kwargs", {})},
                            cfg.policy_map, with_state=uses_state(cfg.algo),
                            obs_transform=(lambda o: o * scale) if scale != 1.0 else None,
                            reward_scale=float(v.get("reward_scale", 1.0)), on_error=cfg.actors.env_errors,
                            max_errors=cfg.actors.max_env_errors, parts=cfg.env.parts)


def make_sampler(ctx, actor_index: int, traj_path: Optional[str], league=None):
    """Env copies + inference policy + trajectory writer of one actor (no MPI). ``league``: a callable
    ``(policy) -> ActorLeague`` in league mode, whose member bank plays the seats the policy does not."""
    cfg = ctx.cfg
    seed = actor_seed(cfg.seed, actor_index, ctx.start_update)
    torch.manual_seed(seed)
    if league is not None:
        from hpcmarl.league.seats import SeatVecEnv, league_spec

        spec = league_spec(cfg, ctx.layout.group_of(ctx.rank))
        policy = make_inference(spec, cfg.algo)
        client = league(policy)
        g = cfg.league.groups[client.gi]
        venv = SeatVecEnv(cfg.env.name, cfg.env.num_envs, seed, cfg.env.kwargs, cfg.policy_map, g.policy_group, g.name,
                          cfg.league.seats, client.choose, client.bank, on_error=cfg.actors.env_errors,
                          max_errors=cfg.actors.max_env_errors)
    else:
        venv = make_venv(ctx, actor_index, seed)
        policy = make_inference(venv.spec, cfg.algo)
    uspec = unroll_spec(venv.spec, cfg.algo.unroll_length, cfg.env.num_envs, rnn_hidden(cfg.algo), cfg.env.parts)
    sampler = Sampler(venv, policy, uspec, cfg.algo.unroll_length, step_delay(ctx, actor_index))
    traj = None
    if traj_path is not None:
        traj = storage.TrajectoryWriter(traj_path, venv.spec, cfg.env.num_envs, cfg.output.trajectory_fraction,
                                        seed, resume=ctx.start_update > 0, flush_s=cfg.output.flush_s,
                                        attrs={"actor": actor_index, "env": cfg.env.name},
                                        reserve_mb=cfg.output.min_free_mb,
                                        resume_update=ctx.start_update if ctx.start_update > 0 else None)
    return sampler, traj


def traj_path(ctx, actor_index: int) -> Optional[str]:
    if not ctx.cfg.output.trajectories:
        return None
    return os.path.join(ctx.run_dir, "trajectories", f"actor-{actor_index:05d}.h5")


def step_delay(ctx, actor_index: int) -> float:
    """The seconds actor ``actor_index`` sleeps after every env step: ``actors.step_delay_s`` x its factor h_i from
    ``actors.delay`` (over the layout's actors; one actor where ``ctx`` has no layout: serial mode, the profile)."""
    cfg = ctx.cfg
    layout = getattr(ctx, "layout", None)
    n_actors = max(1, getattr(layout, "actors", 1) or 1, actor_index + 1)
    return cfg.actors.step_delay_s * delay_factors(cfg.actors.delay, n_actors)[actor_index]


def make_actor(ctx, actor_index: int):
    """Environment copies (with this actor's variant), policy and trajectory collector (no MPI)."""
    cfg = ctx.cfg
    torch.manual_seed(actor_seed(cfg.seed, actor_index, ctx.start_update))
    venv = make_venv(ctx, actor_index, actor_seed(cfg.seed, actor_index, ctx.start_update))
    policy = make_inference(venv.spec, cfg.algo)
    return TrajectoryCollector(venv, policy, cfg.algo.horizon, step_delay(ctx, actor_index))


class GradientMaker:
    """Turns collected trajectories into gradient records (shared by the MPI actor and serial mode)."""

    def __init__(self, ctx, actor_index: int):
        self.ctx, self.idx = ctx, actor_index
        self.collector = make_actor(ctx, actor_index)
        self.policy = self.collector.policy
        self.spec = self.policy.spec
        self.abandoned = 0
        self.errors = 0  # the env's error count already reported
        self.round, self.k = -1, 0

    def gradients(self, abandon):
        """``[(returns per group, length, seconds, gradient)]`` for one batch of trajectories (one per env
        copy) at the loaded weights, or None if ``abandon()`` fired first."""
        t0 = time.perf_counter()
        # common random numbers: trajectory batch k of round t on actor i is seeded from (seed, i, t, k),
        # so runs that differ only in aggregation or timing see the same environments and action noise
        rnd = self.policy.version
        self.k = self.k + 1 if rnd == self.round else 0
        self.round = rnd
        seed = (self.ctx.cfg.seed * 1_000_003 + self.idx * 7_919 + rnd * 104_729 + self.k * 613) % (2 ** 31)
        out = self.collector.collect(abandon, seed)
        if out is None:
            self.abandoned += self.collector.venv.num_envs
            return None
        traj, returns, lengths = out
        grads = trajectory_gradients(self.policy.policies, self.spec, traj, self.ctx.cfg.algo.gamma)
        dt = (time.perf_counter() - t0) / len(grads)
        return [(returns[e], int(lengths[e]), dt, grads[e]) for e in range(len(grads))]

    def fill(self, rec, item) -> None:
        returns, length, dt, grad = item
        self._fill_meta(rec["meta"], length, dt, returns)
        rec["grad"][:] = grad

    def fill_alive(self, rec) -> None:
        """A sign of life: the bookkeeping of a gradient message with ``length`` 0 and no gradient."""
        self._fill_meta(rec["meta"], 0, 0.0, 0.0)

    def _fill_meta(self, m, length, dt, returns) -> None:
        m[G["round"]] = self.policy.version
        m[G["actor"]] = self.idx
        m[G["env_steps"]] = self.collector.steps  # since the previous message, abandoned work included
        self.collector.steps = 0
        m[G["length"]] = length
        m[G["abandoned"]] = self.abandoned
        self.abandoned = 0
        m[G["t_traj"]] = dt
        m[G["stop_requested"]] = float(self.ctx.stop_requested())
        venv = self.collector.venv
        m[G["env_errors"]], self.errors = venv.errors - self.errors, venv.errors
        m[len(G):] = returns
