"""A learner's links to its actors, one abstraction for every flow: :class:`ActorLink` (an actor rank, over MPI) and
:class:`LocalLink` / :class:`LocalGradLink` (serial mode: the learner's own actor, in-process) answer the same verbs.

    hello(info)                 the start-up message (a resume's random state; serial: applied in-process)
    send(wrec, version)         weights (a query point) to the actor; one send in flight: the previous is waited for
    push(params, version)       the same without waiting: a push the actor has not taken yet is replaced (latest wins)
    send_masks(bits)            sparse policies: the weight masks, before the weights that use them
    post(rec) / test() / wait() one posted receive of the flow's record (an unroll, a gradient); ``test`` returns it
                                once it arrived (then nothing is posted), ``wait`` waits for it (bounded)
    stop(wrec, version, …)      the stop message and the actor's goodbye (its BYE), taking what it still sends

``received`` counts the records taken; ``since`` is when the posted receive began to wait or the last record came (the
flows bound an actor's silence with it); ``index`` is the actor's index (0 in serial mode).
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

import numpy as np

from hpcmarl.actors import GradientMaker, make_sampler
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import META_INDEX, WEIGHT_INDEX, weights_spec
from hpcmarl.roles.actor_work import resume_actor
from hpcmarl.roles.common import actor_plan

M = META_INDEX


class ActorLink:
    """An actor rank as seen by its learner. ``post_recv``: the flow's receive (``protocol.post_recv_unroll`` or
    ``post_recv_gradient``); ``rec``: the record this link receives into when the flow does not hand it one."""

    def __init__(self, ctx, rank: int, post_recv: Callable, rec=None):
        self.world, self.rank, self.index = ctx.world, rank, ctx.layout.actor_index(rank)
        self.timeout, self.startup_timeout = ctx.cfg.runtime.timeout_s, ctx.cfg.runtime.startup_timeout_s
        self.post_recv, self.rec = post_recv, rec
        self.posted = None  # (record, request)
        self.send_req = None
        self.wrec = None  # push: this link's own weights buffer (a push may still be in flight when the next comes)
        self.pending = None  # push: (params, version) still to push once the previous push completed
        self.masks = None  # (bits, request) of the last masks sent
        self.received = 0
        self.since = time.monotonic()

    def hello(self, info: dict) -> None:
        protocol.send_control(self.world, self.rank, info, self.startup_timeout)
        self.since = time.monotonic()

    # ---- actor -> learner ----------------------------------------------------------------------------------------
    def post(self, rec=None) -> None:
        rec = self.rec if rec is None else rec
        self.posted = (rec, self.post_recv(self.world, self.rank, rec))
        self.since = time.monotonic()

    def _taken(self):
        rec, self.posted = self.posted[0], None
        self.received += 1
        self.since = time.monotonic()
        return rec

    def test(self):
        return self._taken() if self.posted is not None and self.posted[1].Test() else None

    def wait(self, what: str):
        protocol.wait_buffer(self.posted[1], self.timeout, f"{what} from actor rank {self.rank}")
        return self._taken()

    # ---- learner -> actor ----------------------------------------------------------------------------------------
    def wait_sent(self, what: str = "weights", meanwhile=None) -> None:
        if self.send_req is not None:
            protocol.wait_buffer(self.send_req, self.timeout, f"actor rank {self.rank} to take {what}", meanwhile)
            self.send_req = None

    def send(self, wrec, version: int) -> None:
        self.wait_sent()
        self.send_req = protocol.send_weights(self.world, self.rank, wrec, version)

    def push(self, params: np.ndarray, version: int) -> None:
        if self.send_req is not None and not self.send_req.Test():
            self.pending = (params, version)
            return
        if self.wrec is None:
            self.wrec = weights_spec(params.size).alloc()
        self.wrec["params"][:] = params
        self.send_req, self.pending = protocol.send_weights(self.world, self.rank, self.wrec, version), None

    def retry_push(self) -> None:
        if self.pending is not None:
            self.push(*self.pending)

    def send_masks(self, bits: np.ndarray, mask_version: int) -> None:
        if self.masks is not None:
            protocol.wait_buffer(self.masks[1], self.timeout, f"actor rank {self.rank} to take masks")
        self.masks = (bits, protocol.send_masks(self.world, self.rank, bits))

    # ---- the stop ------------------------------------------------------------------------------------------------
    def stop(self, wrec, version: int, preempted: bool, drain: bool = True, scratch=None, counted=None) -> dict:
        """Send the stop and return the actor's BYE. ``drain``: the actor may still be sending (every flow but the
        synchronous one without overlap): take its records (into ``scratch``, or this link's record; ``counted(rec)``
        sees each) until it said BYE and as many as it says it sent have come, the last push waited for likewise (an
        actor blocked on its sends needs them taken meanwhile, or both wait); then cancel the receive left posted."""
        if not drain:
            req = protocol.send_stop(self.world, self.rank, wrec, version, preempted)
            bye = protocol.recv_bye(self.world, self.rank, self.timeout)
            req.Wait()
        else:
            buf = self.rec if scratch is None else scratch
            if self.posted is None:
                self.post(buf)

            def take() -> bool:
                rec = self.test()
                if rec is None:
                    return False
                if counted is not None:
                    counted(rec)
                self.post(buf)
                return True

            self.wait_sent(meanwhile=take)
            bye = protocol.stop_and_drain(self.world, self.rank, wrec, version, preempted, take,
                                          lambda: self.received, self.timeout)
            self.posted[1].Cancel()
            self.posted[1].Wait()
            self.posted = None
        if self.masks is not None:
            self.masks[1].Wait()  # taken with the weights that announced them
        return bye


class LocalLink:
    """Serial mode: the learner steps its own environments in-process behind the same verbs. ``numbered``: the
    trajectory rows name the update that trains on each unroll by counting unrolls (the synchronous flow: one unroll
    per update), else by the unroll's version."""
    rank = index = 0
    wrec = None

    def __init__(self, ctx, rec=None, numbered: bool = False):
        self.stop_requested = ctx.stop_requested
        self.sampler, self.traj = make_sampler(actor_plan(ctx, 0))
        self.rec = rec
        self.update = ctx.start_update if numbered else None
        self.posted = None
        self.received = 0
        self.since = time.monotonic()

    def hello(self, info: dict) -> None:
        resume_actor(info, self.sampler)

    def post(self, rec=None) -> None:
        self.posted = self.rec if rec is None else rec
        self.since = time.monotonic()

    def test(self):
        if self.posted is None:
            return None
        rec, self.posted = self.posted, None
        self.sampler.collect(rec)
        rec["meta"][M["actor"]] = 0
        rec["meta"][M["stop_requested"]] = float(self.stop_requested())
        if self.update is not None:
            self.update += 1
        if self.traj is not None:
            self.traj.add_unroll(rec, rec["env_done"], int(rec["meta"][M["version"]]), self.update)
        self.received += 1
        return rec

    def wait(self, what: str):
        return self.test()

    def wait_sent(self, what: str = "weights", meanwhile=None) -> None:
        pass

    def send(self, wrec, version: int) -> None:
        self.sampler.policy.load(wrec["params"], version)
        self.sampler.policy.epsilon = float(wrec["meta"][WEIGHT_INDEX["epsilon"]])

    def push(self, params: np.ndarray, version: int) -> None:
        self.sampler.policy.load(params, version)

    def retry_push(self) -> None:
        pass

    def send_masks(self, bits: np.ndarray, mask_version: int) -> None:
        self.sampler.policy.set_masks(bits, mask_version)

    def stop(self, wrec, version: int, preempted: bool, drain: bool = True, scratch=None, counted=None) -> dict:
        discarded = int((self.sampler.in_flight() > 0).sum())
        if self.traj is not None:
            self.traj.close()
        self.sampler.venv.close()
        return {"sent": 0, "discarded": discarded}


