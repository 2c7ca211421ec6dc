"""The league section of the run config (``league.*``): its schema, the matchmaking strategies and scripted baselines
it may name, and its validation (called by :func:`hpcmarl.config.validate`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

from hpcmarl.typedconfig import check as _check


@dataclass
class LeagueGroupConfig:
    """One learner group of a league: the policy it trains, its ranks and how it picks opponents."""

    name: str = "main"  # the group's name (pool snapshots are pool/<name>-vNNNNNNN.h5); unique, no "/"
    policy_group: str = ""  # the policy-map group whose agents this policy plays ("" = the env's first group)
    learners: int = 1  # learner ranks of this group
    actors: int = 0  # actor ranks of this group; 0 = an even share of the ranks left over
    strategy: str = "pfsp"  # self_play | uniform (fictitious self-play) | pfsp | meta_nash (PSRO) | exploiter
    self_play: float = 0.2  # uniform/pfsp/meta_nash: share of episodes against the group's own current policy
    pfsp_weighting: Literal["squared", "variance", "linear"] = "squared"  # squared: (1-x)^2 | variance: x(1-x) |
    # linear: 1-x
    exploits: str = ""  # exploiter: the group whose newest snapshot it plays (default: the first group)
    snapshot_every: int = 20  # updates between pool snapshots (0 = only by win rate)
    snapshot_win_rate: float = 0.0  # > 0: also snapshot once the win rate against the pool reaches this
    snapshot_min_updates: int = 5  # at least this many updates between win-rate snapshots
    restart: bool = False  # after each snapshot the policy restarts from its initial weights and optimizer state,
    # so every snapshot is a fresh best response to the opponents of its period (PSRO; with strategy meta_nash)
    snapshot_greedy: bool = False  # pool snapshots play their most likely legal action (pure best responses)


@dataclass
class LeagueConfig:
    """League mode: learner groups, a league rank (the last rank) with the policy pool, matchmaking,
    ratings and evaluation matches."""

    enabled: bool = False  # train a league: learner groups, a league rank (the last rank) and a policy pool
    seats: Literal["auto", "per_agent", "per_team", "per_group"] = "auto"  # per_agent: the trained policy takes one
    # seat, the pool the others (symmetric games); per_team: it takes one team of a team game (battle_v4), the pool the
    # other team; per_group: it plays all agents of its policy group, the pool the other groups; auto: per_group when
    # the league trains more than one policy group, else per_team in team games, else per_agent
    groups: List[LeagueGroupConfig] = field(default_factory=lambda: [LeagueGroupConfig()])  # the learner groups
    # (one trained policy each, with its own ranks and matchmaking)
    outcome: Literal["auto", "competitive", "cooperative"] = "auto"  # competitive: episodes are won/drawn/lost (payoff,
    # Elo, OpenSkill); cooperative: the other seats are partners, the league records team returns per partner
    # (cross-play); auto: from the env
    pool_max: int = 0  # matchmaking considers the newest this many snapshots of each lineage (0 = all)
    ratings_every: int = 10  # updates between rows of run.h5 /league/ratings (members whose games changed)
    win_rate_step: float = 0.05  # PFSP win rates: exponential moving average step per reported game
    elo_k: float = 32.0  # Elo K-factor of the ratings (run.h5 /league/ratings; Elo starts at 1000)
    eval_games: int = 40  # evaluation games per matchup (fixed seeds, seats alternated)
    eval_baselines: Optional[List[str]] = None  # random | lookahead (connect_four) | charge (battle); default:
    # every baseline that plays the game
    pool_baselines: List[str] = field(default_factory=list)  # scripted members matchmaking may also pick (random,
    # lookahead, charge); they play the seats of the first league group's policy group
    eval_pool: int = 3  # a new snapshot also plays this many of the newest earlier snapshots
    eval_greedy: bool = True  # evaluated policies take their most likely legal action
    eval_opening: int = 2  # pool-vs-pool evaluation games open with this many seeded random moves (turn-based) or
    # steps of every agent (simultaneous, discrete actions), so two deterministic policies play varied games
    eval_every: int = 1  # evaluate every this many snapshots of a group (0 = no evaluation)
    meta_game: Literal["win_rate", "return", "exact"] = "win_rate"  # meta_nash: the pool's payoff matrix from
    # evaluation win rates, or mean returns ("return": zero-sum games scored in chips or points), or exact expected
    # returns ("exact": OpenSpiel games)
    opponent_cache: int = 32  # snapshot policies each actor and the league rank keep loaded (least recently used
    # dropped, re-read from its file when needed again): their memory grows while this fills (~1.7 MiB per policy
    # for configs/league_c4.yaml's network), then stays flat
    exploitability_every: int = 0  # OpenSpiel games (kuhn_poker, leduc_poker): NashConv of the newest snapshot, the
    # uniform and the meta-Nash pool mixture every this many snapshots -> run.h5 /league/exploitability (0 = off)


LEAGUE_STRATEGIES = ("self_play", "uniform", "pfsp", "meta_nash", "exploiter")
BASELINES = {"random": None, "lookahead": "connect_four_v3", "charge": "battle_v4"}  # scripted players -> the
# game they play (None: any game with discrete actions)


def validate_league(cfg, envs) -> None:
    """``cfg``: the run config (:class:`hpcmarl.config.Config`); ``envs``: :mod:`hpcmarl.envs`."""
    lg, entry = cfg.league, envs.entry(cfg.env.name, cfg.env.kwargs)
    _check(not (lg.enabled and envs.is_batched(cfg.env.name)), "env.name",
           f"{cfg.env.name} is a batched environment; league mode plays PettingZoo environments (league.enabled)")
    if not lg.enabled:
        _check(not entry.turn_based, "league.enabled",
               f"{cfg.env.name} is a turn-based game: set league.enabled=true (its actors step the game directly)")
        return
    from hpcmarl.algos import base

    if not base.get(cfg.algo.name).league:
        able = sorted(n for n, a in base.ALGORITHMS.items() if a.league)
        names = " or ".join(filter(None, [", ".join(able[:-1]), able[-1]])) if able else "no registered algorithm"
        _check(False, "algo.name", f"league mode trains {names}, not {cfg.algo.name} (an algorithm that plays in "
               f"leagues is registered with league=True)")
    n_learn = sum(g.learners for g in lg.groups)
    _check(cfg.topology.learners in (1, n_learn) and cfg.topology.actors == "auto", "topology",
           f"in league mode the ranks come from league.groups (learners/actors per group); leave topology unset "
           f"(topology.learners may only repeat the league's total of {n_learn} learners)")
    _check(len(lg.groups) >= 1, "league.groups", "must list at least one learner group")
    pmap = cfg.policy_map if cfg.policy_map is not None else entry.groups
    names = [g.name for g in lg.groups]
    for i, g in enumerate(lg.groups):
        key = f"league.groups[{i}]"
        _check(bool(g.name) and "/" not in g.name and names.count(g.name) == 1, f"{key}.name",
               "must be a unique non-empty name without '/'")
        _check(g.policy_group in pmap, f"{key}.policy_group",
               f"{g.policy_group!r} is not a policy-map group of {cfg.env.name} (groups: {', '.join(pmap)})")
        _check(g.learners >= 1, f"{key}.learners", "must be >= 1")
        _check(g.actors >= 0, f"{key}.actors", "must be >= 0 (0 = an even share of the remaining ranks)")
        _check(g.strategy in LEAGUE_STRATEGIES, f"{key}.strategy", f"must be one of {', '.join(LEAGUE_STRATEGIES)}")
        _check(0 <= g.self_play <= 1, f"{key}.self_play", "must be in [0, 1]")
        if g.strategy == "exploiter":
            _check(g.exploits in names and g.exploits != g.name, f"{key}.exploits",
                   f"must name another learner group (groups: {', '.join(names)})")
        _check(g.snapshot_every >= 0 and g.snapshot_min_updates >= 1, f"{key}.snapshot_every",
               "snapshot_every must be >= 0 and snapshot_min_updates >= 1")
        _check(0 <= g.snapshot_win_rate <= 1, f"{key}.snapshot_win_rate", "must be in [0, 1] (0 = off)")
        _check(g.snapshot_every > 0 or g.snapshot_win_rate > 0, f"{key}.snapshot_every",
               "set snapshot_every or snapshot_win_rate, or the pool never grows")
    _check(lg.seats != "per_team" or entry.teams, "league.seats",
           f"per_team needs a team game; {cfg.env.name} has no teams (team games: "
           f"{', '.join(n for n, e in envs.REGISTRY.items() if e.teams)})")
    if lg.outcome == "cooperative":  # partners have team returns, not win rates
        for i, g in enumerate(lg.groups):
            _check(g.strategy not in ("pfsp", "meta_nash"), f"league.groups.{i}.strategy",
                   f"{g.strategy} weighs opponents by win rates, which a cooperative league does not keep (it records "
                   f"team returns per partner); use uniform or self_play")
            _check(not g.snapshot_win_rate, f"league.groups.{i}.snapshot_win_rate",
                   "a cooperative league keeps no win rates; snapshot by snapshot_every")
    _check(0 < lg.win_rate_step <= 1, "league.win_rate_step", "must be in (0, 1]")
    _check(lg.elo_k > 0, "league.elo_k", "must be > 0")
    _check(lg.ratings_every >= 1, "league.ratings_every", "must be >= 1")
    _check(lg.opponent_cache >= 1, "league.opponent_cache", "must be >= 1")
    for key, on in (("exploitability_every", lg.exploitability_every), ("meta_game", lg.meta_game == "exact")):
        _check(not on or entry.factory.startswith("hpcmarl.envs.openspiel:"), f"league.{key}",
               f"exact values need an OpenSpiel game (kuhn_poker, leduc_poker), not {cfg.env.name}")
    for k in ("eval_games", "eval_pool", "eval_every", "eval_opening", "pool_max", "exploitability_every"):
        _check(getattr(lg, k) >= 0, f"league.{k}", "must be >= 0")
    for key in ("pool_baselines", "eval_baselines"):
        for b in getattr(lg, key):
            _check(b in BASELINES, f"league.{key}", f"unknown baseline {b!r} (known: {', '.join(BASELINES)})")
            _check(BASELINES[b] in (None, cfg.env.name), f"league.{key}", f"the {b} baseline plays {BASELINES[b]} only")
