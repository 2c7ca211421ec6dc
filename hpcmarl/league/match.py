"""Head-to-head games between saved policies and scripted baselines (``hpcmarl match``; no MPI).

A player is a pool snapshot (``RUN/pool/*.h5``), a league checkpoint (``policy/<group>``, choose with
``--group`` when it holds several) or a baseline name (``random``, ``lookahead``). Games alternate seats and
reset with ``seed + i``; saved policies play their most likely legal move unless ``sampled``.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

from hpcmarl.league.aec import play_matches
from hpcmarl.league.pool import BASELINE_IDS, aec_player, baseline_player, policy_from, read_policy


def load_player(source: str, group: Optional[str] = None, seed: int = 0, greedy: bool = True) -> Tuple[object, dict]:
    """``(player, attrs)``; ``attrs`` is empty for baselines."""
    if source in BASELINE_IDS:
        return baseline_player(BASELINE_IDS[source], seed), {}
    if not os.path.isfile(source):
        raise ValueError(f"{source}: no such file (give a pool snapshot, a league checkpoint, "
                         f"or one of {', '.join(BASELINE_IDS)})")
    params, attrs = read_policy(source, group)
    return aec_player(policy_from(params, attrs), greedy), attrs


def match(a: str, b: str, episodes: int, env: Optional[str] = None, group_a: Optional[str] = None,
          group_b: Optional[str] = None, seed: int = 0, sampled: bool = False, opening: int = 0) -> dict:
    """Win/draw/loss of ``a`` against ``b`` over ``episodes`` games (turn-based two-player games)."""
    from hpcmarl.envs import REGISTRY, make_env

    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    torch.manual_seed(seed)
    pa, attrs_a = load_player(a, group_a, seed + 1, not sampled)
    pb, attrs_b = load_player(b, group_b, seed + 2, not sampled)
    envs = {x["env"] for x in (attrs_a, attrs_b) if x}
    if len(envs) > 1:
        raise ValueError(f"the two policies were trained on different environments: {sorted(envs)}")
    name = env or (envs.pop() if envs else None)
    if name is None:
        raise ValueError("two baselines: name the game with --env")
    if name not in REGISTRY or not REGISTRY[name].turn_based:
        raise ValueError(f"hpcmarl match plays turn-based two-player games; {name} is not one")
    for x, src in ((attrs_a, a), (attrs_b, b)):
        if x and x["env"] != name:
            raise ValueError(f"{src} was trained on {x['env']}, not {name}")
    r = play_matches(lambda: make_env(name), pa, pb, episodes, seed=seed, opening=opening)
    n = sum(r.values())
    return {"a": a, "b": b, "env": name, "episodes": n, **r, "win_rate": r["wins"] / n,
            "score": (r["wins"] + 0.5 * r["draws"]) / n, "seed": seed, "sampled": sampled, "opening": opening}
