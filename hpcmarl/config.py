"""Typed run configuration: dataclass schema + YAML files + dotted ``key=value`` overrides.

Everything is validated here, before any MPI work starts. Every error names the offending key and is
raised as :class:`ConfigError` (the CLI turns it into a one-line message and exit status 2).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import numpy as np
import yaml


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")  # YAML 1.1 reads 3e-4 as a string


class ConfigError(ValueError):
    """A bad config value; the message names the key."""


# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------
@dataclass
class EnvConfig:
    name: str = "simple_spread_v3"  # registered environment (see `hpcmarl.envs.REGISTRY`)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to the env constructor
    num_envs: int = 8  # environment copies stepped together by each actor


@dataclass
class TopologyConfig:
    learners: int = 1  # L: ranks 0..L-1 are learners
    actors: Union[int, str] = "auto"  # number of actor ranks, or "auto" = world size - learners


@dataclass
class LearnerConfig:
    backend: str = "horovod"  # horovod | mpi: how learners combine gradients
    device: str = "auto"  # auto (CUDA when torch sees a GPU) | cpu | cuda | cuda:N
    threads: Union[int, str] = "auto"  # torch threads per rank; auto = cores on the node / ranks on the node


@dataclass
class ActorConfig:
    threads: Union[int, str] = 1
    # heterogeneity for experiments: actor i sleeps step_delay_s * h_i after every env step, where h comes
    # from `delay`: a list of per-actor factors, "equal" (all 1), "sqrt" (h_i = sqrt(i+1)) or
    # "straggler:K" (the last actor K times slower)
    delay: Union[str, List[float]] = "equal"
    step_delay_s: float = 0.0
    # per-actor environment variants, actor i uses variants[i % len]: mappings with obs_scale (e.g. -1 to
    # negate observations, as in the paper's heterogeneous-environment experiment), reward_scale, env_kwargs
    variants: List[Dict[str, Any]] = field(default_factory=list)
    env_errors: str = "reset"  # an exception from one env copy: reset = re-create it, discard its episode and go on
    # (logged, counted as env_errors); abort = end the job
    max_env_errors: int = 100  # per actor; one more ends the job
    overlap: bool = False  # synchronous rollout flow: while the learner updates, actors collect the next unroll with
    # the weights they hold (one-step-stale data: the learner trains on unrolls of version v-1 or v; policy lag <= 1)


@dataclass
class TrainConfig:
    total_env_steps: int = 1_000_000  # stop when this many env steps (summed over actors) were taken
    max_updates: int = 0  # 0 = no limit
    max_wall_s: float = 0.0  # 0 = no limit; stop after this much wall-clock time
    wall_exit_requeue: bool = False  # a stop by max_wall_s exits 75 like a preemption, so a Slurm job that uses its
    # allocation as a time slice requeues and resumes (default: exit 0)
    target_return: Optional[float] = None  # if set, stop when the mean return of every group reaches it


@dataclass
class OutputConfig:
    root: str = "runs"  # run_dir defaults to <root>/<name>
    trajectories: bool = True  # write trajectories/actor-NNNNN.h5
    trajectory_fraction: float = 1.0  # fraction of episodes written to the trajectory files
    checkpoint_every: int = 50  # updates between checkpoints (a final one is always written)
    keep_checkpoints: int = 3
    flush_s: float = 5.0  # HDF5 files are flushed at least this often
    progress_s: float = 5.0  # console progress line interval
    episode_window: int = 500  # episodes averaged for the progress line and the target_return check
    min_free_mb: float = 64.0  # every write first checks that this much space stays free on the run directory's
    # file system; below it the run stops with a one-line error (the newest checkpoint stays complete)


@dataclass
class RuntimeConfig:
    timeout_s: float = 300.0  # longest any rank waits on a message before aborting the job
    startup_timeout_s: float = 600.0


@dataclass
class LeagueGroupConfig:
    """One learner group of a league: the policy it trains, its ranks and how it picks opponents."""

    name: str = "main"
    policy_group: str = ""  # the policy-map group whose agents this policy plays ("" = the env's first group)
    learners: int = 1
    actors: int = 0  # actor ranks of this group; 0 = an even share of the ranks left over
    strategy: str = "pfsp"  # self_play | uniform (fictitious self-play) | pfsp | meta_nash (PSRO) | exploiter
    self_play: float = 0.2  # uniform/pfsp/meta_nash: share of episodes against the group's own current policy
    pfsp_weighting: str = "squared"  # squared: (1-x)^2 | variance: x(1-x) | linear: 1-x
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

    enabled: bool = False
    seats: str = "auto"  # per_agent: the trained policy takes one seat, the pool the others (symmetric games);
    # per_team: it takes one team of a team game (battle_v4), the pool the other team; per_group: it plays all
    # agents of its policy group, the pool the other groups; auto: per_group when the league trains more than
    # one policy group, else per_team in team games, else per_agent
    groups: List[LeagueGroupConfig] = field(default_factory=lambda: [LeagueGroupConfig()])
    outcome: str = "auto"  # competitive: episodes are won/drawn/lost (payoff, Elo, OpenSkill); cooperative: the
    # other seats are partners, the league records team returns per partner (cross-play); auto: from the env
    pool_max: int = 0  # matchmaking considers the newest this many snapshots of each lineage (0 = all)
    ratings_every: int = 10  # updates between rows of run.h5 /league/ratings (members whose games changed)
    win_rate_step: float = 0.05  # PFSP win rates: exponential moving average step per reported game
    elo_k: float = 32.0
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
    meta_game: str = "win_rate"  # meta_nash: the pool's payoff matrix from evaluation win rates, or mean returns
    # ("return": zero-sum games scored in chips or points), or exact expected returns ("exact": OpenSpiel games)
    opponent_cache: int = 32  # snapshot policies each actor and the league rank keep loaded (least recently used
    # dropped, re-read from its file when needed again): their memory grows while this fills (~1.7 MiB per policy
    # for configs/league_c4.yaml's network), then stays flat
    exploitability_every: int = 0  # OpenSpiel games (kuhn_poker, leduc_poker): NashConv of the newest snapshot, the
    # uniform and the meta-Nash pool mixture every this many snapshots -> run.h5 /league/exploitability (0 = off)


@dataclass
class Config:
    name: str = "run"
    plugins: List[str] = field(default_factory=list)  # modules every rank imports first (they register algorithms)
    run_dir: Optional[str] = None  # default: <output.root>/<name>
    seed: int = 0
    fresh: bool = False  # start fresh even when run_dir holds a previous run (old files are moved aside)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy_map: Optional[Dict[str, List[str]]] = None  # group -> agent names or fnmatch patterns
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    algo: Any = field(default_factory=lambda: _algo_config())  # hpcmarl.algos.base.DEFAULT
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    league: LeagueConfig = field(default_factory=LeagueConfig)

    @property
    def resolved_run_dir(self) -> str:
        """``run_dir`` if given; under Slurm ``<root>/<name>-<jobid>`` (``-<arrayjob>_<task>`` for array
        tasks), so a requeued job (same id) finds its own directory; else ``<root>/<name>``."""
        if self.run_dir:
            return self.run_dir
        env = os.environ
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            return os.path.join(self.output.root, f"{self.name}-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}")
        if env.get("SLURM_JOB_ID"):
            return os.path.join(self.output.root, f"{self.name}-{env['SLURM_JOB_ID']}")
        return os.path.join(self.output.root, self.name)


# --------------------------------------------------------------------------------------------------
# dict -> dataclass with type checking
# --------------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return "list"
    if origin in (dict, Dict):
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        _, varg = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, varg, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema uses only the types above
        return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _build(cls, data, prefix: str, hint=None):
    """``hint(key)``: what to say of an unknown key instead of guessing a near name ("" for no hint)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            said = hint(k) if hint else ""
            if said:
                raise ConfigError(f"unknown config key '{_join(prefix, k)}': {said}")
            near = difflib.get_close_matches(str(k), names, n=1)
            guess = f" (did you mean '{_join(prefix, near[0])}'?)" if near else ""
            raise ConfigError(f"unknown config key '{_join(prefix, k)}'{guess}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = _join(prefix, name)
        if cls is Config and name == "algo":
            kwargs[name] = _build_algo(data[name], key)
        else:
            kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def _algo_config(name: Optional[str] = None):
    """The default config of a registered algorithm (its dataclass lives beside it in hpcmarl/algos/); ``None``: of
    the default algorithm (:data:`hpcmarl.algos.base.DEFAULT`)."""
    from hpcmarl.algos import base

    name = base.DEFAULT if name is None else name
    return base.get(name).config_class()(name=name)


def _build_algo(data, key):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{key}': expected a mapping, got {data!r}")
    from hpcmarl.algos import base

    name = data.get("name", base.DEFAULT)
    try:
        algo = base.get(name)
    except KeyError as e:
        raise ConfigError(f"config key '{key}.name': {e.args[0]}") from None
    def hint(k):  # an option of other algorithms: say so rather than guess a near name
        elsewhere = sorted(n for n, a in base.ALGORITHMS.items() if k in _option_names(a))
        return f"algorithm {name} has no option '{k}' (it is an option of {', '.join(elsewhere)})" if elsewhere else ""

    return _build(algo.config_class(), data, key, hint)


def _option_names(algo) -> set:
    try:
        return {f.name for f in dataclasses.fields(algo.config_class())}
    except Exception:  # noqa: BLE001 - a plug-in whose config does not import: its own run reports that
        return set()


def _join(prefix: str, name) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg) -> str:
    """The resolved config; a comment first lists the values hpcmarl derived (they were not set by the user)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    derived = getattr(cfg, "derived", None)
    if derived:
        text = "".join(f"# derived: {k} = {v}\n" for k, v in derived.items()) + text
    return text


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def parse_override(text: str):
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"config key '{key}': cannot parse value {raw!r}: {e}") from None
    return key, value


def apply_overrides(data: dict, overrides) -> dict:
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for k, part in enumerate(parts[:-1]):
            if isinstance(node, dict) and node.get(part) is None and parts[k + 1].isdigit():
                node[part] = _schema_default(parts[:k + 1])  # e.g. league.groups.0.x on the default list
            if isinstance(node, list):  # an entry of a list of sections, e.g. league.groups.0.strategy
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"config key '{key}': no list entry {part!r} (the list has {len(node)})")
                nxt = node[int(part)]
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = node[part] = {}
            if not isinstance(nxt, (dict, list)):
                raise ConfigError(f"config key '{key}': '{part}' is not a section")
            node = nxt
        if isinstance(node, list):
            if not parts[-1].isdigit() or int(parts[-1]) >= len(node):
                raise ConfigError(f"config key '{key}': no list entry {parts[-1]!r} (the list has {len(node)})")
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return data


def _schema_default(path: List[str]):
    """A deep copy of the schema's default value at ``path`` (``None`` if there is none)."""
    node = to_dict(Config())
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return yaml.safe_load(yaml.safe_dump(node))


