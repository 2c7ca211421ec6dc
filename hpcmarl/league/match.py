"""Head-to-head games between saved policies and scripted baselines (``hpcmarl match``; no MPI).

A player is a pool snapshot (``RUN/pool/*.h5``), a league checkpoint (``policy/<group>``, choose with
``--group`` when it holds several), a league run directory (its pool's uniform or meta-Nash mixture, one
snapshot drawn per game) or a baseline name (``random``, ``lookahead``, ``charge``). Games alternate
seats and reset with ``seed + i``; saved policies play their most likely legal move unless ``sampled``.

Turn-based games (Connect Four) go through the AEC loop; simultaneous-move games (MPE, MAgent2) through
:class:`hpcmarl.league.seats.SeatGames` with the game as the first saved policy was trained on it (env
arguments, policy map and seats from its attributes): it plays its policy group's seats (seat sets alternate:
red/blue teams, or each agent), the other player every other seat.
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

import numpy as np
import torch

from hpcmarl import trust
from hpcmarl.league.aec import play_matches
from hpcmarl.league.pool import (
    BASELINE_IDS,
    PolicyBank,
    aec_player,
    baseline_player,
    policy_from,
    read_policy,
    run_pool,
)


def pool_mixture(run_dir: str, mixture: str, group: Optional[str] = None) -> Tuple[List[str], np.ndarray]:
    """A league run's pool snapshots of ``group`` and the weights of its ``uniform`` or ``meta_nash`` mixture: the
    Nash equilibrium of the exact payoffs between the snapshots on OpenSpiel games, else of the win rates in the
    newest checkpoint's payoff table (unplayed pairs count as even)."""
    from hpcmarl.league.exploitability import NashConv, NotExact, exact_payoffs, openspiel_game
    from hpcmarl.league.matchmaking import Payoff, meta_nash, zero_sum_nash

    if mixture not in ("uniform", "meta_nash"):
        raise ValueError(f"unknown mixture {mixture!r}; valid: uniform, meta_nash")
    group, files = run_pool(run_dir, group)
    if mixture == "uniform":
        return files, np.full(len(files), 1.0 / len(files))
    snaps = [read_policy(f) for f in files]
    try:
        with trust.reading(files[0]):  # an unregistered env: refused unless --env-import named it (hpcmarl.trust)
            meter = NashConv(openspiel_game(str(snaps[0][1]["env"]), json.loads(snaps[0][1].get("env_kwargs") or "{}")))
    except NotExact:
        from hpcmarl.storage import Run, load_checkpoint

        ckpts = Run(run_dir).checkpoints()
        if not ckpts:
            raise ValueError(f"{run_dir}: no checkpoint holds the payoff table the meta-Nash mixture needs") from None
        arrays, _ = load_checkpoint(ckpts[-1], root=os.path.dirname(ckpts[-1]))
        pay = Payoff.from_checkpoint(arrays, "league/payoff_")  # sparse, or the dense table of older checkpoints
        return files, meta_nash(pay.matrix([f"{group}-v{int(a['version'])}" for _, a in snaps]))
    return files, zero_sum_nash(exact_payoffs(meter, [meter.probabilities(policy_from(*s)) for s in snaps]))


class MixturePlayer:
    """An AEC player that draws one of ``players`` per game with probabilities ``weights`` (a population mixture)."""

    def __init__(self, players: list, weights: np.ndarray, seed: int):
        self.players, self.weights = players, np.asarray(weights, np.float64) / np.sum(weights)
        self.rng = np.random.default_rng(seed)
        self.current = players[0]

    def new_game(self) -> None:
        self.current = self.players[int(self.rng.choice(len(self.players), p=self.weights))]

    def __call__(self, obs) -> int:
        return self.current(obs)


def load_player(source: str, group: Optional[str] = None, mixture: Optional[str] = None):
    """``(Inference, attrs)`` of a pool snapshot or league checkpoint; ``(MixturePlayer factory, attrs)`` of a run
    directory's pool ``mixture``; ``None`` for a baseline name: a ``hpcmarl match`` argument resolved (the public
    :func:`hpcmarl.load_policy` loads a training checkpoint)."""
    if source in BASELINE_IDS:
        return None
    if os.path.isdir(source):
        files, weights = pool_mixture(source, mixture or "meta_nash", group)
        snaps = [read_policy(f) for f in files]
        keep = [i for i, w in enumerate(weights) if w > 1e-6]

        def player(greedy: bool, seed: int):
            return MixturePlayer([aec_player(policy_from(*snaps[i]), greedy) for i in keep], weights[keep], seed)
        return player, snaps[-1][1]
    if not os.path.isfile(source):
        raise ValueError(f"{source}: no such file (give a pool snapshot, a league checkpoint, a league run directory "
                         f"(with --mixture), or one of {', '.join(BASELINE_IDS)})")
    params, attrs = read_policy(source, group)
    return policy_from(params, attrs), attrs


