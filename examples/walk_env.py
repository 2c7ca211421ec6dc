"""Bring your own environment: a 20-line PettingZoo parallel env that hpcmarl trains by import path, or by the short
name this module registers (``hpcmarl.register_env``) when the config's ``plugins`` list it:

    hpcmarl train configs/simple_spread_mappo.yaml env.name=examples.walk_env:parallel_env
    hpcmarl train configs/simple_spread_mappo.yaml plugins=[examples.walk_env] env.name=walk_v0

Two agents on a line of 8 cells each walk to their own goal (actions: left, stay, right); every step costs the
distance to the goal; episodes end after 10 steps (a time-limit truncation). Groups come from the agent names
(``walker_0, walker_1`` -> group ``walker``).
"""
import numpy as np
from gymnasium.spaces import Box, Discrete
from pettingzoo import ParallelEnv

from hpcmarl import register_env


class WalkEnv(ParallelEnv):
    metadata = {"name": "walk_v0"}

    def __init__(self, n: int = 2, size: int = 8, max_steps: int = 10):
        self.possible_agents = [f"walker_{i}" for i in range(n)]
        self.size, self.max_steps, self.rng = size, max_steps, np.random.default_rng()

    def observation_space(self, agent):
        return Box(0.0, 1.0, (2,), np.float32)

    def action_space(self, agent):
        return Discrete(3)

    def _obs(self):
        return {a: np.array([self.pos[a], self.goal[a]], np.float32) / self.size for a in self.agents}

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed) if seed is not None else self.rng
        self.agents, self.t = list(self.possible_agents), 0
        self.pos = {a: int(self.rng.integers(self.size)) for a in self.agents}
        self.goal = {a: int(self.rng.integers(self.size)) for a in self.agents}
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions):
        for a, act in actions.items():
            self.pos[a] = int(np.clip(self.pos[a] + int(act) - 1, 0, self.size - 1))
        self.t += 1
        obs, done = self._obs(), self.t >= self.max_steps
        rew = {a: -abs(self.pos[a] - self.goal[a]) / self.size for a in self.agents}
        trunc = {a: done for a in self.agents}
        if done:
            self.agents = []
        return obs, rew, {a: False for a in trunc}, trunc, {a: {} for a in trunc}


def parallel_env(**kwargs):
    return WalkEnv(**kwargs)


register_env("walk_v0", parallel_env, {"walker": ["walker_*"]}, description="examples/walk_env.py: walkers on a line")