def load_dict(path: Optional[str]) -> dict:
    if path is None:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def load_config(path: Optional[str] = None, overrides=(), trusted: bool = True) -> Config:
    """Load ``path`` (YAML), apply ``key=value`` overrides, build and validate the typed config. ``trusted``: the file
    and the overrides are the person's own (the config they pass to ``hpcmarl train``/``validate`` or a tool), so what
    they name for import (``env.name`` as ``module:callable``, ``plugins``, a ``module:EnvId`` gymnasium task) is
    allowed in this process (:mod:`hpcmarl.trust`); pass ``trusted=False`` for a file found in a run directory (its
    saved ``config.yaml``): then nothing it names is imported unless allowed otherwise."""
    from hpcmarl import trust

    data = apply_overrides(load_dict(path), overrides)
    if trusted:
        trust.allow(*trust.config_imports(data))
    cfg = from_dict(data)
    return cfg


def derive(cfg: Config) -> Dict[str, Any]:
    """Fill in the values a config leaves to hpcmarl (``auto``, ``0``, empty) from the env and the rest of the config;
    returns ``{key: value}`` of what it set (the saved ``config.yaml`` lists them). Values it cannot derive are left
    as they are for :func:`validate` to report."""
    from hpcmarl import envs

    try:
        entry = envs.entry(cfg.env.name, cfg.env.kwargs)
    except envs.EnvError:
        return {}
    out: Dict[str, Any] = {}

    def put(obj, attr, key, value):
        setattr(obj, attr, value)
        out[key] = value

    p = cfg.algo
    from hpcmarl.algos import base

    if getattr(p, "reward", None) == "auto":
        put(p, "reward", "algo.reward", "team" if entry.cooperative else "individual")
    if base.get(p.name).needs_episode_limit and getattr(p, "episode_limit", None) == 0:
        limit = {**entry.kwargs, **cfg.env.kwargs}.get("max_cycles")
        if isinstance(limit, int) and limit >= 1:
            put(p, "episode_limit", "algo.episode_limit", limit)
    lg = cfg.league
    if lg.enabled and lg.groups:
        pmap = cfg.policy_map if cfg.policy_map is not None else entry.groups
        for i, g in enumerate(lg.groups):
            if not g.policy_group:
                put(g, "policy_group", f"league.groups.{i}.policy_group", next(iter(pmap)))
            if g.strategy == "exploiter" and not g.exploits:
                put(g, "exploits", f"league.groups.{i}.exploits", lg.groups[0].name)
        if lg.seats == "auto":
            put(lg, "seats", "league.seats", "per_group" if len({g.policy_group for g in lg.groups}) > 1
                else "per_team" if entry.teams else "per_agent")
        if lg.outcome == "auto":
            put(lg, "outcome", "league.outcome", "cooperative" if entry.cooperative else "competitive")
        if lg.eval_baselines is None:
            put(lg, "eval_baselines", "league.eval_baselines",
                [b for b, game in BASELINES.items() if game in (None, cfg.env.name)])
    return out


