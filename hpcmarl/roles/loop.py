"""The learner loop, written once: resume, startup agreement, hello, the stop vote, progress and metrics,
checkpoints, preemption and shutdown. A data flow (synchronous rollouts, asynchronous rollouts, gradients)
plugs in as a :class:`LearnerSide`; the loop never looks inside one (the actor loop: :mod:`hpcmarl.roles.actor_work`).

Per round::

    round()       the flow's work: take data from its actors, update, reduce its counters over the learners
    advance       the run's counters (update, env steps, episodes, env errors)
    vote          every learner agrees to go on or to stop (RunLog.vote)
    handout()     only when going on: the next weights/query go out, so actors work while we write logs
    rows(...)     further run.h5 table rows (the league's status round trip lives here)
    log           metrics row + episodes (lead learner), progress line, target check
    checkpoint    every ``output.checkpoint_every`` updates

At the end: the final checkpoint, then the actors are stopped (shutdown), then the closing line.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from hpcmarl import compiled, storage
from hpcmarl.comm import watchdog
from hpcmarl.roles.common import RunLog
from hpcmarl.roles.finite import check_finite, poison


@dataclass
class Round:
    """What one round of a flow reports, already reduced over every learner (``ep_rows``: this learner's)."""
    env_steps: int
    episodes: int
    env_errors: int
    signalled: bool  # an actor saw a stop signal
    row: dict  # the flow's metrics for this round
    ep_rows: list = field(default_factory=list)
    discarded: int = 0  # episodes abandoned during the round (gradients flow)


class LearnerSide:
    """A data flow as the learner loop sees it. Subclasses set ``groups``, ``ctrl`` (the collective over every
    learner that carries counters, votes and run.h5 rows), ``version`` (what fault injection and checkpoints
    name), and may set ``tables`` (further run.h5 tables) and ``banner`` (said after the run directory)."""
    groups: List[str]
    ctrl = None
    version: int = 0
    tables: Optional[dict] = None
    banner: str = ""

    def __init__(self, ctx):
        """The common case: one collective over every learner for gradients and bookkeeping, the env's groups."""
        from hpcmarl.comm.collective import Collective

        self.ctx, self.algo = ctx, ctx.cfg.algo
        self.coll = self.ctrl = Collective(ctx.learner_comm, ctx.cfg.learner.backend)
        self.groups = [g.name for g in ctx.env_spec.groups]

    def load(self, arrays: Dict[str, np.ndarray]) -> None:
        """Resume: take the state out of the checkpoint's arrays."""

    def prepare(self, log: RunLog) -> None:
        """Before the startup agreement, the counters known (resume included): rounds continue from the update
        counter and the learner's initial parameters are shared (a flow without ``learner`` overrides this)."""
        self.log = log
        self.version = log.counters["update"]
        self.coll.broadcast_params(self.learner.params)

    def hello(self) -> None:
        """After the startup agreement: greet the actors."""

    def begin(self) -> None:
        """Before the first vote."""

    def handout(self) -> None:
        """After a vote to go on (the first one included)."""

    def round(self) -> Round:
        raise NotImplementedError

    def rows(self, stop_reason: str, checkpoint_due: bool) -> Optional[Dict[str, list]]:
        """After the hand-out: rows of the further tables (name -> tuples in column order). A checkpoint
        follows this round when ``stop_reason`` or ``checkpoint_due``."""
        return None

    def save(self, log: RunLog) -> None:
        """Every learner: write a checkpoint through ``log.save_checkpoint``."""
        raise NotImplementedError

    def shutdown(self, preempted: bool) -> int:
        """Stop the actors; returns the episodes this learner's actors had in flight (discarded)."""
        raise NotImplementedError

    def summary(self, discarded: int) -> str:
        """The flow's part of the closing line (every learner calls it; it may reduce). ``discarded``: episodes
        in flight at the end, over every learner."""
        return ""

    def close(self) -> None:
        pass


def run_learner(ctx, flow: LearnerSide) -> None:
    fault = ctx.faults  # a test's injected fault: acted out by the three loops only (hpcmarl/faults.py)
    fault.at("startup")
    attrs = None
    if ctx.resume_path:
        arrays, attrs = storage.load_checkpoint(ctx.resume_path, bounded=False)
        flow.load(arrays)
    log = RunLog(ctx, flow.ctrl, flow.groups, attrs, flow.tables)
    counters = log.counters
    flow.prepare(log)
    ctx.agree_startup()
    # a first update that compiles (10-60 s) keeps the start-up bound on what waits for it (hpcmarl.compiled)
    warm = compiled.first_update_compiles(ctx.cfg, ctx.layout.actors)
    if warm:
        watchdog.set_phase("startup")
    flow.hello()
    log.open(flow.banner)

    flow.begin()
    stop_reason = log.vote(False)
    if not stop_reason:
        flow.handout()
    while not stop_reason:
        fault.at(flow.version)
        r = flow.round()
        log.advance(r.env_steps, r.episodes, r.env_errors)
        if fault.marked("nan", log.counters["update"]):
            poison(flow)
        check_finite(ctx, flow, log, r.row)  # a non-finite loss or parameter: one line, exit 1, no checkpoint
        counters["discarded_episodes"] += r.discarded
        stop_reason = log.vote(r.signalled)
        if warm:  # every learner is past its first update
            watchdog.set_phase("run")
            warm = False
        if not stop_reason:
            flow.handout()
        due = log.checkpoint_due(stop_reason)
        tables = flow.rows(stop_reason, due)
        row = log.base_row()
        row.update(r.row)
        log.log(row, r.ep_rows, tables)
        if due:
            fault.at("checkpoint")
            flow.save(log)

    ctx.preempted = log.preempted()
    # the final checkpoint before the actors are stopped: a hung actor cannot cost it (stopping waits for every
    # actor's goodbye); episodes the stop cuts off are counted in run.h5 (log.finish), not in the checkpoint
    with watchdog.guard("the final checkpoint to be written"):
        fault.at("final")
        if log.final_checkpoint_due():
            log.final_eval = not ctx.preempted  # eval.*: the final (and absolute) evaluation of a run that ended
            flow.save(log)
    discarded = int(flow.ctrl.sum_small(np.array([flow.shutdown(ctx.preempted)]))[0])
    counters["discarded_episodes"] += discarded
    log.finish(stop_reason, flow.summary(discarded))
    flow.close()

