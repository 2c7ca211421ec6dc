"""Fakes whose state is observable, for tests (registered as the ``counting_v0`` environment)."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class CountingEnv(ParallelEnv):
    """Observation = ``[step index, agent index]``; every agent gets reward 1 per step; episodes last
    ``max_cycles`` steps; with ``die_at`` agent ``agent_1`` terminates early (tests dead-agent masking)."""

    metadata = {"name": "counting_v0", "render_modes": []}

    def __init__(self, n_agents: int = 2, max_cycles: int = 5, n_actions: int = 3, die_at: int = 0):
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.max_cycles = max_cycles
        self.die_at = die_at
        self._obs_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self._act_space = spaces.Discrete(n_actions)
        self.t = 0
        self.agents = []

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def _obs(self):
        return {a: np.array([self.t, self.possible_agents.index(a)], np.float32) for a in self.agents}

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        rew = {a: 1.0 for a in self.agents}
        trunc = {a: self.t >= self.max_cycles for a in self.agents}
        term = {a: bool(self.die_at) and a == "agent_1" and self.t >= self.die_at for a in self.agents}
        obs = self._obs()
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, {a: {} for a in obs}


def counting_env(**kwargs):
    return CountingEnv(**kwargs)


class TargetEnv(ParallelEnv):
    """One-step continuous task (algorithms.md 1.9 B): observation ``[1]``, action in [-2, 2], reward
    ``-(a - target)^2``. Two actors with ``target = +1`` and ``-1`` have opposite objectives: the
    equal-weight optimum is ``a = 0``, a pooled, speed-weighted one leans towards the faster actor."""

    metadata = {"name": "target_v0", "render_modes": []}

    def __init__(self, target: float = 1.0, n_agents: int = 1):
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.target = float(target)
        self._obs_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self._act_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.agents = []

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        return {a: np.ones(1, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        rew = {a: -float((np.asarray(actions[a]).reshape(-1)[0] - self.target) ** 2) for a in self.agents}
        obs = {a: np.ones(1, np.float32) for a in self.agents}
        done = {a: True for a in self.agents}
        self.agents = []
        return obs, rew, {a: False for a in obs}, done, {a: {} for a in obs}


def target_env(**kwargs):
    return TargetEnv(**kwargs)