def from_dict(data: dict) -> Config:
    """Build and validate a config from a mapping. Its ``plugins`` are imported and a ``module:callable`` ``env.name``
    probed only when allowed (:mod:`hpcmarl.trust`; :func:`load_config` allows what the person's file names): a
    mapping read from a file (a checkpoint's stored config) makes nothing run unless ``--plugins``/``--env-import``
    named it (:class:`hpcmarl.trust.NotAllowed` otherwise, before any import)."""
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(m, str) for m in plugins):
        raise ConfigError(f"config key 'plugins': expected a list of module names, got {plugins!r}")
    from hpcmarl.algos.base import load_plugins

    try:
        load_plugins(plugins)  # before the algo section is read: they register algorithms
    except ImportError as e:
        raise ConfigError(str(e)) from None
    cfg = _build(Config, data, "")
    cfg.derived = derive(cfg)  # not a schema field: what to_yaml marks as derived
    validate(cfg)
    return cfg


VARIANT_KEYS = {"obs_scale", "reward_scale", "env_kwargs"}


def delay_factors(spec, n_actors: int) -> List[float]:
    """Per-actor compute-time factors h_i from ``actors.delay`` (see :class:`ActorConfig`)."""
    if isinstance(spec, list):
        _check(all(isinstance(h, (int, float)) and h >= 0 for h in spec), "actors.delay", "factors must be numbers >= 0")
        _check(len(spec) >= 1, "actors.delay", "must list at least one factor")
        return [float(spec[i % len(spec)]) for i in range(n_actors)]
    if spec == "equal":
        return [1.0] * n_actors
    if spec == "sqrt":
        return [float(np.sqrt(i + 1)) for i in range(n_actors)]
    m = re.fullmatch(r"straggler:(\d+(\.\d*)?)", str(spec))
    _check(m is not None, "actors.delay", f"expected a list of factors, 'equal', 'sqrt' or 'straggler:K', got {spec!r}")
    return [1.0] * (n_actors - 1) + [float(m.group(1))]


