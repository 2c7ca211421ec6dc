"""Learner <-> learner collectives behind one small adapter with two backends.

``horovod`` (default): ``hvd.init(comm=learner_comm)``; gradients are summed with ``hvd.allreduce``.
``mpi``: plain mpi4py ``Iallreduce`` on one flat gradient buffer (for clusters without Horovod).
Both sum the same flat float32 vector (each learner's gradient scaled by its sample count, plus the
count) and divide afterwards, so both give the same parameters. Small control data (metrics,
episode rows, stop votes) always go over the mpi4py learner communicator. Actors never import this.
"""
from __future__ import annotations

import math
import time
from typing import List

import numpy as np
import torch

from hpcmarl.comm.protocol import wait_buffer
from hpcmarl.comm.watchdog import guard
from hpcmarl.models import assign_flat, flat_params


class Collective:
    def __init__(self, comm, backend: str = "horovod"):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.backend = backend
        self.hvd = None
        self.t_allreduce = 0.0
        if backend == "horovod":
            try:
                import horovod.torch as hvd
            except ImportError as e:
                raise RuntimeError(f"learner.backend=horovod but Horovod cannot be imported ({e}); "
                                   f"run tools/bootstrap.sh or set learner.backend=mpi") from None
            with guard("every learner to initialise Horovod"):
                hvd.init(comm=comm)
            if hvd.size() != self.size:
                raise RuntimeError(f"Horovod sees {hvd.size()} learners, the learner communicator has {self.size}")
            self.hvd = hvd
        elif backend != "mpi":
            raise ValueError(f"unknown learner backend {backend!r}")

    # ---- numeric --------------------------------------------------------------------------------
    def allreduce_sum(self, x: np.ndarray) -> np.ndarray:
        """Element-wise sum over learners of a float32/float64 array (the gradient path)."""
        if self.size == 1:
            return x
        t0 = time.perf_counter()
        with guard(f"every learner's all-reduce of {x.size} values"):
            out = self._allreduce_sum(x)
        self.t_allreduce += time.perf_counter() - t0
        return out

    def _allreduce_sum(self, x: np.ndarray) -> np.ndarray:
        if self.hvd is not None:
            out = self.hvd.allreduce(torch.from_numpy(np.ascontiguousarray(x)), op=self.hvd.Sum,
                                     name=f"hpcmarl.sum.{x.size}").numpy()
        else:
            from mpi4py import MPI

            out = np.ascontiguousarray(x).copy()
            self._finish(self.comm.Iallreduce(MPI.IN_PLACE, out, op=MPI.SUM))
        return out

    @staticmethod
    def _finish(req) -> None:
        """Complete a non-blocking collective, testing it with sleeps of 0.2 ms in between: a learner that
        waits for the others leaves its core to them (a blocking collective spins in MPI; with more ranks than cores,
        as on a node shared by several ranks or the cluster in one box, the spinning starves the ranks it waits
        for). The guard around the call bounds the wait."""
        wait_buffer(req, math.inf, "a collective", max_sleep=0.0002)  # each step of the reduction is a test

    def reduce_grads(self, params: List[torch.nn.Parameter], weight: float) -> None:
        """Replace every learner's gradients by the sample-weighted mean over learners. A parameter the loss
        did not reach (``grad`` None, e.g. MA-Trace's entropy multiplier with ``entropy_adaptive=false``) takes
        part with a zero gradient, so every learner steps the same parameters."""
        if self.size == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad.detach().reshape(-1).cpu() for p in params]
        flat = torch.cat(grads + [torch.ones(1)]).numpy() * np.float32(weight)
        total = self.allreduce_sum(flat.astype(np.float32))
        mean = torch.from_numpy(total[:-1] / total[-1])
        off = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(mean[off:off + n].view_as(p.grad))
            off += n

    def broadcast_params(self, params: List[torch.nn.Parameter], root: int = 0) -> None:
        if self.size == 1:
            return
        with guard("learner 0's parameters (broadcast)"):
            self._broadcast_params(params, root)

    def _broadcast_params(self, params, root: int) -> None:
        if self.hvd is not None:
            self.hvd.broadcast_parameters([(str(i), p) for i, p in enumerate(params)], root_rank=root)
        else:
            from mpi4py import MPI

            flat = flat_params(params)
            self.comm.Bcast([flat, MPI.FLOAT], root=root)
            assign_flat(params, flat)

    # ---- control ---------------------------------------------------------------------------------------
    # With Horovod every learner <-> learner collective goes through Horovod too: its background thread runs
    # collectives on its own copy of the communicator all the time, and an mpi4py collective of the main thread
    # running beside it deadlocked with learners on two nodes over TCP (Open MPI 4.1; shared memory hid it).
    def sum_small(self, x: np.ndarray) -> np.ndarray:
        return self._reduce_small(x, "SUM")

    def max_small(self, x: np.ndarray) -> np.ndarray:
        return self._reduce_small(x, "MAX")

    def sum_named(self, values: dict) -> dict:
        """Sum named statistics across the learners in one reduction: ``{name: number or 1-d array}`` in, the same
        names with their sums (float64) out, so no caller indexes a packed vector by hand."""
        parts = {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in values.items()}
        tot = self.sum_small(np.concatenate(list(parts.values())) if parts else np.zeros(0))
        out, i = {}, 0
        for k, p in parts.items():
            out[k] = tot[i:i + p.size] if np.ndim(values[k]) else float(tot[i])
            i += p.size
        return out

    def _reduce_small(self, x, op: str) -> np.ndarray:
        out = np.asarray(x, np.float64).copy()
        if self.size > 1:
            from mpi4py import MPI

            with guard(f"every learner's {op.lower()} of {out.size} counters (votes, statistics)"):
                if self.hvd is not None:
                    out = self.hvd.allreduce(torch.from_numpy(out), op=getattr(self.hvd, op.capitalize()),
                                             name=f"hpcmarl.{op.lower()}.{out.size}").numpy()
                else:
                    self._finish(self.comm.Iallreduce(MPI.IN_PLACE, out, op=getattr(MPI, op)))
        return out

    def gather(self, obj, root: int = 0):
        if self.size == 1:
            return [obj]
        with guard("every learner's rows (gather)"):
            if self.hvd is not None:
                every = self.hvd.allgather_object(obj, name="hpcmarl.gather")
                return every if self.rank == root else None
            return self.comm.gather(obj, root=root)

    def bcast(self, obj, root: int = 0):
        if self.size == 1:
            return obj
        with guard(f"learner {root}'s broadcast"):
            if self.hvd is not None:
                return self.hvd.broadcast_object(obj, root_rank=root, name="hpcmarl.bcast")
            return self.comm.bcast(obj, root=root)

    def close(self):
        if self.hvd is not None:
            self.hvd.shutdown()
