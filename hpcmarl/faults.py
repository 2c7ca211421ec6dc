"""Fault injection for tests, in one place (docs/development/faults.md).

``HPCMARL_INJECT_FAULT=<rank>:<kind>:<when>`` tells one rank to fail in one way at one point; it is parsed once (per
value: :func:`spec`), and a malformed value is refused in one line at start-up rather than ignored. ``when`` is an
update (or NIGT round) number or a phase (:data:`PHASES`). Kinds acted on where they are named (:meth:`Hook.at`):
``raise``, ``hang``, ``exit``, ``sigterm``; kinds that mark a value instead (:meth:`Hook.marked`): ``nan`` (a
learner's parameter becomes NaN right after that update) and ``stale`` (an actor keeps its old weights at that
version: :meth:`Hook.arm`).

Production code reaches it through one object per rank, :class:`Hook`, built by the launcher (``ctx.faults``) and
called only by the launcher's pre-flight and the three loops: the learner loop (``roles/loop.py``), the actor loop
(``roles/actor_work.py:run_actor``) and the league rank's loop (``tests/unit/test_layout.py`` checks it).
"""
from __future__ import annotations

import functools
import os
import time
from typing import NamedTuple, Optional, Union

VARIABLE = "HPCMARL_INJECT_FAULT"
ACTS = ("raise", "hang", "exit", "sigterm")
MARKS = ("nan", "stale")
PHASES = ("preflight", "startup", "checkpoint", "final")


class Fault(NamedTuple):
    rank: int
    kind: str
    when: str  # an update number as text, or a phase


class FaultSpecError(ValueError):
    pass


@functools.lru_cache(maxsize=8)
def parse(text: str) -> Optional[Fault]:
    """``"1:hang:2"`` -> ``Fault(1, "hang", "2")``; ``""`` -> None; :class:`FaultSpecError` for anything else."""
    if not text:
        return None
    parts = text.split(":")
    ok = (len(parts) == 3 and parts[0].isdigit() and parts[1] in ACTS + MARKS
          and (parts[2].isdigit() or parts[2] in PHASES))
    if not ok:
        raise FaultSpecError(f"{VARIABLE}={text[:80]!r}: expected <rank>:<kind>:<when> with kind one of "
                             f"{', '.join(ACTS + MARKS)} and when an update number or one of {', '.join(PHASES)}")
    return Fault(int(parts[0]), parts[1], parts[2])


def spec() -> Optional[Fault]:
    """This process's fault (None: none), parsed once per value of the variable."""
    return parse(os.environ.get(VARIABLE, ""))


def _here(rank: int, when: Union[int, str], kinds) -> Optional[Fault]:
    f = spec()
    return f if f is not None and f.rank == rank and f.when == str(when) and f.kind in kinds else None


def at(rank: int, when: Union[int, str]) -> None:
    """Act out this process's fault if it is for ``rank`` at ``when`` (an update number or a phase)."""
    f = _here(rank, when, ACTS)
    if f is None:
        return
    if f.kind == "raise":
        raise RuntimeError(f"injected fault on rank {rank} at update {when}")
    if f.kind == "hang":
        time.sleep(10 ** 6)
    if f.kind == "exit":
        os._exit(7)
    if f.kind == "sigterm":  # as a scheduler's preemption notice
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


def marked(rank: int, kind: str, when: Union[int, str]) -> bool:
    """Whether this process's fault marks ``kind`` (``nan`` or ``stale``) for ``rank`` at ``when``."""
    return _here(rank, when, (kind,)) is not None


class Hook:
    """This rank's fault, bound once (none: every call returns at once). ``at(when)`` acts it out, ``marked(kind,
    when)`` answers for a mark, ``arm(policy)`` makes an actor's policy keep its old weights at a ``stale`` version
    (nothing in the weights loop asks)."""

    def __init__(self, rank: int):
        f = spec()
        self.rank = rank
        self.fault = f if f is not None and f.rank == rank else None

    def at(self, when: Union[int, str]) -> None:
        if self.fault is not None:
            at(self.rank, when)

    def marked(self, kind: str, when: Union[int, str]) -> bool:
        return self.fault is not None and marked(self.rank, kind, when)

    def arm(self, policy) -> None:
        if self.fault is None or self.fault.kind != "stale":
            return
        load = policy.load

        def load_unless_stale(flat, version):
            if not self.marked("stale", version):
                load(flat, version)

        policy.load = load_unless_stale
