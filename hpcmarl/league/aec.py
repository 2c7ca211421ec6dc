"""Actor loop for turn-based PettingZoo AEC games (e.g. ``connect_four_v3``), stepped directly (no MPI).

Each agent's observation, action mask included, goes to that agent's player only when the agent is to move;
the parallel-API conversion is not used, so turn order and illegal-move handling stay the environment's.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from hpcmarl.league.scripted import random_legal

Player = Callable[[dict], int]


def play_episode(env, players: Dict[str, Player], seed: Optional[int] = None, opening: int = 0) -> Dict[str, float]:
    """One episode of the AEC ``env``; ``players[agent](obs) -> action``. Returns each agent's summed reward
    (the rewards ``env.last()`` reports, PettingZoo's ``average_total_reward`` convention). The first
    ``opening`` moves are uniformly random legal moves drawn with ``seed`` (varied openings for deterministic
    players). A player with a ``new_game()`` method (a mixture of policies) is told that a game starts."""
    for player in set(players.values()):
        if hasattr(player, "new_game"):
            player.new_game()
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    totals = {agent: 0.0 for agent in env.possible_agents}
    for ply, agent in enumerate(env.agent_iter()):
        obs, reward, terminated, truncated, _ = env.last()
        totals[agent] += float(reward)
        if terminated or truncated:
            env.step(None)
        elif ply < opening:
            env.step(int(random_legal(rng, np.asarray(obs["action_mask"])[None])[0]))
        else:
            env.step(players[agent](obs))
    return totals


def play_matches(make_env: Callable[[], object], player_a: Player, player_b: Player, n_games: int,
                 seed: int = 0, opening: int = 0) -> Dict[str, int]:
    """``n_games`` two-player games; ``player_a`` takes the first seat in even games and the second in odd ones;
    game ``i`` resets with seed ``seed + i`` (and opens with ``opening`` random moves, see :func:`play_episode`).
    Returns ``dict(wins, draws, losses)`` from ``player_a``'s view."""
    env = make_env()
    first, second = env.possible_agents[:2]
    result = dict(wins=0, draws=0, losses=0)
    try:
        for i in range(n_games):
            seat_a, seat_b = (first, second) if i % 2 == 0 else (second, first)
            ret = play_episode(env, {seat_a: player_a, seat_b: player_b}, seed + i, opening)[seat_a]
            result["wins" if ret > 0 else "losses" if ret < 0 else "draws"] += 1
    finally:
        env.close()
    return result
