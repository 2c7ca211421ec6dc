"""Algorithm plug-ins: one :class:`Learner` interface and one registry.

An :class:`Algorithm` names everything the role shells need: the config dataclass of its ``algo.*`` keys, the
learner (plain torch, no MPI), the actor-side inference policy, the data flow (``rollouts``, ``rollouts_async`` or
``gradients``: docs/concepts/architecture.md#data-flows; :mod:`hpcmarl.flows` holds each as an object)
and what the algorithm can do (its capabilities: action kinds, league mode, overlapping actors, ...). The core looks
algorithms up here and asks the entry; it never names one (tests/unit/test_layout.py checks that no module outside
hpcmarl/algos/ does).

Built-in algorithms are registered below by import path, so this module imports neither torch nor MPI. A user's
algorithm registers itself when its module is imported; list that module in the config's ``plugins`` and every
rank imports it before the config is read (docs/extending/algorithm.md); a config read from a file (a
checkpoint's, by ``hpcmarl evaluate``) imports it only when the person names it (``--plugins``; :mod:`hpcmarl.trust`)::

    from hpcmarl.algos.base import Algorithm, register
    register(Algorithm("reinforce", ReinforceConfig, ReinforceLearner))
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Union, runtime_checkable

from hpcmarl import flows

DEFAULT = "mappo"  # the algorithm of a config that names none

register_flow = flows.register_flow  # data flows are their own registry (hpcmarl.flows); kept here for plug-ins


@runtime_checkable
class Learner(Protocol):
    """What a learner rank's shell calls. ``params``: every trained tensor, broadcast from learner 0 at startup and
    checksummed across learners; ``update`` consumes the unroll records (:mod:`hpcmarl.comm.spec`) its actors sent and
    averages gradients across learners with ``reduce_grads(params, weight)`` (``reduce_sums(array)`` sums small
    statistics across learners); ``policy_flat`` is the flat vector actors load into the inference policy;
    ``state_arrays``/``load_state_arrays`` are the checkpoint (plain arrays: no pickle); arrays named ``rng/…`` (its
    random state) and ``local/…`` (e.g. a replay buffer) are each learner's own, saved for every learner (the rest
    is the lead learner's), so a resume continues every learner exactly."""

    params: list

    def update(self, unrolls: list, reduce_grads: Optional[Callable] = None, reduce_sums: Optional[Callable] = None,
               env_steps: int = 0) -> Dict[str, float]: ...

    def policy_flat(self): ...

    def state_arrays(self) -> Dict[str, Any]: ...

    def load_state_arrays(self, arrays: Dict[str, Any]) -> None: ...


Ref = Union[str, Callable, type]  # an object or its "module:attribute" path (loaded when first used)


@dataclass(frozen=True)
class Algorithm:
    """``learner(spec, cfg, device, seed, init_seed)`` -> :class:`Learner` (``seed`` differs per learner rank,
    ``init_seed`` is the same on every learner of a group); ``inference(spec, cfg)`` -> the actors' policy
    (default: :class:`hpcmarl.models.Inference` with ``cfg.hidden``/``cfg.layers``, whose parameter layout
    ``policy_flat`` must match); ``flow``: which data flow (docs/concepts/architecture.md#data-flows) carries its data
    (a name registered in :mod:`hpcmarl.flows`).

    The remaining fields are its capabilities; the core asks them instead of testing names
    (docs/extending/algorithm.md#the-algorithm-entry): ``discrete``/``continuous``: the action kinds it trains
    (pre-flight refuses an env group of another kind); ``on_policy``: it learns from the data of its current policy
    (off-policy learners keep a replay; the sizing model fills it first); ``league``: it may train in league mode
    (synchronous rollout flow, ``policy_flat`` in the layout of :func:`hpcmarl.models.policy_inference`: pool
    snapshots are rebuilt from ``algo.hidden``, ``algo.layers`` and ``algo.encoder``); ``overlap``: its learner
    takes unrolls made with the weights one version old (``actors.overlap``, synchronous rollout flow only);
    ``recurrent_overlap``: that holds for its recurrent policy (``algo.recurrent``) too; ``centralized_critic``: its
    critic sees the joint observation or the env state (PPO's learner builds one from it); ``needs_episode_limit``:
    its config's ``episode_limit`` bounds the stored episodes (0 there: derived from the env's ``max_cycles``, else
    a config error)."""

    name: str
    config: Ref
    learner: Optional[Ref] = None  # None: the flow's shell owns the update (gradients: NIGT aggregation)
    inference: Ref = "hpcmarl.models:policy_inference"
    flow: str = "rollouts"
    discrete: bool = True
    continuous: bool = True
    on_policy: bool = True
    league: bool = False
    overlap: bool = True
    recurrent_overlap: bool = False
    centralized_critic: bool = False
    needs_episode_limit: bool = False

    def config_class(self) -> type:
        return resolve(self.config)

    def make_learner(self, spec, cfg, device, seed: int, init_seed: int) -> Learner:
        return resolve(self.learner)(spec, cfg, device, seed=seed, init_seed=init_seed)

    def make_inference(self, spec, cfg):
        return resolve(self.inference)(spec, cfg)

    def data_flow(self) -> "flows.Flow":
        """The :class:`hpcmarl.flows.Flow` that carries its data (what the core asks about the flow)."""
        return flows.get(self.flow)


