"""Typed run configuration: dataclass schema + YAML files + dotted ``key=value`` overrides.

Everything is validated here, before any MPI work starts. Every error names the offending key and is
raised as :class:`ConfigError` (the CLI turns it into a one-line message and exit status 2). The generic
dict -> dataclass machinery is :mod:`hpcmarl.typedconfig`, the ``league`` section :mod:`hpcmarl.league.config`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Union

import numpy as np

from hpcmarl.league.config import BASELINES, LEAGUE_STRATEGIES, LeagueConfig, LeagueGroupConfig, validate_league  # noqa: F401 - re-exported
from hpcmarl.typedconfig import (  # noqa: F401
    ConfigError,
    _build,
    apply_overrides,
    brief,
    check,
    parse_override,
    safe_yaml,
    to_dict,
    to_yaml,
)

LOGGERS = ("tensorboard", "wandb", "mlflow")  # output.loggers (hpcmarl.tracking)

# --------------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------------
@dataclass
class EnvConfig:
    """The environment every actor steps (``num_envs`` copies each)."""

    name: str = "simple_spread_v3"  # registered environment (see `hpcmarl.envs.REGISTRY`), `module:callable`, or a
    # batched simulator's `jaxmarl:<env id>` / `vmas:<scenario>` (docs/environments/batched.md)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to the env constructor
    num_envs: int = 8  # environment copies stepped together by each actor (one batched call for jaxmarl:/vmas:)
    parts: int = 1  # jaxmarl: envs: the copies in this many equal parts stepped in turn, each part's env step running
    # while the policy acts for the next part (double-buffered sampling; 2 keeps both cores of an actor busy;
    # docs/environments/batched.md#double-buffered-sampling); must divide num_envs


@dataclass
class TopologyConfig:
    """How the MPI ranks split into learners and actors (league mode: from ``league.groups`` instead)."""

    learners: int = 1  # L: ranks 0..L-1 are learners
    actors: Union[int, str] = "auto"  # number of actor ranks, or "auto" = world size - learners


@dataclass
class LearnerConfig:
    """The learner ranks: gradient combination, device, threads."""

    backend: Literal["horovod", "mpi"] = "horovod"  # horovod | mpi: how learners combine gradients
    device: str = "auto"  # auto (CUDA when torch sees a GPU) | cpu | cuda | cuda:N
    threads: Union[int, str] = "auto"  # torch threads per rank; auto = cores on the node / ranks on the node
    update_delay_s: float = 0.0  # sleep added to every learner update, seconds (0 = none): injected cost for
    # experiments and the sizing model's check (counted in time/update), as actors.step_delay_s is on the actors
    compile: Union[bool, str] = "auto"  # compile the update with torch.compile (PPO's written-out gradient step):
    # auto = in runs of >= 10,000 gradient steps without a target return or a wall limit under 10 minutes, where
    # compiling (20-30 s with an empty cache, 3 s warm, on 2 cores) pays; Inductor's cache is
    # ~/.cache/hpcmarl/inductor, private and checked (docs/algorithms/ppo.md)


@dataclass
class ActorConfig:
    """The actor ranks: threads, error handling, overlap with the learner, and injected heterogeneity."""

    threads: Union[int, str] = 1  # torch threads per actor rank; auto = cores on the node / ranks on the node
    delay: Union[str, List[float]] = "equal"  # heterogeneity for experiments: actor i sleeps step_delay_s * h_i
    # after every env step, where h comes from `delay`: a list of per-actor factors, "equal" (all 1), "sqrt"
    # (h_i = sqrt(i+1)) or "straggler:K" (the last actor K times slower)
    step_delay_s: float = 0.0  # base sleep after every env step (one step of all num_envs copies), seconds, scaled
    # per actor by `delay` (0 = none); every flow, counted as env time (time/actor_env)
    variants: List[Dict[str, Any]] = field(default_factory=list)  # per-actor environment variants, actor i uses
    # variants[i % len]: mappings with obs_scale (e.g. -1 to negate observations, as in the paper's
    # heterogeneous-environment experiment), reward_scale, env_kwargs
    env_errors: Literal["reset", "abort"] = "reset"  # an exception from one env copy: reset = re-create it, discard its
    # episode and go on (logged, counted as env_errors); abort = end the job
    max_env_errors: int = 100  # env errors each actor tolerates (env_errors: reset); one more ends the job
    overlap: bool = False  # synchronous rollout flow: while the learner updates, actors collect the next unroll with
    # the weights they hold (one-step-stale data: the learner trains on unrolls of version v-1 or v; policy lag <= 1)


@dataclass
class TrainConfig:
    """When training stops: the first limit reached ends the run (a final checkpoint is written)."""

    total_env_steps: int = 1_000_000  # stop when this many env steps (summed over actors) were taken
    max_updates: int = 0  # stop after this many updates (0 = no limit)
    max_wall_s: float = 0.0  # 0 = no limit; stop after this much wall-clock time
    wall_exit_requeue: bool = False  # a stop by max_wall_s exits 75 like a preemption, so a Slurm job that uses its
    # allocation as a time slice requeues and resumes (default: exit 0)
    target_return: Optional[float] = None  # if set, stop when the mean return of every group reaches it


@dataclass
class OutputConfig:
    """What a run writes under its run directory, and how often."""

    root: str = "runs"  # run_dir defaults to <root>/<name>
    trajectories: bool = True  # write trajectories/actor-NNNNN.h5
    trajectory_fraction: float = 1.0  # fraction of episodes written to the trajectory files
    checkpoint_every: int = 50  # updates between checkpoints (a final one is always written)
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    flush_s: float = 5.0  # HDF5 files are flushed at least this often
    progress_s: float = 5.0  # console progress line interval
    episode_window: int = 500  # episodes averaged for the progress line and the target_return check
    min_free_mb: float = 64.0  # every write first checks that this much space stays free on the run directory's
    # file system; below it the run stops with a one-line error (the newest checkpoint stays complete)
    loggers: List[str] = field(default_factory=list)  # live loggers the lead learner also writes each metrics row
    # to (step = env steps): tensorboard (RUN/tensorboard), wandb (RUN/wandb), mlflow; pip install -e ".[tracking]"
    wandb_mode: Literal["offline", "online"] = "offline"  # offline (upload later: wandb sync RUN/wandb/offline-run-*) |
    # online
    wandb_project: str = "hpcmarl"  # the W&B project of the run
    mlflow_uri: str = ""  # MLflow tracking URI; "" = a SQLite store inside the run: sqlite:///RUN/mlflow/mlflow.db
    mlflow_experiment: str = "hpcmarl"  # the MLflow experiment the run is logged under


@dataclass
class EvalConfig:
    """Evaluation protocol: the lead learner plays the current policy on fixed seeds, without training on it."""

    every_env_steps: int = 0  # evaluate each time the run passes a multiple of this many env steps (0 = never),
    # and once at the end (the final checkpoint's weights): run.h5 /eval, /eval_episodes and the loggers
    episodes: int = 10  # episodes per evaluation
    greedy: bool = False  # play the most likely action (default: sample, as in training)
    seed: int = 12345  # env and sampling seed of every evaluation (the same episodes each time)
    num_envs: int = 0  # env copies stepped together (as `hpcmarl evaluate --num-envs`); 0 = eval.episodes: every
    # episode of an evaluation at once (the absolute metric's 10 x episodes in 10 rounds)
    absolute: bool = True  # at the end, re-evaluate the best-evaluated policy with 10 x episodes (marl-eval's
    # "absolute metric"); the best policy is kept in RUN/eval/ whatever output.keep_checkpoints prunes


@dataclass
class RuntimeConfig:
    """Time limits that turn a hang into an error (the job is aborted with a message naming the rank)."""

    timeout_s: float = 300.0  # longest any rank waits on a message before aborting the job
    startup_timeout_s: float = 600.0  # timeout_s during startup (until every rank agreed that startup succeeded), and
    # for the first update where the learners compile it (learner.compile)
    max_requeues: int = 3  # under Slurm, a job that lost a rank (a node died, froze or was cut off) exits 69 and
    # slurm/step.sh requeues it, this many times per job (SLURM_RESTART_COUNT); then it exits 1


@dataclass
class Config:
    """A run: its name, seed and plug-ins, and one section per part of the system."""

    name: str = "run"  # the run's name: its directory is <output.root>/<name> (a plain directory name)
    plugins: List[str] = field(default_factory=list)  # modules every rank imports first (they register algorithms)
    run_dir: Optional[str] = None  # the run directory; default <output.root>/<name> (under Slurm
    # <output.root>/<name>-<job id>, so a requeued job finds its own)
    seed: int = 0  # base seed: the actors' env and torch seeds and the learners' seeds derive from it
    fresh: bool = False  # start fresh even when run_dir holds a previous run (old files are moved aside)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy_map: Optional[Dict[str, List[str]]] = None  # group -> agent names or fnmatch patterns
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    algo: Any = field(default_factory=lambda: _algo_config(),  # hpcmarl.algos.base.DEFAULT
                      metadata={"build": lambda data, key: _build_algo(data, key)})  # its name picks its dataclass
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    actors: ActorConfig = field(default_factory=ActorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    league: LeagueConfig = field(default_factory=LeagueConfig)

    @property
    def resolved_run_dir(self) -> str:
        """``run_dir`` if given; under Slurm ``<root>/<name>-<jobid>`` (``-<arrayjob>_<task>`` for array
        tasks), so a requeued job (same id) finds its own directory; else ``<root>/<name>``."""
        if self.run_dir:
            return self.run_dir
        env = os.environ
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            return os.path.join(self.output.root,
                                f"{self.name}-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}")
        if env.get("SLURM_JOB_ID"):
            return os.path.join(self.output.root, f"{self.name}-{env['SLURM_JOB_ID']}")
        return os.path.join(self.output.root, self.name)


# --------------------------------------------------------------------------------------------------
# the algo section: its dataclass comes from the algorithm registry
# --------------------------------------------------------------------------------------------------
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
        raise ConfigError(f"config key '{key}': expected a mapping, got {brief(data)}")
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


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------
def load_dict(path: Optional[str]) -> dict:
    if path is None:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = safe_yaml(f, f"config file {path}")
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

    data = apply_overrides(load_dict(path), overrides, Config)
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
        limit = {**entry.kwargs, **cfg.env.kwargs}.get("max_cycles") or entry.episode_limit
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
        raise ConfigError(f"config key 'plugins': expected a list of module names, got {brief(plugins)}")
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
        _check(all(isinstance(h, (int, float)) and h >= 0 for h in spec), "actors.delay",
               "factors must be numbers >= 0")
        _check(len(spec) >= 1, "actors.delay", "must list at least one factor")
        return [float(spec[i % len(spec)]) for i in range(n_actors)]
    if spec == "equal":
        return [1.0] * n_actors
    if spec == "sqrt":
        return [float(np.sqrt(i + 1)) for i in range(n_actors)]
    m = re.fullmatch(r"straggler:(\d+(\.\d*)?)", str(spec))
    _check(m is not None, "actors.delay",
           f"expected a list of factors, 'equal', 'sqrt' or 'straggler:K', got {brief(spec)}")
    return [1.0] * (n_actors - 1) + [float(m.group(1))]


_check = check


def validate(cfg: Config) -> None:
    """Checks of values and combinations that the types alone do not catch."""
    from hpcmarl import envs  # local import: envs pulls in PettingZoo lazily

    # the run directory is <output.root>/<name>: a name never leaves output.root (run_dir= is the way to elsewhere)
    _check(bool(cfg.name) and cfg.name not in (".", "..") and not any(c in cfg.name for c in "/\\\0")
           and not cfg.name.startswith("-"), "name", f"must be a plain directory name inside output.root (not '.' or "
           f"'..', without '/', '\\' or NUL, not starting with '-'; set run_dir for another place), got "
           f"{brief(cfg.name)}")
    _check(cfg.seed >= 0, "seed", "must be >= 0")
    try:
        envs.entry(cfg.env.name, cfg.env.kwargs)  # a "module:callable" path is constructed once here
    except envs.EnvError as e:
        raise ConfigError(str(e) if str(e).startswith("env.") else f"config key 'env.name': {e}") from None
    _check(cfg.env.num_envs >= 1, "env.num_envs", "must be >= 1")
    _check(cfg.env.parts >= 1 and cfg.env.num_envs % cfg.env.parts == 0, "env.parts",
           f"must be >= 1 and divide env.num_envs ({cfg.env.num_envs}), got {cfg.env.parts}")
    _check(cfg.env.parts == 1 or cfg.env.name.startswith("jaxmarl:"), "env.parts",
           f"must be 1 for {cfg.env.name}: only jaxmarl: envs step asynchronously")
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
    flow = algo.data_flow()  # and its flow's
    if flow.unrolls:
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
    _check(cfg.learner.update_delay_s >= 0, "learner.update_delay_s", "must be >= 0")
    _check(cfg.actors.max_env_errors >= 0, "actors.max_env_errors", "must be >= 0")
    if cfg.actors.overlap:
        _check(flow.overlap, "actors.overlap", f"is not available on {p.name}'s {flow.name} flow (the synchronous "
               f"rollout flow has it)")
        _check(algo.overlap, "actors.overlap", f"{p.name} does not train on unrolls of the previous weights "
               f"(its registry entry has overlap=False)")
        _check(not cfg.league.enabled, "actors.overlap", "is not available in league mode")
        _check(not getattr(p, "recurrent", False) or algo.recurrent_overlap, "actors.overlap",
               f"recurrent {p.name} replays the GRU with the weights that made the unroll; use one or the other")
    for i, v in enumerate(cfg.actors.variants):
        bad = set(v) - VARIANT_KEYS
        _check(not bad, f"actors.variants[{i}]",
               f"unknown key(s) {sorted(bad)} (known: {', '.join(sorted(VARIANT_KEYS))})")
        for k in ("obs_scale", "reward_scale"):
            _check(isinstance(v.get(k, 1.0), (int, float)) and not isinstance(v.get(k, 1.0), bool),
                   f"actors.variants[{i}].{k}", "must be a number")
        _check(isinstance(v.get("env_kwargs", {}), dict), f"actors.variants[{i}].env_kwargs", "must be a mapping")
    dev = cfg.learner.device
    _check(dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev) is not None, "learner.device",
           "must be auto, cpu, cuda or cuda:N")
    _check(isinstance(cfg.learner.compile, bool) or cfg.learner.compile == "auto", "learner.compile",
           "must be true, false or auto")
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
    bad = [x for x in o.loggers if x not in LOGGERS]
    _check(not bad, "output.loggers", f"unknown logger(s) {bad} (known: {', '.join(LOGGERS)})")
    _check(len(set(o.loggers)) == len(o.loggers), "output.loggers", "names a logger twice")
    ev = cfg.eval
    _check(ev.every_env_steps >= 0, "eval.every_env_steps", "must be >= 0 (0 = no evaluation)")
    _check(ev.episodes >= 1, "eval.episodes", "must be >= 1")
    _check(ev.num_envs >= 0, "eval.num_envs", "must be >= 0 (0 = eval.episodes)")
    _check(not (ev.every_env_steps and cfg.league.enabled), "eval.every_env_steps",
           "does not apply in league mode: the league evaluates its snapshots itself (league.eval_*)")
    _check(cfg.runtime.timeout_s > 0, "runtime.timeout_s", "must be > 0")
    _check(cfg.runtime.startup_timeout_s > 0, "runtime.startup_timeout_s", "must be > 0")
    _check(cfg.runtime.max_requeues >= 0, "runtime.max_requeues", "must be >= 0")