def check(cond: bool, key: str, msg: str):
    """Raise :class:`ConfigError` naming ``key`` unless ``cond`` (for algorithm configs' ``validate`` too)."""
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


_check = check


def validate(cfg: Config) -> None:
    """Checks of values and combinations that the types alone do not catch."""
    from hpcmarl import envs  # local import: envs pulls in PettingZoo lazily

    # the run directory is <output.root>/<name>: a name never leaves output.root (run_dir= is the way to elsewhere)
    _check(bool(cfg.name) and cfg.name not in (".", "..") and not any(c in cfg.name for c in "/\\\0")
           and not cfg.name.startswith("-"), "name", f"must be a plain directory name inside output.root (not '.' or "
           f"'..', without '/', '\\' or NUL, not starting with '-'; set run_dir for another place), got {cfg.name!r}")
    _check(cfg.seed >= 0, "seed", "must be >= 0")
    try:
        envs.entry(cfg.env.name, cfg.env.kwargs)  # a "module:callable" path is constructed once here
    except envs.EnvError as e:
        raise ConfigError(str(e) if str(e).startswith("env.") else f"config key 'env.name': {e}") from None
    _check(cfg.env.num_envs >= 1, "env.num_envs", "must be >= 1")
    _check(cfg.topology.learners >= 1, "topology.learners", "must be >= 1")
    a = cfg.topology.actors
    _check(a == "auto" or (isinstance(a, int) and a >= 0), "topology.actors", "must be 'auto' or an integer >= 0")
    if cfg.policy_map is not None:
        _check(len(cfg.policy_map) >= 1, "policy_map", "must name at least one group")
        for g, pats in cfg.policy_map.items():
            _check(len(pats) >= 1, f"policy_map.{g}", "must list at least one agent name or pattern")
    p = cfg.algo
    from hpcmarl.algos import base

    algo = base.get(p.name)  # its capabilities answer what the core would otherwise ask of a name
    if algo.flow != "gradients":
        _check(isinstance(getattr(p, "unroll_length", None), int) and p.unroll_length >= 1, "algo.unroll_length",
               "the rollout flows need an integer unroll_length >= 1 in the algorithm's config")
    if callable(getattr(p, "validate", None)):  # the algorithm config's own checks (ConfigError naming the key)
        p.validate(cfg)
    if algo.needs_episode_limit:
        _check(isinstance(getattr(p, "episode_limit", None), int) and p.episode_limit >= 1, "algo.episode_limit",
               f"{cfg.env.name} has no max_cycles; set the longest episode segment to store")
    validate_league(cfg, envs)
    delay_factors(cfg.actors.delay, 1)  # raises ConfigError for a bad spec
    _check(cfg.actors.step_delay_s >= 0, "actors.step_delay_s", "must be >= 0")
    _check(cfg.actors.env_errors in ("reset", "abort"), "actors.env_errors", "must be reset or abort")
    _check(cfg.actors.max_env_errors >= 0, "actors.max_env_errors", "must be >= 0")
    if cfg.actors.overlap:
        _check(algo.flow == "rollouts", "actors.overlap", f"applies to the synchronous rollout flow, not to {p.name}'s")
        _check(algo.overlap, "actors.overlap", f"{p.name} does not train on unrolls of the previous weights "
               f"(its registry entry has overlap=False)")
        _check(not cfg.league.enabled, "actors.overlap", "is not available in league mode")
        _check(not getattr(p, "recurrent", False) or algo.recurrent_overlap, "actors.overlap",
               f"recurrent {p.name} replays the GRU with the weights that made the unroll; use one or the other")
    for i, v in enumerate(cfg.actors.variants):
        bad = set(v) - VARIANT_KEYS
        _check(not bad, f"actors.variants[{i}]", f"unknown key(s) {sorted(bad)} (known: {', '.join(sorted(VARIANT_KEYS))})")
        for k in ("obs_scale", "reward_scale"):
            _check(isinstance(v.get(k, 1.0), (int, float)) and not isinstance(v.get(k, 1.0), bool),
                   f"actors.variants[{i}].{k}", "must be a number")
        _check(isinstance(v.get("env_kwargs", {}), dict), f"actors.variants[{i}].env_kwargs", "must be a mapping")
    _check(cfg.learner.backend in ("horovod", "mpi"), "learner.backend", "must be 'horovod' or 'mpi'")
    dev = cfg.learner.device
    _check(dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev) is not None, "learner.device",
           "must be auto, cpu, cuda or cuda:N")
    for key, t in (("learner.threads", cfg.learner.threads), ("actors.threads", cfg.actors.threads)):
        _check(t == "auto" or (isinstance(t, int) and t >= 1), key, "must be 'auto' or an integer >= 1")
    _check(cfg.train.total_env_steps >= 1, "train.total_env_steps", "must be >= 1")
    _check(cfg.train.max_updates >= 0, "train.max_updates", "must be >= 0")
    _check(cfg.train.max_wall_s >= 0, "train.max_wall_s", "must be >= 0")
    o = cfg.output
    _check(0.0 <= o.trajectory_fraction <= 1.0, "output.trajectory_fraction", "must be in [0, 1]")
    _check(o.checkpoint_every >= 1, "output.checkpoint_every", "must be >= 1")
    _check(o.keep_checkpoints >= 1, "output.keep_checkpoints", "must be >= 1")
    _check(o.flush_s > 0, "output.flush_s", "must be > 0")
    _check(o.progress_s > 0, "output.progress_s", "must be > 0")
    _check(o.episode_window >= 1, "output.episode_window", "must be >= 1")
    _check(o.min_free_mb >= 0, "output.min_free_mb", "must be >= 0")
    _check(cfg.runtime.timeout_s > 0, "runtime.timeout_s", "must be > 0")
    _check(cfg.runtime.startup_timeout_s > 0, "runtime.startup_timeout_s", "must be > 0")


