"""Gymnasium multi-agent suites as PettingZoo parallel environments (no MPI).

Level-Based Foraging (``lbforaging``) and the Multi-Robot Warehouse (``rware``) step all agents at once with tuple
observations, action tuples, a list of rewards and one ``done`` flag that also fires at their own time limit. The
adapter names the agents ``agent_0 … agent_{n-1}``, keeps the time limit itself (``max_cycles``: EPyMARL's benchmark
uses 50 for LBF and 500 for RWARE) and reports reaching it as a *truncation*, so learners can bootstrap there; the
game's own end (all food collected) is a termination.

``scale_obs`` (default false) divides every observation entry with finite bounds by its largest magnitude, so it lies
in [-1, 1]: LBF reports grid coordinates and levels as raw integers (up to the field size), and QMIX's hypernetwork
mixer, fed the concatenated observations, inflated its Q-values ~100-fold on them (a run learned nothing), so QMIX
on LBF needs it; MAPPO learns far faster per sample on the raw integers (0.96 vs 0.03 at 250k env steps;
docs/environments/index.md#level-based-foraging).
Entries without finite bounds (RWARE's) are left as they are.

    env.name: lbf     env.kwargs: {task: Foraging-8x8-2p-2f-coop-v3, max_cycles: 50}
    env.name: rware   env.kwargs: {task: rware-tiny-2ag-v2, max_cycles: 500}
"""
from __future__ import annotations

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv


def obs_scale(space):
    """Per-entry factors mapping a Box's finite bounds into [-1, 1] (1 where a bound is infinite or both are 0);
    None when there is nothing to scale."""
    if not isinstance(space, gymnasium.spaces.Box):
        return None
    big = np.maximum(np.abs(space.low), np.abs(space.high)).astype(np.float64)
    ok = np.isfinite(big) & (big > 0)
    k = np.where(ok, 1.0 / np.where(ok, big, 1.0), 1.0)
    return None if np.all(k == 1.0) else k.astype(np.float32)


class GymMultiAgent(ParallelEnv):
    """One Gymnasium multi-agent env (tuple spaces) as a PettingZoo parallel env with a truncating time limit."""

    def __init__(self, env, name: str, max_cycles: int, scale_obs: bool = False):
        self.env, self.max_cycles = env, int(max_cycles)
        n = len(env.observation_space)
        self.possible_agents = [f"agent_{i}" for i in range(n)]
        self.agents = []
        self._scale = [obs_scale(s) if scale_obs else None for s in env.observation_space]
        spaces = [s if k is None else gymnasium.spaces.Box(s.low * k, s.high * k, s.shape, np.float32)
                  for s, k in zip(env.observation_space, self._scale)]
        self._obs_spaces = dict(zip(self.possible_agents, spaces))
        self._act_spaces = dict(zip(self.possible_agents, env.action_space))
        self.metadata = {"name": name, "render_modes": []}
        self.t = 0

    def observation_space(self, agent):
        return self._obs_spaces[agent]

    def action_space(self, agent):
        return self._act_spaces[agent]

    def _dict(self, values):
        return {a: v for a, v in zip(self.possible_agents, values)}

    def _obs(self, obs):
        return self._dict(np.asarray(o, np.float32) * (1 if k is None else k) for o, k in zip(obs, self._scale))

    def reset(self, seed=None, options=None):
        obs, _ = self.env.reset(seed=seed)
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs(obs), {a: {} for a in self.agents}

    def step(self, actions):
        obs, rewards, done, _, _ = self.env.step(tuple(int(actions[a]) for a in self.possible_agents))
        self.t += 1
        trunc = not done and self.t >= self.max_cycles
        out = (self._obs(obs), self._dict(float(r) for r in rewards),
               {a: bool(done) for a in self.agents}, {a: trunc for a in self.agents}, {a: {} for a in self.agents})
        if done or trunc:
            self.agents = []
        return out

    def close(self):
        self.env.close()


def _check_task(task, env: str) -> None:
    """Gymnasium imports ``module`` for an id ``module:EnvId``: such a ``task`` must have been named by the person
    (:mod:`hpcmarl.trust`: their config file or ``--env-import``); a task read from a file is refused before
    ``gym.make`` sees it."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a gymnasium id (a string), got {task!r}")
    if ":" in task:
        from hpcmarl import trust

        trust.require(task, "gym", env)


def lbf(task: str = "Foraging-8x8-2p-2f-coop-v3", max_cycles: int = 50, scale_obs: bool = False,
        **kwargs) -> GymMultiAgent:
    """Level-Based Foraging (``pip install lbforaging``); ``kwargs`` go to the LBF env (e.g. ``sight``). A
    module-qualified ``task`` (``module:EnvId``) imports that module: only when the person named it."""
    _check_task(task, "lbf")
    import gymnasium as gym
    import lbforaging  # noqa: F401  (registers the Foraging-* ids)

    env = gym.make(task, disable_env_checker=True, **kwargs)
    env.unwrapped._max_episode_steps = 1 << 30  # the adapter's max_cycles decides, as a truncation
    return GymMultiAgent(env, task, max_cycles, scale_obs)


def rware(task: str = "rware-tiny-2ag-v2", max_cycles: int = 500, scale_obs: bool = False, **kwargs) -> GymMultiAgent:
    """Multi-Robot Warehouse (``pip install rware``); ``kwargs`` go to the warehouse (e.g. ``sensor_range``). A
    module-qualified ``task`` (``module:EnvId``) imports that module: only when the person named it."""
    _check_task(task, "rware")
    import gymnasium as gym
    import rware as _rware  # noqa: F401  (registers the rware-* ids)

    env = gym.make(task, disable_env_checker=True, max_steps=None, **kwargs)
    return GymMultiAgent(env, task, max_cycles, scale_obs)
