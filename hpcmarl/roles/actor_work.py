"""The actor loop, written once (:func:`run_actor`), and each data flow's actor side as an :class:`ActorWork`.

Every actor rank: build its work (env copies, policy, buffers: :mod:`hpcmarl.actors`), agree that every rank
started, take the learner's hello, then alternate ``take_weights`` (weights or a query point in; a stop command ends
the loop) and ``work`` (an unroll or a round's gradients out), then ``goodbye`` (pending sends, files, envs: what
the learner must drain) and send it. The flows differ only in their hooks:

    RolloutActor   synchronous rollouts: wait for the version the next unroll needs (one ahead with overlap)
    AsyncActor     asynchronous rollouts (MA-Trace): never wait for weights; back-pressure from two send buffers
    GradientActor  gradients (NIGT): gradients per trajectory at the round's query point, abandoned on a new one
"""
from __future__ import annotations

import time
from typing import List, Optional

import numpy as np
import torch

from hpcmarl import compiled
from hpcmarl.actors import GradientMaker, actor_seed, make_sampler
from hpcmarl.comm import protocol
from hpcmarl.comm.spec import CMD_PREEMPTED, CMD_STOP, WEIGHT_INDEX, gradient_spec, weights_spec
from hpcmarl.roles.common import M, actor_plan


class ActorWork:
    """A flow's actor side, driven by :func:`run_actor`. Built before the start-up agreement (env copies, policy,
    buffers); every hook may block only with a bound (``runtime.timeout_s``)."""

    def begin(self, hello: dict) -> None:
        """The learner's hello arrived (resume state, sizes): post the first weights receive, wait for them if the
        flow starts on them."""

    def take_weights(self) -> Optional[int]:
        """Take the weights (or query point) that arrived, waiting where the flow must; ``CMD_STOP`` or
        ``CMD_PREEMPTED`` when the learner said stop, else ``None``."""
        raise NotImplementedError

    def work(self) -> None:
        """Make and send the next piece of work: an unroll, or a round's gradients."""
        raise NotImplementedError

    def goodbye(self) -> dict:
        """Let pending sends finish, close files and envs; returns the goodbye's contents (what the learner
        drains)."""
        raise NotImplementedError

    def points(self) -> List[int]:
        """Where the last ``take_weights`` left this actor, as a test's fault names it (``<rank>:<kind>:<when>``):
        the versions it took (rollouts), its unroll count (asynchronous rollouts) or the round (gradients)."""
        raise NotImplementedError


def run_actor(ctx, work: ActorWork) -> None:
    """An actor rank's life: agree that every rank started, take the learner's hello, then alternate
    ``take_weights`` and ``work`` until the learner says stop (``ctx.preempted`` when it says preempted), then
    ``goodbye`` (what the learner must drain) and send it."""
    fault = ctx.faults  # a test's injected fault: acted out by the three loops only (hpcmarl/faults.py)
    fault.at("startup")
    cfg, layout = ctx.cfg, ctx.layout
    learner = layout.learner_of(layout.actor_index(ctx.rank))
    fault.arm(work.policy)
    ctx.agree_startup()
    work.begin(protocol.recv_control(ctx.world, learner, cfg.runtime.startup_timeout_s))
    while True:
        command = work.take_weights()
        if command in (CMD_STOP, CMD_PREEMPTED):
            ctx.preempted = command == CMD_PREEMPTED
            break
        for when in work.points():
            fault.at(when)
        work.work()
    bye = work.goodbye()
    fault.at("final")
    protocol.send_bye(ctx.world, learner, bye, cfg.runtime.timeout_s)


def resume_actor(hello: dict, sampler) -> None:
    """A resumed run: the actor's torch RNG state and its env copies' episode seeds from the checkpoint."""
    if hello.get("rng") is not None:
        torch.set_rng_state(torch.from_numpy(np.asarray(hello["rng"], np.uint8)))
    if hello.get("env_seeds") is not None and hasattr(sampler.venv, "restore_seeds"):
        sampler.venv.restore_seeds(hello["env_seeds"])



