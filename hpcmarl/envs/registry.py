"""The environment registry: short names, ``"module:callable"`` paths, construction and policy groups (no MPI).

A registered name maps to an :class:`EnvEntry` (factory path, default policy map and constructor arguments, what
league mode needs to know about the game); any other ``"module:callable"`` returning a PettingZoo parallel or AEC env
is an environment too (:func:`entry` probes it once: groups by agent-name prefix), imported only when the person
named it (:mod:`hpcmarl.trust`: their config file or ``--env-import``; a path read from a file is refused before any
import). The reserved prefixes ``jaxmarl:`` and ``vmas:`` (:data:`BATCHED`) name batched simulators' environments
instead: they count as registered (no trust needed) and are built by :mod:`hpcmarl.envs.make`, never here.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import json
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvEntry:
    factory: str  # "module:callable" returning a PettingZoo parallel or AEC env
    groups: Dict[str, List[str]]  # default policy map
    kwargs: Dict = field(default_factory=dict)  # default constructor arguments
    description: str = ""
    turn_based: bool = False  # an AEC game whose agents move one at a time (league mode steps it directly)
    cooperative: bool = True  # all agents work towards one goal (league mode: partners, not opponents)
    teams: Dict[str, List[str]] = field(default_factory=dict)  # sides of a team game (agent names or patterns)
    install: str = ""  # how to get the package the factory imports, when it is not a dependency of hpcmarl
    survivors: str = ""  # "module:callable(env) -> {team: agents alive}": the team with more left wins (league)
    episode_limit: int = 0  # the longest episode, where no max_cycles argument says it (batched envs' time limit)


REGISTRY: Dict[str, EnvEntry] = {
    "simple_spread_v3": EnvEntry("mpe2.simple_spread_v3:parallel_env", {"agent": ["agent_*"]},
                                 {"N": 3, "max_cycles": 25}, "MPE cooperative navigation (default)"),
    "simple_reference_v3": EnvEntry("mpe2.simple_reference_v3:parallel_env", {"agent": ["agent_*"]},
                                    {"max_cycles": 25}, "MPE two-agent communication + navigation"),
    "simple_tag_v3": EnvEntry("mpe2.simple_tag_v3:parallel_env",
                              {"adversary": ["adversary_*"], "agent": ["agent_*"]},
                              {"max_cycles": 25}, "MPE predator-prey: adversaries vs. good agent", cooperative=False),
    "connect_four_v3": EnvEntry("pettingzoo.classic.connect_four_v3:env", {"player": ["player_*"]}, {},
                                "PettingZoo classic Connect Four: turn-based, action masks (league mode)", True, False),
    "kuhn_poker": EnvEntry("hpcmarl.envs.openspiel:game", {"player": ["player_*"]}, {"game": "kuhn_poker"},
                           "OpenSpiel Kuhn poker: 3 cards, turn-based, exact exploitability (league mode)", True, False,
                           install="pip install open_spiel"),
    "leduc_poker": EnvEntry("hpcmarl.envs.openspiel:game", {"player": ["player_*"]}, {"game": "leduc_poker"},
                            "OpenSpiel Leduc poker: 6 cards, 2 rounds, exact exploitability (league mode)", True, False,
                            install="pip install open_spiel"),
    "battle_v4": EnvEntry("magent2.environments.battle_v4:parallel_env", {"soldier": ["red_*", "blue_*"]},
                          {"map_size": 16, "max_cycles": 200},
                          "MAgent2 battle, small map: two teams of 6 on a 16x16 grid, 13x13x5 views (league mode)",
                          cooperative=False, teams={"red": ["red_*"], "blue": ["blue_*"]},
                          install="pip install --no-deps magent2==0.3.4 (tools/bootstrap.sh does)",
                          survivors="hpcmarl.envs:magent_survivors"),
    "lbf": EnvEntry("hpcmarl.envs.adapters:lbf", {"agent": ["agent_*"]},
                    {"task": "Foraging-8x8-2p-2f-coop-v3", "max_cycles": 50},
                    "Level-Based Foraging (EPyMARL benchmark), time limit 50; env.kwargs.task picks the map",
                    install="pip install lbforaging==2.0.0"),
    "rware": EnvEntry("hpcmarl.envs.adapters:rware", {"agent": ["agent_*"]},
                      {"task": "rware-tiny-2ag-v2", "max_cycles": 500},
                      "Multi-Robot Warehouse (EPyMARL benchmark), time limit 500; env.kwargs.task picks the layout",
                      install="pip install rware==2.0.0"),
    "pursuit_v5": EnvEntry("pettingzoo.sisl.pursuit_v5:parallel_env", {"pursuer": ["pursuer_*"]},
                           {"max_cycles": 500}, "SISL pursuit: 8 pursuers, 7x7x3 local views"),
}
BUILTIN_ENVS = frozenset(REGISTRY)  # register_env replaces none of these unless told

# reserved prefixes: "<prefix>:<task>" names a batched simulator's environment (the adapter class of the module,
# imported by hpcmarl.envs.make when the env is first built), resolved before the "module:callable" path rule and,
# like the registered names, built without --env-import (hpcmarl.trust): the adapter is hpcmarl's own code
BATCHED = {"jaxmarl": "hpcmarl.envs.jaxmarl:JaxMarlEnv", "vmas": "hpcmarl.envs.vmas:VmasEnv"}
BATCHED_EXTRAS = {"jaxmarl": "jax", "vmas": "vmas"}  # the setup.py extra that installs each simulator


def batched_prefix(name: str) -> Optional[str]:
    """The reserved prefix of a batched env name (``"jaxmarl"`` for ``"jaxmarl:MPE_simple_spread_v3"``), else None."""
    prefix, sep, _ = str(name).partition(":")
    return prefix if sep and prefix in BATCHED else None


def _refuse_batched(name: str) -> None:
    prefix = batched_prefix(name)
    if prefix is not None:
        raise EnvError(f"env.name {name!r}: a batched {prefix} environment has no PettingZoo object, which this needs "
                       f"(league mode, match, exploitability and --render-gif play PettingZoo environments)")


class EnvError(ValueError):
    pass


def magent_survivors(env) -> Dict[str, int]:
    """Agents alive per team of a MAgent2 game (its handles in team order: battle_v4's red, blue). MAgent2 ends
    the game when a team is wiped out and then reports every agent terminated, so the engine is asked."""
    raw = env.unwrapped
    names = list(dict.fromkeys(a.rsplit("_", 1)[0] for a in raw.possible_agents))
    return {n: int(raw.env.get_num(h)) for n, h in zip(names, raw.handles)}


def load(path: str) -> Callable:
    """``"module:attribute"`` -> the attribute."""
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)


def prefix_groups(agents: List[str]) -> Dict[str, List[str]]:
    """Default policy map of an unregistered env: agents grouped by name prefix (``adversary_0, agent_0, agent_1``
    -> ``adversary: [adversary_0]``, ``agent: [agent_0, agent_1]``); a name without a ``_<number>`` suffix is its own
    group."""
    groups: Dict[str, List[str]] = {}
    for a in agents:
        stem, _, num = a.rpartition("_")
        groups.setdefault(stem if stem and num.isdigit() else a, []).append(a)
    return groups


def _load_factory(name: str, entry: Optional[EnvEntry]) -> Callable:
    if entry is not None:
        try:
            return load(entry.factory)
        except ModuleNotFoundError as e:
            raise EnvError(f"{name} needs the Python package {e.name!r}: "
                           f"{entry.install or 'pip install ' + str(e.name)}") from None
    mod, _, attr = name.partition(":")
    if not mod or not attr:
        raise EnvError(f"env.name {name!r}: expected a registered name or 'module:callable'")
    from hpcmarl import trust

    trust.require(name, "env")  # nothing imported or called unless the person named it (NotAllowed, one line)

    try:
        module = trust.import_user_module(mod)
    except trust.NotAllowed:
        raise
    except Exception as e:
        raise EnvError(f"env.name {name!r}: cannot import {mod!r} ({type(e).__name__}: {e})") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise EnvError(f"env.name {name!r}: module {mod!r} has no callable {attr!r}")
    return factory


def make_env(name: str, kwargs: Optional[dict] = None, render_mode: Optional[str] = None):
    """Construct one PettingZoo environment (AEC or parallel, as the library returns it) by registry name or by
    ``"module:callable"`` path (a batched env name, ``jaxmarl:``/``vmas:``, raises: :mod:`hpcmarl.envs.make`)."""
    _refuse_batched(name)
    entry = REGISTRY.get(name)
    if entry is None and ":" not in name:
        raise EnvError(f"unknown environment {name!r} (known: {', '.join(sorted(REGISTRY))}; or 'module:callable' "
                       f"returning a PettingZoo env)")
    kw = {**(entry.kwargs if entry else {}), **(kwargs or {})}
    if render_mode is not None:
        kw["render_mode"] = render_mode
    factory = _load_factory(name, entry)
    try:
        env = factory(**kw)
    except TypeError as e:
        raise EnvError(f"env.kwargs for {name}: {e}") from None
    except Exception as e:
        if entry is not None:
            raise
        raise EnvError(f"env.name {name!r}: calling it raised {type(e).__name__}: {e}") from None
    if entry is None:
        from pettingzoo.utils.env import AECEnv, ParallelEnv

        if not isinstance(env, (AECEnv, ParallelEnv)):
            raise EnvError(f"env.name {name!r} returned {type(env).__name__}, not a PettingZoo AEC or parallel env")
    return env


def _probe(env, name: str) -> Tuple[Dict[str, List[str]], bool]:
    """``(default groups by agent-name prefix, turn-based)`` of a constructed env (closed afterwards)."""
    from pettingzoo.utils.env import AECEnv

    try:
        agents = list(env.possible_agents)
        turn_based = isinstance(env, AECEnv) and not env.metadata.get("is_parallelizable", False)
    finally:
        env.close()
    if not agents:
        raise EnvError(f"env.name {name!r}: the env has no possible_agents")
    return prefix_groups(agents), turn_based


@functools.lru_cache(maxsize=None)
def _path_entry(name: str, kwargs_key: str) -> EnvEntry:
    groups, turn_based = _probe(make_env(name, json.loads(kwargs_key)), name)
    # one default group = all agents work towards one goal; several groups (adversaries, predators/prey) = not
    return EnvEntry(name, {g: list(a) for g, a in groups.items()}, {}, f"user environment {name}",
                    turn_based=turn_based, cooperative=len(groups) == 1)


def entry(name: str, kwargs: Optional[dict] = None) -> EnvEntry:
    """The registry entry of ``name``; for a ``"module:callable"`` path one made by constructing the env once
    (default groups by agent-name prefix, turn-based when it is an AEC env that is not parallelizable, cooperative
    when it has one group). Raises :class:`EnvError` with a one-line message naming the path."""
    if name in REGISTRY:
        return REGISTRY[name]
    _refuse_batched(name)  # hpcmarl.envs.entry (hpcmarl.envs.make) answers for batched envs
    if ":" not in name:
        make_env(name)  # raises the "unknown environment" error
    return _path_entry(name, json.dumps(kwargs or {}, sort_keys=True, default=str))


def register_env(name: str, factory: Union[str, Callable], groups: Optional[Dict[str, List[str]]] = None,
                 kwargs: Optional[dict] = None, description: str = "", replace: bool = False, **options) -> EnvEntry:
    """Register an environment under a short name, as the built-ins are: a config's ``env.name: <name>`` then makes
    it with ``factory(**{**kwargs, **env.kwargs})``. ``factory``: a module-level callable returning a PettingZoo
    parallel or AEC env, or its ``"module:callable"`` path (imported when the env is first made); either way the entry
    keeps the path. ``groups``: the default policy map (``{group: [agent names or fnmatch patterns]}``); omitted, the
    env is made once now and its agents grouped by name prefix, ``turn_based`` and ``cooperative`` derived as for a
    ``module:callable`` env name. ``options``: the other :class:`EnvEntry` fields (``turn_based``, ``cooperative``,
    ``teams``, ``install``, ``survivors``, ``episode_limit``). Every rank needs the entry: register it in a module the
    config's ``plugins`` lists. Registering the same entry again is a no-op. Returns the entry.

    Raises:
        ValueError: ``name`` is empty or holds ``:`` or spaces; ``name`` is taken by another entry (a built-in
            included) and ``replace`` is false; ``factory`` is neither a ``"module:callable"`` path nor a callable
            reachable as one (a lambda, a nested function); an unknown option.
    """
    if not isinstance(name, str) or not name or ":" in name or name != "".join(name.split()):
        raise ValueError(f"register_env: bad name {name!r} (a short name without ':' or spaces)")
    if callable(factory):
        path = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
        try:
            same = load(path) is factory
        except (ImportError, AttributeError, ValueError):
            same = False
        if not same:
            raise ValueError(f"register_env({name!r}): {factory!r} is not reachable as 'module:callable' (define it "
                             f"at module level, or pass its path)")
    else:
        path = str(factory)
        mod, _, attr = path.partition(":")
        if not (mod and attr and all(p.isidentifier() for p in mod.split(".")) and attr.isidentifier()):
            raise ValueError(f"register_env({name!r}): factory {factory!r} is not a 'module:callable' path")
    unknown = set(options) - {"turn_based", "cooperative", "teams", "install", "survivors", "episode_limit"}
    if unknown:
        raise ValueError(f"register_env({name!r}): unknown option(s) {sorted(unknown)}")
    if groups is None:
        try:
            env = load(path)(**(kwargs or {}))
        except Exception as e:
            raise EnvError(f"register_env({name!r}): making the env to find its agents raised "
                           f"{type(e).__name__}: {e} (or pass groups=)") from None
        found, turn_based = _probe(env, name)
        groups = found
        options = {"turn_based": turn_based, "cooperative": len(found) == 1, **options}
    new = EnvEntry(path, {g: list(a) for g, a in groups.items()}, dict(kwargs or {}), description, **options)
    old = REGISTRY.get(name)
    if old is not None and old != new and not replace:
        raise ValueError(f"environment {name!r} is already registered{' (built in)' if name in BUILTIN_ENVS else ''}"
                         f": {old.factory} (pass replace=True to redefine it)")
    REGISTRY[name] = new
    return new


def make_parallel_env(name: str, kwargs: Optional[dict] = None, render_mode: Optional[str] = None,
                      checks: bool = False):
    """Construct one PettingZoo parallel environment by registry name. Unless ``checks``, a parallel env converted
    from an AEC one loses the outer PettingZoo wrappers that only *check* calls (``OrderEnforcingWrapper``: reset
    before step; ``AssertOutOfBoundsWrapper``: actions inside the space): hpcmarl always resets first and its policies
    only emit actions of the space, and every step of the converted env went through both wrappers' ``__getattr__``
    many times (MPE: 1.6x the env steps/s without them, the same trajectories; tests/unit/test_envs.py). Wrappers
    that change behaviour (clipping actions, for instance) and everything below them stay."""
    if entry(name, kwargs).turn_based:
        raise EnvError(f"{name} is a turn-based game: train it in league mode (league.enabled: true), whose "
                       f"actors step it as an AEC environment")
    env = make_env(name, kwargs, render_mode)
    from pettingzoo.utils.conversions import aec_to_parallel_wrapper
    from pettingzoo.utils.env import AECEnv

    if isinstance(env, AECEnv):
        from pettingzoo.utils.conversions import aec_to_parallel

        env = aec_to_parallel(env if checks else _without_checks(env))  # raises for AEC games not valid as parallel
    elif not checks and type(env) is aec_to_parallel_wrapper:
        inner = _without_checks(env.aec_env)
        if inner is not env.aec_env:
            env = aec_to_parallel_wrapper(inner)
    return env


def _without_checks(aec):
    """``aec`` without its outermost check-only PettingZoo wrappers (exact classes: a subclass may do more)."""
    from pettingzoo.utils.wrappers import AssertOutOfBoundsWrapper, OrderEnforcingWrapper

    while type(aec) in (OrderEnforcingWrapper, AssertOutOfBoundsWrapper):
        aec = aec.env
    return aec


def resolve_groups(agents: List[str], policy_map: Optional[Dict[str, List[str]]],
                   env_name: str) -> Dict[str, List[str]]:
    """Assign every agent to exactly one group: exact names first, then fnmatch patterns, in map order."""
    if policy_map is not None:
        pmap = policy_map
    else:
        pmap = REGISTRY[env_name].groups if env_name in REGISTRY else prefix_groups(agents)
    groups: Dict[str, List[str]] = {g: [] for g in pmap}
    for agent in agents:
        owner = next((g for g, pats in pmap.items() if agent in pats), None)
        if owner is None:
            owner = next((g for g, pats in pmap.items() if any(fnmatch.fnmatchcase(agent, p) for p in pats)), None)
        if owner is None:
            raise EnvError(f"policy_map: agent {agent!r} of {env_name} matches no group "
                           f"(groups: {dict(pmap)}; agents: {agents})")
        groups[owner].append(agent)
    empty = [g for g, a in groups.items() if not a]
    if empty:
        raise EnvError(f"policy_map: group(s) {empty} match no agent of {env_name} (agents: {agents})")
    return groups