class LocalGradLink(LocalLink):
    """Serial mode of the gradient flow: the learner computes its own actor's gradients in-process, one trajectory's
    gradient per :meth:`test`, at most the query's quota per round."""

    def __init__(self, ctx, rec):  # (no sampler: LocalLink's construction is not called)
        self.maker = GradientMaker(actor_plan(ctx, 0), ctx.stop_requested)
        self.rec, self.posted, self.received, self.since = rec, None, 0, time.monotonic()
        self.queue: List = []
        self.quota = self.made = 0

    def hello(self, info: dict) -> None:
        pass

    def send(self, wrec, version: int) -> None:
        self.maker.policy.load(wrec["params"], version)
        self.maker.abandoned += len(self.queue)
        self.queue = []
        self.quota, self.made = int(wrec["meta"][WEIGHT_INDEX["quota"]]), 0

    def test(self) -> Optional[np.ndarray]:
        if self.posted is None:
            return None
        if not self.queue and not (self.quota and self.made >= self.quota):
            self.queue = self.maker.gradients(lambda: False)
        if not self.queue:
            return None
        rec, self.posted = self.posted, None
        self.maker.fill(rec, self.queue.pop(0))
        self.made += 1
        self.received += 1
        return rec

    def stop(self, wrec, version: int, preempted: bool, drain: bool = True, scratch=None, counted=None) -> dict:
        self.maker.collector.venv.close()
        return {"sent": 0, "abandoned": self.maker.abandoned + len(self.queue)}