class UnrollActor(ActorWork):
    """What both rollout flows' actors share: the sampler and trajectory file of its plan, a ring of ``buffers``
    unroll records whose sends may be pending, and the goodbye (pending sends taken, files and envs closed)."""

    def __init__(self, ctx, buffers: int, league=None):
        layout = ctx.layout
        self.ctx, self.world, self.rank = ctx, ctx.world, ctx.rank
        self.idx = layout.actor_index(ctx.rank)
        self.learner = layout.learner_of(self.idx)
        self.sampler, self.traj = make_sampler(actor_plan(ctx, self.idx), league)
        self.ring = [self.sampler.spec.alloc() for _ in range(buffers)]
        self.sends: List = [None] * buffers
        self.timeout = ctx.cfg.runtime.timeout_s
        self.sent = self.slot = 0
        self.req = None  # the posted receive of the next weights
        self.policy = self.sampler.policy

    def wait_sent(self, slot: int) -> None:
        """Until the learner took the unroll last sent from buffer ``slot`` (bounded)."""
        if self.sends[slot] is not None:
            protocol.wait_buffer(self.sends[slot], self.timeout, f"learner rank {self.learner} to take an unroll")
            self.sends[slot] = None

    def goodbye(self):
        for slot in range(len(self.sends)):  # the learner drains what is still on the way
            self.wait_sent(slot)
        discarded = int((self.sampler.in_flight() > 0).sum())
        if self.traj is not None:
            self.traj.close()
        self.sampler.venv.close()
        return {"sent": self.sent, "discarded": discarded}


class RolloutActor(UnrollActor):
    """The synchronous flow's actor: waits for the version its next unroll must be made with (one ahead with
    ``actors.overlap``: two send buffers), collects one unroll and sends it; in league mode it also reports results
    and takes its next opponents."""

    def __init__(self, ctx):
        cfg, layout = ctx.cfg, ctx.layout
        self.league = None
        make_client = None
        if layout.league:
            from hpcmarl.roles.league import ActorLeague

            idx = layout.actor_index(ctx.rank)

            def make_client(policy):
                self.league = ActorLeague(ctx, idx, policy, actor_seed(cfg.seed + 1, idx, ctx.start_update))
                return self.league
        self.overlap = cfg.actors.overlap  # collect the next unroll while the learner updates (two send buffers)
        super().__init__(ctx, 2 if self.overlap else 1, make_client)
        self.bits = (np.zeros(self.sampler.policy.mask_bytes(), np.uint8) if getattr(cfg.algo, "sparsity", 0) > 0
                     else None)
        self.t_send = self.t_wait = 0.0
        # the learner trains on this session's k-th unroll in its round first + k (first: the version it sent
        # first); that unroll must be made with version >= first + k - lag (lag 1 with actors.overlap, else 0)
        self.lag = 1 if self.overlap else 0
        self.version = self.first = -1
        self.taken: List[int] = []  # the versions the last take_weights took
        # the weights of the first update wait for its compilation, under the start-up bound (hpcmarl.compiled)
        self.warm = compiled.first_update_bound(cfg, layout.actors)

    def begin(self, hello):
        self.wrec = weights_spec(hello["n_weights"]).alloc()
        resume_actor(hello, self.sampler)

    def take_weights(self):
        """Take the weights that arrived (in order); wait while the ones held are too old."""
        t0 = time.perf_counter()
        wrec, sampler = self.wrec, self.sampler
        self.taken = []
        while True:
            if self.req is None:
                self.req = protocol.post_recv_weights(self.world, self.learner, wrec)
            if self.first < 0 or self.version < self.first + self.sent - self.lag:
                protocol.wait_buffer(self.req, self.warm if self.version <= self.first else self.timeout,
                                     f"weights from learner rank {self.learner}")
            elif not self.req.Test():
                break
            self.req = None
            version, command = protocol.weights_header(wrec)
            if command in (CMD_STOP, CMD_PREEMPTED):
                return command
            self.version = version
            self.first = version if self.first < 0 else self.first
            self.taken.append(version)
            mask_version = int(wrec["meta"][WEIGHT_INDEX["mask_version"]])
            if self.bits is not None and mask_version != sampler.policy.mask_version:  # sparse: the masks changed
                protocol.recv_masks(self.world, self.learner, self.bits, self.timeout)
                sampler.policy.set_masks(self.bits, mask_version)
            sampler.policy.load(wrec["params"], version)
            sampler.policy.epsilon = float(wrec["meta"][WEIGHT_INDEX["epsilon"]])
        self.t_wait = time.perf_counter() - t0
        return None

    def points(self):
        return self.taken

    def work(self):
        slot, sends = self.slot, self.sends
        urec = self.ring[slot]
        self.wait_sent(slot)  # overlap: this buffer's previous send must have been taken
        self.sampler.collect(urec)
        meta = urec["meta"]
        meta[M["actor"]] = self.idx
        meta[M["t_wait"]] = self.t_wait
        meta[M["stop_requested"]] = float(self.ctx.stop_requested())
        meta[M["t_send"]] = self.t_send
        sends[slot] = protocol.send_unroll(self.world, self.learner, urec)
        self.sent += 1
        if self.traj is not None:  # only reads the buffer, so it overlaps the send and the learner's update
            # this session's sent-th unroll is trained in update start_update + sent (overlap too: see above)
            self.traj.add_unroll(urec, urec["env_done"], int(meta[M["version"]]), self.ctx.start_update + self.sent)
        if self.league is not None:  # results of the finished episodes, the next opponents (overlaps the update)
            self.league.collect_results(self.sampler.finished)
            self.league.exchange()
        if self.overlap:
            self.slot ^= 1
            return
        t1 = time.perf_counter()
        self.wait_sent(slot)
        self.t_send = time.perf_counter() - t1  # reported with the next unroll

    def goodbye(self):
        bye = super().goodbye()
        if self.league is not None:
            self.league.bye()
        return bye


