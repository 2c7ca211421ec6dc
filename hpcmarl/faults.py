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


class Hook:
    """This rank's fault, bound once (none: every call returns at once). ``at(when)`` acts it out, ``marked(kind,
    when)`` answers for a mark, ``arm(policy)`` makes an actor's policy keep its old weights at a ``stale`` version
    (nothing in the weights loop asks)."""

    def __init__(self, rank: int):
        f = spec()
        self.rank = rank
        self.fault = f if f is not None and f.rank == rank else None

    def _here(self, when: Union[int, str], kinds) -> bool:
        return self.fault is not None and self.fault.when == str(when) and self.fault.kind in kinds

    def at(self, when: Union[int, str]) -> None:
        """Act out this rank's fault if it is for ``when`` (an update number or a phase)."""
        if not self._here(when, ACTS):
            return
        kind = self.fault.kind
        if kind == "raise":
            raise RuntimeError(f"injected fault on rank {self.rank} at update {when}")
        if kind == "hang":
            time.sleep(10 ** 6)
        if kind == "exit":
            os._exit(7)
        if kind == "sigterm":  # as a scheduler's preemption notice
            import signal

            os.kill(os.getpid(), signal.SIGTERM)

    def marked(self, kind: str, when: Union[int, str]) -> bool:
        """Whether this rank's fault marks ``kind`` (``nan`` or ``stale``) at ``when``."""
        return self._here(when, (kind,))

    def arm(self, policy) -> None:
        if self.fault is None or self.fault.kind != "stale":
            return
        load = policy.load

        def load_unless_stale(flat, version):
            if not self.marked("stale", version):
                load(flat, version)

        policy.load = load_unless_stale