def resolve(ref: Ref):
    if not isinstance(ref, str):
        return ref
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


ALGORITHMS: Dict[str, Algorithm] = {}


def register(algo: Algorithm, replace: bool = False) -> Algorithm:
    """Add ``algo`` to the registry (``replace``: allow a new definition under a taken name)."""
    try:
        flow = flows.get(algo.flow)
    except ValueError as e:
        raise ValueError(f"algorithm {algo.name!r}: {e}") from None
    if algo.learner is None and not flow.owns_update:
        raise ValueError(f"algorithm {algo.name!r}: the {algo.flow} flow needs a learner")
    if not (algo.discrete or algo.continuous):
        raise ValueError(f"algorithm {algo.name!r}: it must train discrete or continuous actions (or both)")
    if algo.league and not flow.league:
        raise ValueError(f"algorithm {algo.name!r}: league mode does not run on the {algo.flow} flow")
    if algo.name in ALGORITHMS and not replace and ALGORITHMS[algo.name] != algo:
        raise ValueError(f"algorithm {algo.name!r} is already registered (pass replace=True to redefine it)")
    ALGORITHMS[algo.name] = algo
    return algo


def get(name: str) -> Algorithm:
    """The registered algorithm ``name``.

    Raises:
        KeyError: no algorithm of that name is registered (the message says where a plug-in goes).
    """
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r} (known: {', '.join(sorted(ALGORITHMS))}; a plug-in's module "
                       f"goes in the config's 'plugins' list)") from None


def uses_state(cfg) -> bool:
    """The algorithm config asks for the env's global ``state()`` (a centralized critic or mixer on it)."""
    return bool(getattr(cfg, "uses_state", False))


def rnn_hidden(cfg) -> int:
    """The hidden size of a recurrent policy (``algo.recurrent``), else 0: unrolls then carry its initial state."""
    return int(cfg.hidden) if getattr(cfg, "recurrent", False) else 0


def make_inference(spec, algo):
    """The actor-side policy (:class:`hpcmarl.models.Inference`) of ``algo.name``: its registered
    ``make_inference``."""
    return get(algo.name).make_inference(spec, algo)


def load_plugins(modules: List[str]) -> None:
    """Import the ``plugins`` modules (they register algorithms); each must be allowed (:mod:`hpcmarl.trust`)."""
    from hpcmarl import trust

    for m in modules:
        trust.require(m, "plugin")  # every module is checked before the first one is imported
    for m in modules:
        try:
            trust.import_user_module(m)
        except trust.NotAllowed:
            raise
        except Exception as e:
            raise ImportError(f"plugins: cannot import {m!r} ({type(e).__name__}: {e})") from None


_PPO = dict(config="hpcmarl.algos.ppo:PPOConfig", learner="hpcmarl.algos.ppo:PPOLearner", league=True)
_QMIX = dict(config="hpcmarl.algos.qmix.config:QMIXConfig", learner="hpcmarl.algos.qmix.learning:QMIXLearner",
             inference="hpcmarl.algos.qmix.acting:q_inference", continuous=False, on_policy=False,
             recurrent_overlap=True, needs_episode_limit=True)
for _algo in (
    Algorithm("mappo", centralized_critic=True, **_PPO),
    Algorithm("ippo", **_PPO),
    Algorithm("qmix", **_QMIX),
    Algorithm("vdn", **_QMIX),
    Algorithm("matrace", "hpcmarl.algos.matrace:MATraceConfig", "hpcmarl.algos.matrace:MATraceLearner",
              flow="rollouts_async", overlap=False, centralized_critic=True),
    Algorithm("nigt", "hpcmarl.algos.nigt:NIGTConfig", None, "hpcmarl.models:squashed_inference", "gradients",
              overlap=False),
):
    register(_algo)
