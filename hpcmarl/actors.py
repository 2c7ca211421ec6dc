"""Building an actor's work without MPI: its seed, env copies (with its variant), sampler and trajectory writer
(the rollout flows), trajectory collector and gradient records (the gradient flow). The MPI role shells drive
these; serial mode and the sizing model (:mod:`hpcmarl.sizing`) use them in-process. What an actor is built from
is an :class:`ActorPlan` of plain values, made once by its role shell."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from hpcmarl import storage
from hpcmarl.algos.base import make_inference, rnn_hidden, uses_state
from hpcmarl.algos.nigt import trajectory_gradients
from hpcmarl.comm.spec import GRAD_INDEX, unroll_spec
from hpcmarl.config import Config, delay_factors
from hpcmarl.envs import BatchedEnv, make_batched_env
from hpcmarl.sampler import Sampler, TrajectoryCollector

G = GRAD_INDEX


def actor_seed(base: int, actor_index: int, start_update: int) -> int:
    return (base * 1_000_003 + actor_index * 10_007 + start_update * 101) % (2 ** 31)


@dataclass(frozen=True)
class ActorPlan:
    """One actor's facts: the config, its ``index`` among the run's ``actors`` (``actors.delay`` spreads its factors
    over them), the update the run starts at (0: fresh; else a resume: seeds and trajectory files continue), the run
    directory (its trajectories go below it; ``None``: none written) and, in league mode, its learner ``group``."""

    cfg: Config
    index: int = 0
    actors: int = 1
    start_update: int = 0
    run_dir: Optional[str] = None
    group: int = 0

    @property
    def seed(self) -> int:
        return actor_seed(self.cfg.seed, self.index, self.start_update)

    @property
    def step_delay_s(self) -> float:
        """The seconds this actor sleeps after every env step: ``actors.step_delay_s`` x its factor h_i from
        ``actors.delay``."""
        n = max(1, self.actors, self.index + 1)
        return self.cfg.actors.step_delay_s * delay_factors(self.cfg.actors.delay, n)[self.index]

    @property
    def traj_path(self) -> Optional[str]:
        if not self.cfg.output.trajectories or self.run_dir is None:
            return None
        return os.path.join(self.run_dir, "trajectories", f"actor-{self.index:05d}.h5")


def make_venv(cfg: Config, actor_index: int, seed: int) -> BatchedEnv:
    """The actor's env copies (PettingZoo copies, or a batched simulator's for a ``jaxmarl:``/``vmas:`` name), with
    its variant from ``actors.variants`` (obs/reward scale, env kwargs)."""
    variants = cfg.actors.variants
    v = variants[actor_index % len(variants)] if variants else {}
    scale = float(v.get("obs_scale", 1.0))
    return make_batched_env(cfg.env.name, cfg.env.num_envs, seed, {**cfg.env.kwargs, **v.get("env_kwargs", {})},
                            cfg.policy_map, with_state=uses_state(cfg.algo),
                            obs_transform=(lambda o: o * scale) if scale != 1.0 else None,
                            reward_scale=float(v.get("reward_scale", 1.0)), on_error=cfg.actors.env_errors,
                            max_errors=cfg.actors.max_env_errors, parts=cfg.env.parts)


def make_sampler(plan: ActorPlan, league=None):
    """Env copies + inference policy + trajectory writer (``None`` without ``plan.traj_path``) of one actor (no
    MPI). ``league``: a callable ``(policy) -> ActorLeague`` in league mode, whose member bank plays the seats the
    policy does not."""
    cfg, seed, start = plan.cfg, plan.seed, plan.start_update
    torch.manual_seed(seed)
    if league is not None:
        from hpcmarl.league.seats import SeatVecEnv, league_spec

        spec = league_spec(cfg, plan.group)
        policy = make_inference(spec, cfg.algo)
        client = league(policy)
        g = cfg.league.groups[client.gi]
        venv = SeatVecEnv(cfg.env.name, cfg.env.num_envs, seed, cfg.env.kwargs, cfg.policy_map, g.policy_group, g.name,
                          cfg.league.seats, client.choose, client.bank, on_error=cfg.actors.env_errors,
                          max_errors=cfg.actors.max_env_errors)
    else:
        venv = make_venv(cfg, plan.index, seed)
        policy = make_inference(venv.spec, cfg.algo)
    uspec = unroll_spec(venv.spec, cfg.algo.unroll_length, cfg.env.num_envs, rnn_hidden(cfg.algo), cfg.env.parts)
    sampler = Sampler(venv, policy, uspec, cfg.algo.unroll_length, plan.step_delay_s)
    traj = None
    if plan.traj_path is not None:
        traj = storage.TrajectoryWriter(plan.traj_path, venv.spec, cfg.env.num_envs, cfg.output.trajectory_fraction,
                                        seed, resume=start > 0, flush_s=cfg.output.flush_s,
                                        attrs={"actor": plan.index, "env": cfg.env.name},
                                        reserve_mb=cfg.output.min_free_mb,
                                        resume_update=start if start > 0 else None)
    return sampler, traj


def make_actor(plan: ActorPlan) -> TrajectoryCollector:
    """Environment copies (with this actor's variant), policy and trajectory collector (no MPI)."""
    cfg = plan.cfg
    torch.manual_seed(plan.seed)
    venv = make_venv(cfg, plan.index, plan.seed)
    policy = make_inference(venv.spec, cfg.algo)
    return TrajectoryCollector(venv, policy, cfg.algo.horizon, plan.step_delay_s)


class GradientMaker:
    """Turns collected trajectories into gradient records (shared by the MPI actor and serial mode)."""

    def __init__(self, plan: ActorPlan, stop_requested: Callable[[], bool]):
        self.seed, self.gamma, self.idx = plan.cfg.seed, plan.cfg.algo.gamma, plan.index
        self.stop_requested = stop_requested  # a signal asked the run to stop (told the learner in every message)
        self.collector = make_actor(plan)
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
        seed = (self.seed * 1_000_003 + self.idx * 7_919 + rnd * 104_729 + self.k * 613) % (2 ** 31)
        out = self.collector.collect(abandon, seed)
        if out is None:
            self.abandoned += self.collector.venv.num_envs
            return None
        traj, returns, lengths = out
        grads = trajectory_gradients(self.policy.policies, self.spec, traj, self.gamma)
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
        m[G["stop_requested"]] = float(self.stop_requested())
        venv = self.collector.venv
        m[G["env_errors"]], self.errors = venv.errors - self.errors, venv.errors
        m[len(G):] = returns
