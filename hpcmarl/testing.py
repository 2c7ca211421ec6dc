"""Test environments whose state is observable: ``counting_v0``, ``matrix_v0``, ``target_v0`` (no MPI).

They are not in the production registry: importing this module registers them. The test suite imports it
(``tests/conftest.py``); a run on them names it as a plugin, so that every rank registers them too::

    hpcmarl train configs/test_tiny.yaml plugins=[hpcmarl.testing] env.name=counting_v0
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from hpcmarl.envs.registry import register_env


class _FakeEnv(ParallelEnv):
    """Every agent shares one observation space and one action space."""

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space


class CountingEnv(_FakeEnv):
    """Observation = ``[step index, agent index]``; every agent gets reward 1 per step; episodes last
    ``max_cycles`` steps; with ``die_at`` agent ``agent_1`` terminates early (tests dead-agent masking)."""

    metadata = {"name": "counting_v0", "render_modes": []}

    def __init__(self, n_agents: int = 2, max_cycles: int = 5, n_actions: int = 3, die_at: int = 0, crash_at: int = 0,
                 crash_in: str = "step"):
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.max_cycles = max_cycles
        self.die_at = die_at
        # crash_at > 0: the crash_at-th step() (or reset(), crash_in="reset") of this instance raises RuntimeError
        self.crash_at, self.crash_in, self.calls = crash_at, crash_in, 0
        self._obs_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self._act_space = spaces.Discrete(n_actions)
        self.t = 0
        self.agents = []

    def _obs(self):
        return {a: np.array([self.t, self.possible_agents.index(a)], np.float32) for a in self.agents}

    def _maybe_crash(self, where: str):
        if self.crash_at and self.crash_in == where:
            self.calls += 1
            if self.calls == self.crash_at:
                raise RuntimeError(f"counting_v0 crashed in {where} call {self.calls}")

    def reset(self, seed=None, options=None):
        self._maybe_crash("reset")
        self.t = 0
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        self._maybe_crash("step")
        self.t += 1
        rew = {a: 1.0 for a in self.agents}
        trunc = {a: self.t >= self.max_cycles for a in self.agents}
        term = {a: bool(self.die_at) and a == "agent_1" and self.t >= self.die_at for a in self.agents}
        obs = self._obs()
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        return obs, rew, term, trunc, {a: {} for a in obs}


def counting_env(**kwargs):
    return CountingEnv(**kwargs)


class TargetEnv(_FakeEnv):
    """One-step continuous task (docs/algorithms/nigt.md#heterogeneous-environments): observation ``[1]``,
    action in [-2, 2], reward ``-(a - target)^2``. Two actors with ``target = +1`` and ``-1`` have opposite
    objectives: the equal-weight optimum is ``a = 0``, a pooled, speed-weighted one leans towards the faster actor."""

    metadata = {"name": "target_v0", "render_modes": []}

    def __init__(self, target: float = 1.0, n_agents: int = 1):
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.target = float(target)
        self._obs_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self._act_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.agents = []

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


class MatrixEnv(_FakeEnv):
    """Repeated cooperative matrix game: every step both agents choose an action and each gets
    ``payoff[a_0][a_1] / 2`` (the team reward is the payoff); episodes last ``max_cycles`` steps and the
    observation is ``[t / max_cycles, agent index]``. With ``masked`` the first action of ``agent_1`` is
    unavailable (observations are dicts with an ``action_mask``)."""

    metadata = {"name": "matrix_v0", "render_modes": []}

    def __init__(self, max_cycles: int = 3, payoff=((0.2, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 1.0)),
                 masked: bool = False):
        self.possible_agents = ["agent_0", "agent_1"]
        self.max_cycles, self.masked = max_cycles, masked
        self.payoff = np.asarray(payoff, np.float32)
        n = self.payoff.shape[0]
        box = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self._obs_space = (spaces.Dict({"observation": box, "action_mask": spaces.Box(0, 1, (n,), np.int8)})
                           if masked else box)
        self._act_space = spaces.Discrete(n)
        self.t = 0
        self.agents = []

    def _obs(self):
        out = {}
        for i, a in enumerate(self.possible_agents):
            o = np.array([self.t / self.max_cycles, i], np.float32)
            if self.masked:
                mask = np.ones(self.payoff.shape[0], np.int8)
                mask[0] = int(a != "agent_1")
                o = {"observation": o, "action_mask": mask}
            out[a] = o
        return out

    def reset(self, seed=None, options=None):
        self.t = 0
        self.agents = list(self.possible_agents)
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        r = float(self.payoff[int(actions["agent_0"]), int(actions["agent_1"])]) / 2
        self.t += 1
        obs = self._obs()
        trunc = {a: self.t >= self.max_cycles for a in self.agents}
        rew = {a: r for a in self.agents}
        self.agents = [a for a in self.agents if not trunc[a]]
        return obs, rew, {a: False for a in obs}, trunc, {a: {} for a in obs}


def matrix_env(**kwargs):
    return MatrixEnv(**kwargs)


# registered on import (every rank of a run whose config lists this module in `plugins`)
register_env("counting_v0", "hpcmarl.testing:counting_env", {"agent": ["agent_*"]},
             description="test fake: observation is the step index")
register_env("matrix_v0", "hpcmarl.testing:matrix_env", {"agent": ["agent_*"]}, {"max_cycles": 3},
             "test task: repeated cooperative 3x3 matrix game (optional action masks)")
register_env("target_v0", "hpcmarl.testing:target_env", {"agent": ["agent_*"]},
             description="test task: one continuous step, reward -(a - target)^2")
