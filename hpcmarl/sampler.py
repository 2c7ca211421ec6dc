"""Actor-side compute: step the vectorised env with the policy and fill unroll records (no MPI)."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from hpcmarl.comm.spec import EPISODE_INDEX, EPISODE_RETURNS, EPISODE_WON, META_INDEX, Record, RecordSpec
from hpcmarl.envs.batched import BatchedEnv
from hpcmarl.models import Inference


def sleep_for(seconds: float) -> None:
    """Sleep ``seconds`` to a deadline (woken early, it sleeps again; ~0.1 ms late on an idle Linux): the injected
    costs ``actors.step_delay_s`` and ``learner.update_delay_s``."""
    if seconds <= 0:
        return
    end = time.perf_counter() + seconds
    while True:
        left = end - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left)


class Sampler:
    """The rollout flows' (synchronous and asynchronous) actor work: ``collect`` fills an unroll record.

    ``delay_s`` (``actors.step_delay_s`` x this actor's factor h_i from ``actors.delay``) is slept after every env
    step (one step of all the env copies), as the gradient flow's :class:`TrajectoryCollector` does; the sleep stands
    for env compute and is counted as env time (``t_env``: ``time/actor_env``, and in ``t_collect``)."""

    def __init__(self, venv: BatchedEnv, policy: Inference, spec: RecordSpec, T: int, delay_s: float = 0.0):
        self.venv, self.policy, self.spec, self.T, self.delay_s = venv, policy, spec, T, delay_s
        self.groups = venv.spec.groups
        self.finished = []  # the episodes the last collect() finished (EpisodeStat rows)
        self._errors = 0  # the env's error count already reported
        venv.reset()

    def collect(self, rec: Record) -> Record:
        """Fill ``rec`` with T steps of every env copy using the policy's current weights.

        The copies are stepped in the env's parts in turn (:attr:`~hpcmarl.envs.jaxmarl.JaxMarlEnv.parts`): part
        ``k``'s policy step and the start of its env step (:meth:`~hpcmarl.envs.jaxmarl.JaxMarlEnv.step_async`) come
        before the wait for part ``k + 1``'s env step, so with two parts of an env that steps asynchronously
        (``env.parts``) one part's env step runs while the policy acts for the other (double-buffered sampling).
        Every step of every part is taken within the collect: the next one starts from finished steps."""
        venv, T, policy, groups = self.venv, self.T, self.policy, self.groups
        parts = getattr(venv, "parts", None) or [slice(0, venv.num_envs)]  # an env without parts: all its copies
        whole = len(parts) == 1  # then the step is venv.step
        t0 = time.perf_counter()
        n_ep = 0
        eps = rec["episodes"]
        env_done = rec["env_done"]
        env_done[:] = 0
        timers = [0.0, 0.0]  # inference, env (waiting for it)
        clock = time.perf_counter
        self.finished = []
        delay = self.delay_s / len(parts)  # per env step of all the copies
        recurrent = getattr(policy, "recurrent", False)
        if recurrent:  # the hidden state the unroll starts from (the learner replays the GRU from it)
            for g in groups:
                rec[f"{g.name}/h0"][:] = policy.hidden(g.name, venv.obs[g.name].shape[:-1]).numpy()
        taken: list = [None] * len(parts)

        def launch(k: int, t: int) -> None:  # record part k's inputs at step t, act, start its env step
            sl = parts[k]
            for g in groups:
                rec[f"{g.name}/obs"][t, sl] = venv.obs[g.name][sl]
                rec[f"{g.name}/alive"][t, sl] = venv.alive[g.name][sl]
                if g.discrete:
                    rec[f"{g.name}/action_mask"][t, sl] = venv.action_mask[g.name][sl]
            if venv.state is not None:
                rec["state"][t, sl] = venv.state[sl]
            c0 = clock()
            if whole:
                taken[k] = policy.act(venv.obs, venv.action_mask)
                timers[0] += clock() - c0
                return
            taken[k] = policy.act({n: o[sl] for n, o in venv.obs.items()},
                                  {n: m[sl] for n, m in venv.action_mask.items()}, rows=sl)
            c1 = clock()
            venv.step_async(k, policy.to_env(taken[k][0]))
            timers[0] += c1 - c0
            timers[1] += clock() - c1

        for k in range(len(parts)):
            launch(k, 0)
        for t in range(T):
            for k, sl in enumerate(parts):
                c0 = clock()
                rew, term, trunc, finished = venv.step(policy.to_env(taken[k][0])) if whole else venv.step_wait(k)
                sleep_for(delay)
                timers[1] += clock() - c0
                actions, logps = taken[k]
                for g in groups:
                    n = g.name
                    rec[f"{n}/action"][t, sl] = actions[n]
                    rec[f"{n}/logp"][t, sl] = logps[n]
                    rec[f"{n}/reward"][t, sl] = rew[n]
                    rec[f"{n}/terminated"][t, sl] = term[n]
                    rec[f"{n}/truncated"][t, sl] = trunc[n]
                    rec[f"{n}/final_obs"][t, sl] = venv.final_obs[n][sl]
                if venv.final_state is not None:
                    rec["final_state"][t, sl] = venv.final_state[sl]
                self.finished += finished
                if recurrent:
                    policy.episodes_ended([ep.env for ep in finished])
                for ep in finished:
                    env_done[t, ep.env] = 1
                    eps[n_ep, EPISODE_INDEX["env"]] = ep.env
                    eps[n_ep, EPISODE_INDEX["length"]] = ep.length
                    eps[n_ep, EPISODE_RETURNS] = [ep.returns[g.name] for g in groups]
                    eps[n_ep, EPISODE_WON] = ep.won
                    n_ep += 1
                if t + 1 < T:
                    launch(k, t + 1)
        t_infer, t_env = timers
        for g in self.groups:
            rec[f"{g.name}/obs"][T] = venv.obs[g.name]
            rec[f"{g.name}/alive"][T] = venv.alive[g.name]
        if venv.state is not None:
            rec["state"][T] = venv.state
        m = rec["meta"]
        m[META_INDEX["version"]] = self.policy.version
        m[META_INDEX["n_episodes"]] = n_ep
        m[META_INDEX["env_steps"]] = T * venv.num_envs
        m[META_INDEX["param_checksum"]] = self.policy.checksum
        m[META_INDEX["env_errors"]] = getattr(venv, "errors", 0) - self._errors
        self._errors = getattr(venv, "errors", 0)
        rec["rng"][:] = torch.get_rng_state().numpy()
        if hasattr(venv, "seeds_state"):
            rec["env_seeds"][:] = venv.seeds_state()
        m[META_INDEX["t_collect"]] = time.perf_counter() - t0
        m[META_INDEX["t_env"]] = t_env
        m[META_INDEX["t_infer"]] = t_infer
        return rec

    def in_flight(self) -> np.ndarray:
        """Length so far of each env copy's unfinished episode (discarded if the run stops now)."""
        return self.venv.episode_lengths()


class TrajectoryCollector:
    """Gradient flow: roll out one trajectory in each env copy from a fresh reset with the policy's
    current weights, for ``horizon`` steps (0 = until every copy's episode ends).

    ``delay_s`` is slept after every env step (the actor's artificial compute time h_i); while
    sleeping and between steps ``abandon()`` is polled, and when it returns True the trajectories in
    flight are given up (a new round started) and :meth:`collect` returns None."""

    MAX_STEPS = 100_000

    def __init__(self, venv: BatchedEnv, policy: Inference, horizon: int, delay_s: float = 0.0):
        self.venv, self.policy, self.horizon, self.delay_s = venv, policy, horizon, delay_s
        self.groups = venv.spec.groups
        self.first = True
        self.steps = 0  # env steps taken by trajectories (finished or abandoned) since the counter was read

    def _sleep(self, abandon) -> bool:
        end = time.perf_counter() + self.delay_s
        while True:
            if abandon():
                return True
            left = end - time.perf_counter()
            if left <= 0:
                return False
            time.sleep(min(left, 0.001))

    def collect(self, abandon, seed: Optional[int] = None):
        """One batch of trajectories; with ``seed`` the env copies are reset with ``seed + i`` and the
        action sampling is seeded too, so the same seed gives the same trajectories at the same weights."""
        venv = self.venv
        if seed is not None:
            venv.seed = seed
            torch.manual_seed(seed)
        venv.reset(reseed=self.first or seed is not None)
        self.first = False
        E = venv.num_envs
        active = np.ones(E, bool)
        returns = np.zeros((E, len(self.groups)))
        lengths = np.zeros(E, np.int64)
        buf = {k: [] for g in self.groups for k in (f"{g.name}/obs", f"{g.name}/action", f"{g.name}/reward",
                                                   f"{g.name}/valid", f"{g.name}/action_mask")}
        t = 0
        while active.any() and (self.horizon == 0 or t < self.horizon):
            if t >= self.MAX_STEPS:
                raise RuntimeError(f"{venv.spec.name}: an episode ran {t} steps; "
                                   "set algo.horizon to truncate trajectories")
            for g in self.groups:
                buf[f"{g.name}/obs"].append(venv.obs[g.name].copy())
                buf[f"{g.name}/valid"].append(venv.alive[g.name] & active[:, None])
                buf[f"{g.name}/action_mask"].append(venv.action_mask[g.name].copy())
            actions, _ = self.policy.act(venv.obs, venv.action_mask)
            rew, _, _, finished = venv.step(self.policy.to_env(actions))
            for gi, g in enumerate(self.groups):
                buf[f"{g.name}/action"].append(actions[g.name])
                buf[f"{g.name}/reward"].append(rew[g.name])
                returns[:, gi] += np.where(active, (rew[g.name] * buf[f"{g.name}/valid"][-1]).sum(1), 0.0)
            lengths += active
            self.steps += int(active.sum())
            for i in [ep.env for ep in finished] + venv.failed:  # a copy that raised: its trajectory ends there
                active[i] = False
            t += 1
            if (self._sleep(abandon) if self.delay_s > 0 else abandon()):
                return None
        traj = {k: torch.from_numpy(np.stack(v)) for k, v in buf.items()}
        return traj, returns, lengths
