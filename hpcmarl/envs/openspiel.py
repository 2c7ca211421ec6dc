"""OpenSpiel games as turn-based PettingZoo AEC environments (no MPI).

Kuhn and Leduc poker (``kuhn_poker``, ``leduc_poker`` in the registry) are the small imperfect-information games
whose exploitability is exact (:mod:`hpcmarl.league.exploitability`). Player ``i`` is agent ``player_<i>``; its
observation is ``{"observation": information_state_tensor(i), "action_mask": legal actions}``; chance nodes (the
deal) are sampled inside the env with the generator seeded by ``reset(seed=...)``; each player's reward is its
return, paid when the game ends. Any other OpenSpiel game with an information-state tensor loads by path too:

    env.name: hpcmarl.envs.openspiel:game     env.kwargs: {game: kuhn_poker, players: 2}
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv


class OpenSpielEnv(AECEnv):
    """One OpenSpiel game (sequential moves, chance sampled by the env) with PettingZoo's AEC API."""

    metadata = {"render_modes": [], "is_parallelizable": False}

    def __init__(self, game: str, **params):
        import pyspiel

        self.game = pyspiel.load_game(game, params) if params else pyspiel.load_game(game)
        gtype = self.game.get_type()
        if gtype.dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL or not gtype.provides_information_state_tensor:
            raise ValueError(f"OpenSpiel game {game!r}: only sequential games with an information-state tensor")
        self.metadata = {**self.metadata, "name": game}
        n, self.n_actions = self.game.num_players(), self.game.num_distinct_actions()
        self.possible_agents = [f"player_{i}" for i in range(n)]
        dim = self.game.information_state_tensor_size()
        obs = spaces.Dict({"observation": spaces.Box(-np.inf, np.inf, (dim,), np.float32),
                           "action_mask": spaces.Box(0, 1, (self.n_actions,), np.int8)})
        self.observation_spaces = {a: obs for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(self.n_actions) for a in self.possible_agents}
        self.state, self.agents = None, []
        self._rng = np.random.default_rng()

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _deal(self) -> None:
        """Play chance nodes with the env's generator until a player moves or the game ends."""
        while self.state.is_chance_node():
            outcomes, probs = zip(*self.state.chance_outcomes())
            self.state.apply_action(int(outcomes[self._rng.choice(len(outcomes), p=np.asarray(probs) / sum(probs))]))

    def _after_move(self) -> None:
        self._deal()
        if self.state.is_terminal():
            self.rewards = dict(zip(self.agents, map(float, self.state.returns())))
            self.terminations = {a: True for a in self.agents}
            self.agent_selection = self.agents[0]
        else:
            self.rewards = {a: 0.0 for a in self.agents}
            self.agent_selection = self.agents[self.state.current_player()]

    def reset(self, seed: Optional[int] = None, options=None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.state = self.game.new_initial_state()
        self.agents = list(self.possible_agents)
        self._cumulative_rewards = {a: 0.0 for a in self.agents}
        self.terminations = {a: False for a in self.agents}
        self.truncations = {a: False for a in self.agents}
        self.infos = {a: {} for a in self.agents}
        self._after_move()
        self._accumulate_rewards()

    def observe(self, agent: str) -> dict:
        i = self.possible_agents.index(agent)
        mask = np.zeros(self.n_actions, np.int8)
        if not self.state.is_terminal() and self.state.current_player() == i:
            mask[self.state.legal_actions(i)] = 1
        return {"observation": np.asarray(self.state.information_state_tensor(i), np.float32), "action_mask": mask}

    def step(self, action) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            return self._was_dead_step(action)
        self._cumulative_rewards[agent] = 0.0
        self.state.apply_action(int(action))
        self._after_move()
        self._accumulate_rewards()

    def close(self) -> None:
        pass


def game(game: str, **params) -> OpenSpielEnv:
    """``env.name: hpcmarl.envs.openspiel:game`` with ``env.kwargs: {game: NAME, <game parameters>}`` (the registry's
    ``kuhn_poker`` and ``leduc_poker`` are this with ``game`` set)."""
    return OpenSpielEnv(game, **params)