LEAGUE_STRATEGIES = ("self_play", "uniform", "pfsp", "meta_nash", "exploiter")
BASELINES = {"random": None, "lookahead": "connect_four_v3", "charge": "battle_v4"}  # scripted players -> the
# game they play (None: any game with discrete actions)


def validate_league(cfg: Config, envs) -> None:
    lg, entry = cfg.league, envs.entry(cfg.env.name, cfg.env.kwargs)
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
        _check(g.pfsp_weighting in ("squared", "variance", "linear"), f"{key}.pfsp_weighting",
               "must be squared, variance or linear")
        if g.strategy == "exploiter":
            _check(g.exploits in names and g.exploits != g.name, f"{key}.exploits",
                   f"must name another learner group (groups: {', '.join(names)})")
        _check(g.snapshot_every >= 0 and g.snapshot_min_updates >= 1, f"{key}.snapshot_every",
               "snapshot_every must be >= 0 and snapshot_min_updates >= 1")
        _check(0 <= g.snapshot_win_rate <= 1, f"{key}.snapshot_win_rate", "must be in [0, 1] (0 = off)")
        _check(g.snapshot_every > 0 or g.snapshot_win_rate > 0, f"{key}.snapshot_every",
               "set snapshot_every or snapshot_win_rate, or the pool never grows")
    _check(lg.seats in ("per_agent", "per_team", "per_group"), "league.seats",
           "must be auto, per_agent, per_team or per_group")
    _check(lg.seats != "per_team" or entry.teams, "league.seats",
           f"per_team needs a team game; {cfg.env.name} has no teams (team games: "
           f"{', '.join(n for n, e in envs.REGISTRY.items() if e.teams)})")
    _check(lg.outcome in ("competitive", "cooperative"), "league.outcome",
           "must be auto, competitive or cooperative")
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
    _check(lg.meta_game in ("win_rate", "return", "exact"), "league.meta_game", "must be win_rate, return or exact")
    for key, on in (("exploitability_every", lg.exploitability_every), ("meta_game", lg.meta_game == "exact")):
        _check(not on or entry.factory.startswith("hpcmarl.envs.openspiel:"), f"league.{key}",
               f"exact values need an OpenSpiel game (kuhn_poker, leduc_poker), not {cfg.env.name}")
    for k in ("eval_games", "eval_pool", "eval_every", "eval_opening", "pool_max", "exploitability_every"):
        _check(getattr(lg, k) >= 0, f"league.{k}", "must be >= 0")
    for key in ("pool_baselines", "eval_baselines"):
        for b in getattr(lg, key):
            _check(b in BASELINES, f"league.{key}", f"unknown baseline {b!r} (known: {', '.join(BASELINES)})")
            _check(BASELINES[b] in (None, cfg.env.name), f"league.{key}", f"the {b} baseline plays {BASELINES[b]} only")