def match(a: str, b: str, episodes: int, env: Optional[str] = None, group_a: Optional[str] = None,
          group_b: Optional[str] = None, seed: int = 0, sampled: bool = False, opening: int = 0,
          mixture: str = "meta_nash") -> dict:
    """Win/draw/loss of ``a`` against ``b`` over ``episodes`` games; a run directory plays its pool's ``mixture``
    (``uniform`` or ``meta_nash``), one snapshot drawn per game (turn-based games)."""
    from hpcmarl.envs import REGISTRY, is_batched, make_env
    from hpcmarl.league.config import BASELINES

    if episodes < 1:
        raise ValueError("--episodes must be >= 1")
    torch.manual_seed(seed)
    la, lb = load_player(a, group_a, mixture), load_player(b, group_b, mixture)
    attrs_a, attrs_b = (la[1] if la else {}), (lb[1] if lb else {})
    envs = {x["env"] for x in (attrs_a, attrs_b) if x}
    if len(envs) > 1:
        raise ValueError(f"the two policies were trained on different environments: {sorted(envs)}")
    name = env or (envs.pop() if envs else None)
    if name is None:
        raise ValueError("two baselines: name the game with --env")
    if name not in REGISTRY:
        if is_batched(name):
            raise ValueError(f"env.name {name!r}: match plays PettingZoo environments, not batched ones")
        raise ValueError(f"unknown environment {name!r} (known: {', '.join(sorted(REGISTRY))})")
    for x, src in ((attrs_a, a), (attrs_b, b)):
        if x and x["env"] != name:
            raise ValueError(f"{src} was trained on {x['env']}, not {name}")
        if not x and BASELINES[src] not in (None, name):
            raise ValueError(f"the {src} baseline plays {BASELINES[src]} only, not {name}")
    mixed = [src for x, src in ((la, a), (lb, b)) if x and os.path.isdir(src)]  # pool mixtures
    if not REGISTRY[name].turn_based and mixed:
        raise ValueError(f"{mixed[0]}: pool mixtures play turn-based games only ({name} is simultaneous)")
    try:
        if REGISTRY[name].turn_based:
            pa, pb = ((x[0](not sampled, seed + k) if src in mixed else aec_player(x[0], not sampled)) if x
                      else baseline_player(BASELINE_IDS[src], seed + k) for k, x, src in ((1, la, a), (2, lb, b)))
            r = play_matches(lambda: make_env(name), pa, pb, episodes, seed=seed, opening=opening)
        else:
            r = seat_matches(name, (a, la), (b, lb), episodes, seed, sampled, opening)
    except RuntimeError as e:  # torch: a network whose input or output does not match the game's
        raise ValueError(f"{a} against {b}: a policy does not fit {name} "
                         f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    n = sum(r.values())
    return {"a": a, "b": b, "env": name, "episodes": n, **r, "win_rate": r["wins"] / n,
            "score": (r["wins"] + 0.5 * r["draws"]) / n, "seed": seed, "sampled": sampled, "opening": opening,
            **({"mixture": mixture} if mixed else {})}


def seat_matches(name: str, a: Tuple[str, Optional[tuple]], b: Tuple[str, Optional[tuple]], episodes: int, seed: int,
                 sampled: bool, opening: int) -> dict:
    """Simultaneous-move games: ``(source, load_player(source))`` pairs; the saved policy ``a`` (or ``b``, when
    ``a`` is a baseline) takes its seats, the other player the rest; win/draw/loss from ``a``'s view."""
    flip = a[1] is None
    (_, mine), (other, theirs) = (b, a) if flip else (a, b)
    if mine is None:
        raise ValueError(f"{name} is a simultaneous-move game: give at least one saved policy")
    policy, attrs = mine
    bank = PolicyBank(None, np.random.default_rng(seed), greedy=not sampled)
    if theirs is None:
        member = BASELINE_IDS[other]
    else:
        member = 0
        bank.cache[member] = theirs[0]
    from hpcmarl.envs import REGISTRY
    from hpcmarl.league.seats import SeatGames

    seats = attrs.get("seats") or ("per_team" if REGISTRY[name].teams else "per_agent")  # older snapshots
    with trust.reading(b[0] if flip else a[0]):  # its env_kwargs (a gymnasium task) import only what was named
        games = SeatGames(name, json.loads(attrs.get("env_kwargs", "{}")), json.loads(attrs.get("policy_map", "null")),
                          attrs["policy_group"], seats, policy, member, bank, seed, opening)
    out = dict(wins=0, draws=0, losses=0)
    try:
        for i in range(episodes):
            score = games.play(seed + i).score
            score = 1.0 - score if flip else score
            out["wins" if score == 1.0 else "losses" if score == 0.0 else "draws"] += 1
    finally:
        games.close()
    return out