class AsyncActor(UnrollActor):
    """The asynchronous flow's actor (MA-Trace): never waits for the learner; between unrolls it takes every
    weights message that arrived (the latest version wins) and sends from one of two buffers, waiting only when both
    sends are pending (the learner's queue is full: back-pressure)."""

    def __init__(self, ctx):
        super().__init__(ctx, 2)
        self.wrec = weights_spec(sum(p.numel() for p in self.sampler.policy.params)).alloc()

    def begin(self, hello):
        resume_actor(hello, self.sampler)
        self.req = protocol.post_recv_weights(self.world, self.learner, self.wrec)
        protocol.wait_buffer(self.req, self.timeout, f"the first weights from learner rank {self.learner}")
        self.last_weights = time.monotonic()

    def take_weights(self):
        while self.req.Test():  # every message that arrived; the last one wins
            self.last_weights = time.monotonic()
            version, command = protocol.weights_header(self.wrec)
            if command in (CMD_STOP, CMD_PREEMPTED):
                return command
            self.sampler.policy.load(self.wrec["params"], version)
            self.req = protocol.post_recv_weights(self.world, self.learner, self.wrec)
        if time.monotonic() - self.last_weights > self.timeout:  # never waiting is no reason to wait for ever:
            # with queue_full=drop the learner's receiver thread takes unrolls even while its training loop is hung
            raise protocol.CommTimeout(f"timed out after {self.timeout:.0f}s waiting for new weights from learner "
                                       f"rank {self.learner} (it pushes every algo.push_every updates)")
        return None

    def points(self):
        return [self.sent]  # its unroll count: the versions it holds may skip a number

    def work(self):
        slot = self.slot
        t0 = time.perf_counter()
        self.wait_sent(slot)  # both sends pending: the learner's queue is full (back-pressure)
        t_wait = time.perf_counter() - t0
        urec = self.ring[slot]
        self.sampler.collect(urec)
        meta = urec["meta"]
        meta[M["actor"]] = self.idx
        meta[M["t_wait"]] = t_wait
        meta[M["stop_requested"]] = float(self.ctx.stop_requested())
        self.sends[slot] = protocol.send_unroll(self.world, self.learner, urec, synchronous=True)
        if self.traj is not None:  # only reads the buffer
            self.traj.add_unroll(urec, urec["env_done"], int(meta[M["version"]]))
        self.sent += 1
        self.slot ^= 1


