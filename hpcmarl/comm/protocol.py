"""The actor <-> learner protocol: tags, mirrored send/recv pairs, the stop message, bounded waits.

Hot-path messages are preallocated byte buffers (:mod:`hpcmarl.spec`) sent with the uppercase
buffer calls; small control messages (startup info, the actor's goodbye) use pickled lowercase calls
on the wire only (nothing received here is ever written to or loaded from a file).

Learner -> actor: ``WEIGHTS`` records (version, command, flat policy parameters; for sparse policies
only the active weights, preceded by a ``MASKS`` message whenever the masks changed). The documented stop
message is a ``WEIGHTS`` record with ``command = CMD_STOP`` (or ``CMD_PREEMPTED`` when a signal stopped
an unfinished run); the actor answers with a ``BYE`` control
message carrying what it discarded, then exits its loop.
Actor -> learner: ``UNROLL`` records (rollout flow) or ``GRADIENT`` records (gradient flow: one per
finished trajectory, tagged with its round; the learner drains them until the actor's ``BYE`` says how
many it sent).
Every wait polls with back-off and raises :class:`CommTimeout` after ``timeout`` seconds.

A record larger than :data:`CHUNK_BYTES` travels as consecutive messages of the same tag, one per chunk: MPI 3 counts
are C ints, so one message of 2 GiB or more fails (``MPI_ERR_ARG`` on Open MPI 4.1), and a batched actor's unroll
reaches that with thousands of copies. MPI delivers messages between two ranks with one tag in the order they were
posted, so the chunks of a record land in place; the caller sees one request (:class:`Requests`).
"""
from __future__ import annotations

import os
import time
from enum import IntEnum

import numpy as np

from hpcmarl.comm.spec import CMD_PREEMPTED, CMD_RUN, CMD_STOP, WEIGHT_INDEX, Record

# bytes per message of a record sent in chunks (the environment variable exists for the tests, which chunk small ones)
CHUNK_BYTES = int(os.environ.get("HPCMARL_MPI_CHUNK_BYTES", str(1 << 30)))


class Tag(IntEnum):
    WEIGHTS = 11
    UNROLL = 12
    CONTROL = 13
    BYE = 14
    GRADIENT = 15
    MASKS = 16
    LEAGUE = 17  # actor / learner lead -> league rank: requests and reports (pickled dicts)
    LEAGUE_REPLY = 18  # league rank -> actor / learner lead
    POOL = 19  # learner lead -> league rank: flat policy parameters of a new snapshot (float32 buffer)


class CommTimeout(RuntimeError):
    pass


class Backoff:
    """The sleep between polls of a wait loop: none at first, then from ``first`` growing 1.5x to ``cap`` seconds, or
    to ``late`` x the time waited so far where that is longer; :meth:`reset` after a poll that found work. A waiting
    rank is thus at most ``cap`` (1 ms) or 1% of its wait late, and a long wait costs a few hundred polls instead of
    one per millisecond: ranks that wait on a node shared by more ranks than cores leave the cores to the others
    (``hpcmarl.sizing.profile.wait_load`` measures what a wait costs)."""

    def __init__(self, first: float = 0.0002, cap: float = 0.001, late: float = 0.01):
        self.first, self.cap, self.late = first, cap, late
        self.s, self.since = 0.0, None

    def wait(self) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        time.sleep(self.s)
        longest = max(self.cap, self.late * (now - self.since))
        self.s = min(self.first if self.s == 0 else self.s * 1.5, longest)

    def reset(self) -> None:
        self.s, self.since = 0.0, None


