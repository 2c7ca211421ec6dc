"""Data flows as registered objects: what actors send, who updates the weights, and what the flow supports.

A :class:`Flow` names the role module that runs it (its ``learner_main(ctx)`` and ``actor_main(ctx)``, imported by
:mod:`hpcmarl.launch` when a run uses the flow; the path comes from code, never from a config file) and carries its
capabilities. Config validation, algorithm registration, launch and the sizing model ask the flow object; no
module outside this one tests a flow's name (tests/unit/test_layout.py checks it). Built-in flows
(docs/concepts/architecture.md#data-flows)::

    rollouts        actors send fixed-shape unrolls; every update waits for each actor's (synchronous)
    rollouts_async  actors send unrolls continuously; a learner updates on batches from a bounded queue (MA-Trace)
    gradients       actors send one policy gradient per trajectory; the flow's shell owns the update (NIGT)

A plug-in adds one with :func:`register_flow` (docs/concepts/architecture.md#adding-a-flow). This module imports
nothing of hpcmarl, torch or MPI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

# the sizing model's kinds of flow (hpcmarl.sizing plays each): a flow declares which one models it, or none
SIZING_MODELS = ("sync", "async", "gradients")


@dataclass(frozen=True)
class Flow:
    """``roles``: the dotted path of its role module. Capabilities (what the core asks instead of the name):
    ``unrolls``: actors send unrolls of ``algo.unroll_length`` steps (config validation requires it);
    ``owns_update``: the flow's shell updates the weights itself (its algorithms register no learner);
    ``overlap``: ``actors.overlap`` is available (actors collect the next unroll while the learner updates);
    ``league``: league mode runs on it; ``sizing``: which of the sizing model's flow models
    (:data:`SIZING_MODELS`) predicts it, ``None``: not modelled (``hpcmarl validate --predict`` says so);
    ``doc``: one line for ``hpcmarl inspect`` and the docs."""

    name: str
    roles: str
    unrolls: bool = True
    owns_update: bool = False
    overlap: bool = False
    league: bool = False
    sizing: Optional[str] = None
    doc: str = ""

    def __post_init__(self):
        if not all(part.isidentifier() for part in self.roles.split(".")):
            raise ValueError(f"flow {self.name!r}: {self.roles!r} is not a dotted module path")
        if self.sizing is not None and self.sizing not in SIZING_MODELS:
            raise ValueError(f"flow {self.name!r}: sizing must be one of {', '.join(SIZING_MODELS)} or None, "
                             f"not {self.sizing!r}")


FLOWS: Dict[str, Flow] = {}


def register_flow(name: str, roles: str, replace: bool = False, **capabilities) -> Flow:
    """Add a data flow named ``name`` run by the role module ``roles`` (a dotted path) with the :class:`Flow`
    ``capabilities`` (keywords: ``unrolls``, ``owns_update``, ``overlap``, ``league``, ``sizing``, ``doc``).
    ``replace``: allow another definition under a taken name. Returns the flow.

    Raises:
        ValueError: ``name`` is taken by another definition (without ``replace``), ``roles`` is not a dotted path,
            or a capability is unknown or out of range.
    """
    unknown = set(capabilities) - {"unrolls", "owns_update", "overlap", "league", "sizing", "doc"}
    if unknown:
        raise ValueError(f"flow {name!r}: unknown capabilities {', '.join(sorted(unknown))}")
    flow = Flow(name, roles, **capabilities)
    if name in FLOWS and FLOWS[name] != flow and not replace:
        raise ValueError(f"flow {name!r} is already registered ({FLOWS[name].roles}; pass replace=True to redefine it)")
    FLOWS[name] = flow
    return flow


def get(name: str) -> Flow:
    """The registered flow ``name``.

    Raises:
        ValueError: no flow of that name is registered.
    """
    try:
        return FLOWS[name]
    except KeyError:
        raise ValueError(f"flow must be one of {', '.join(FLOWS)}, not {name!r}") from None


register_flow("rollouts", "hpcmarl.roles.rollouts", overlap=True, league=True, sizing="sync",
              doc="one fixed-shape unroll from every actor per update (synchronous)")
register_flow("rollouts_async", "hpcmarl.roles.async_rollouts", sizing="async",
              doc="unrolls sent continuously; updates on batches from a bounded queue (asynchronous)")
register_flow("gradients", "hpcmarl.roles.gradients", unrolls=False, owns_update=True, sizing="gradients",
              doc="one policy gradient per trajectory; rounds closed by an aggregation rule (NIGT)")