class GradientActor(ActorWork):
    """The gradient flow's actor (NIGT): at each round's query point it computes policy gradients of whole
    trajectories and sends one message per trajectory until a new query point arrives (the trajectory in progress
    is abandoned) or, under a quota rule, until its quota is done."""

    def __init__(self, ctx):
        cfg, layout = ctx.cfg, ctx.layout
        self.world, self.rank = ctx.world, ctx.rank
        idx = layout.actor_index(ctx.rank)
        self.learner = layout.learner_of(idx)
        self.maker = GradientMaker(actor_plan(ctx, idx), ctx.stop_requested)
        self.policy = self.maker.policy
        d = sum(p.numel() for p in self.maker.policy.params)
        self.wrec = weights_spec(d).alloc()
        self.timeout = cfg.runtime.timeout_s
        self.out = Outbox(ctx.world, self.learner, gradient_spec(d, len(self.maker.spec.groups)),
                          cfg.env.num_envs + 1, self.timeout)
        self.req = None
        self.quota = self.round = 0

    def begin(self, hello):
        self.req = protocol.post_recv_weights(self.world, self.learner, self.wrec)
        protocol.wait_buffer(self.req, self.timeout, f"the first query point from learner rank {self.learner}")

    def _abandon(self) -> bool:
        """A new round's query point arrived (the trajectory is abandoned); between env steps, a sign of life
        when nothing was sent for a while: a slow actor whose trajectories are all overtaken stays known alive."""
        if self.req.Test():
            return True
        self.out.keep_alive(self.maker.fill_alive)
        return False

    def take_weights(self):
        W = WEIGHT_INDEX
        rnd, command = protocol.weights_header(self.wrec)
        if command in (CMD_STOP, CMD_PREEMPTED):
            return command
        self.quota = int(self.wrec["meta"][W["quota"]])
        self.round = rnd
        self.maker.policy.load(self.wrec["params"], rnd)  # copies: the buffer can take the next round now
        self.req = protocol.post_recv_weights(self.world, self.learner, self.wrec)
        return None

    def work(self):
        q, made, maker = self.quota, 0, self.maker
        while not self.req.Test():
            if q and made >= q:  # a quota rule: quota done, wait for the next round
                protocol.wait_buffer(self.req, self.timeout, f"the next query point from learner rank {self.learner}")
                break
            items = maker.gradients(self._abandon)
            if items is None:
                break
            for item in items[:(q - made) if q else None]:
                self.out.send(lambda rec, item=item: maker.fill(rec, item))
                made += 1

    def points(self):
        return [self.round]

    def goodbye(self):
        self.out.flush()
        self.maker.collector.venv.close()
        return {"sent": self.out.sent, "abandoned": self.maker.abandoned}


class Outbox:
    """An actor's gradient messages in flight: a ring of records, each reused once its send finished. A record
    with ``length`` 0 carries no gradient: a sign of life, sent when nothing was sent for a quarter of
    ``runtime.timeout_s`` (the learner bounds each actor's silence by ``runtime.timeout_s``)."""

    def __init__(self, world, learner: int, gspec, slots: int, timeout: float):
        self.world, self.learner, self.timeout = world, learner, timeout
        self.ring = [gspec.alloc() for _ in range(slots)]
        self.sends: List = [None] * slots
        self.slot = self.sent = 0
        self.last = time.monotonic()

    def send(self, fill) -> None:
        """``fill(record)`` writes the message into a free record, which is then sent."""
        i = self.slot
        if self.sends[i] is not None:
            protocol.wait_buffer(self.sends[i], self.timeout, f"learner rank {self.learner} to take a gradient")
        fill(self.ring[i])
        self.sends[i] = protocol.send_gradient(self.world, self.learner, self.ring[i])
        self.slot = (i + 1) % len(self.ring)
        self.sent += 1
        self.last = time.monotonic()

    def keep_alive(self, fill) -> None:
        if time.monotonic() - self.last > self.timeout / 4:
            self.send(fill)

    def flush(self) -> None:
        for r in self.sends:
            if r is not None:
                protocol.wait_buffer(r, self.timeout, f"learner rank {self.learner} to take a gradient")