def poll_until(test, timeout: float, what: str, meanwhile=None, first: float = 0.0002, cap: float = 0.001) -> None:
    """Call ``test()`` until it is true, sleeping by :class:`Backoff` between calls; ``meanwhile()`` (-> True when it
    did something) runs between them: work the peer needs done first. :class:`CommTimeout` naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    backoff = Backoff(first, cap)
    while not test():
        if meanwhile is not None and meanwhile():
            continue
        if time.monotonic() > deadline:
            raise CommTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        backoff.wait()


def wait(req, timeout: float, what: str):
    """Poll a lowercase (pickled) mpi4py request until done and return its object; raise
    :class:`CommTimeout` naming ``what`` after ``timeout`` seconds."""
    got = []

    def test() -> bool:
        done, obj = req.test()
        got[:] = [obj]
        return done

    poll_until(test, timeout, what, first=0.002, cap=0.05)
    return got[-1]


def wait_buffer(req, timeout: float, what: str, meanwhile=None, max_sleep: float = 0.001):
    """Like :func:`wait` for buffer requests (``Request.Test``); see :func:`poll_until`."""
    poll_until(req.Test, timeout, what, meanwhile, cap=max_sleep)


class Requests:
    """The requests of a record's chunks as one request: ``Test`` (all done), ``Wait``, ``Cancel``."""

    def __init__(self, reqs):
        self.reqs = reqs

    def Test(self) -> bool:  # noqa: N802 - mpi4py's Request interface
        from mpi4py import MPI

        return MPI.Request.Testall(self.reqs)

    def Wait(self) -> None:  # noqa: N802
        from mpi4py import MPI

        MPI.Request.Waitall(self.reqs)

    def Cancel(self) -> None:  # noqa: N802
        from mpi4py import MPI

        for r in self.reqs:
            if r != MPI.REQUEST_NULL:
                r.Cancel()


def post_buffer(call, buf: np.ndarray, peer: int, tag: int):
    """``call`` (``comm.Isend``, ``Issend`` or ``Irecv``) over ``buf``'s bytes: one request, or :class:`Requests`
    over chunks of :data:`CHUNK_BYTES` when the buffer is larger."""
    from mpi4py import MPI

    b = buf.reshape(-1).view(np.uint8)
    if b.nbytes <= CHUNK_BYTES:
        return call([b, MPI.BYTE], peer, tag)
    return Requests([call([b[i:i + CHUNK_BYTES], MPI.BYTE], peer, tag) for i in range(0, b.nbytes, CHUNK_BYTES)])


# ---- learner side --------------------------------------------------------------------------------
def send_weights(comm, actor_rank: int, rec: Record, version: int, command: int = CMD_RUN):
    rec["meta"][WEIGHT_INDEX["version"]] = version
    rec["meta"][WEIGHT_INDEX["command"]] = command
    return post_buffer(comm.Isend, rec.buf, actor_rank, Tag.WEIGHTS)


def post_recv_unroll(comm, actor_rank: int, rec: Record):
    return post_buffer(comm.Irecv, rec.buf, actor_rank, Tag.UNROLL)


def post_recv_gradient(comm, actor_rank: int, rec: Record):
    return post_buffer(comm.Irecv, rec.buf, actor_rank, Tag.GRADIENT)


def send_stop(comm, actor_rank: int, rec: Record, version: int, preempted: bool = False):
    return send_weights(comm, actor_rank, rec, version, CMD_PREEMPTED if preempted else CMD_STOP)


def stop_and_drain(comm, actor_rank: int, rec: Record, version: int, preempted: bool, take, received,
                   timeout: float) -> dict:
    """Stop an actor that may still have messages on the way (asynchronous flows): send the stop, then
    keep taking its messages (``take()`` -> True when one was taken and the receive posted again) until
    its BYE has come and ``received()`` reaches the count the BYE says it sent. Returns the BYE."""
    req = send_stop(comm, actor_rank, rec, version, preempted)
    bye_req = comm.irecv(source=actor_rank, tag=Tag.BYE)
    bye = None
    deadline = time.monotonic() + timeout
    while bye is None or received() < bye["sent"]:
        if take():
            continue
        if bye is None:
            done, obj = bye_req.test()
            bye = obj if done else None
        if time.monotonic() > deadline:
            raise CommTimeout(f"timed out after {timeout:.0f}s waiting for actor rank {actor_rank} to stop")
        time.sleep(0.001)
    wait_buffer(req, timeout, f"actor rank {actor_rank} to take the stop")
    return bye


def recv_bye(comm, actor_rank: int, timeout: float) -> dict:
    return wait(comm.irecv(source=actor_rank, tag=Tag.BYE), timeout, f"the goodbye of actor rank {actor_rank}")


# ---- actor side ----------------------------------------------------------------------------------
def post_recv_weights(comm, learner_rank: int, rec: Record):
    return post_buffer(comm.Irecv, rec.buf, learner_rank, Tag.WEIGHTS)


def send_masks(comm, actor_rank: int, bits):
    """Sparse policies: the packed weight masks (sent before a weights record whose ``mask_version``
    changed); ``bits`` must stay untouched until the request completes."""
    return post_buffer(comm.Isend, bits, actor_rank, Tag.MASKS)


def recv_masks(comm, learner_rank: int, bits, timeout: float) -> None:
    req = post_buffer(comm.Irecv, bits, learner_rank, Tag.MASKS)
    wait_buffer(req, timeout, f"weight masks from learner rank {learner_rank}")


def recv_weights(comm, learner_rank: int, rec: Record, timeout: float):
    """Block (bounded) for the next weights record; returns ``(version, command)``."""
    wait_buffer(post_recv_weights(comm, learner_rank, rec), timeout, f"weights from learner rank {learner_rank}")
    return weights_header(rec)


def weights_header(rec: Record):
    """``(version, command)`` of a weights record."""
    return int(rec["meta"][WEIGHT_INDEX["version"]]), int(rec["meta"][WEIGHT_INDEX["command"]])


def send_unroll(comm, learner_rank: int, rec: Record, synchronous: bool = False):
    """Start sending an unroll; the caller must not modify ``rec`` until the request completes.
    ``synchronous`` (``Issend``) completes only once the learner has posted a matching receive, so a
    learner that stops posting receives holds its actors back whatever MPI's eager limit is."""
    return post_buffer(comm.Issend if synchronous else comm.Isend, rec.buf, learner_rank, Tag.UNROLL)


def send_gradient(comm, learner_rank: int, rec: Record):
    """Start sending a gradient record; ``rec`` must stay untouched until the request completes."""
    return post_buffer(comm.Isend, rec.buf, learner_rank, Tag.GRADIENT)


def send_bye(comm, learner_rank: int, info: dict, timeout: float):
    req = comm.isend(info, dest=learner_rank, tag=Tag.BYE)
    wait(req, timeout, f"learner rank {learner_rank} to take the goodbye")


def send_control(comm, dest: int, obj, timeout: float):
    wait(comm.isend(obj, dest=dest, tag=Tag.CONTROL), timeout, f"rank {dest} to take a control message")


def recv_control(comm, source: int, timeout: float):
    """A control message of any size (a resume's hello grows with the env copies' seeds: ``irecv`` without a buffer
    takes ``mpi4py.rc.irecv_bufsz``, 32 KiB, at most: a larger hello crashed the actor)."""
    return recv_object(comm, source, Tag.CONTROL, timeout, f"a control message from rank {source}")


def recv_object(comm, source: int, tag: int, timeout: float, what: str):
    """Receive a pickled control object of any size from ``source`` once it has arrived (probe first: ``irecv``
    would need a buffer bound)."""
    poll_until(lambda: comm.Iprobe(source=source, tag=tag), timeout, what, cap=0.005)
    return comm.recv(source=source, tag=tag)


def send_object(comm, dest: int, obj, tag: int, timeout: float):
    wait(comm.isend(obj, dest=dest, tag=tag), timeout, f"rank {dest} to take a control message")


# ---- league rank (hpcmarl.roles.league) -----------------------------------------------------------
def poll_league(comm):
    """League rank: ``(source, request)`` of the next LEAGUE message if one arrived, else None."""
    from mpi4py import MPI

    status = MPI.Status()
    if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=Tag.LEAGUE, status=status):
        return None
    src = status.Get_source()
    return src, comm.recv(source=src, tag=Tag.LEAGUE)


def send_snapshot(comm, league_rank: int, flat, timeout: float) -> None:
    """Learner lead -> league rank: the flat float32 policy of a new pool member (POOL)."""
    wait_buffer(comm.Isend(flat, dest=league_rank, tag=Tag.POOL), timeout, "the league rank to take a snapshot")


def recv_snapshot(comm, source: int, flat, timeout: float) -> None:
    wait_buffer(comm.Irecv(flat, source=source, tag=Tag.POOL), timeout, f"a snapshot from learner rank {source}")


def barrier(comm, timeout: float, what: str) -> None:
    """A bounded barrier (``Ibarrier``)."""
    wait_buffer(comm.Ibarrier(), timeout, what)
