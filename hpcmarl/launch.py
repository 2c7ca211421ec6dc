"""The entry point of a training run on every rank: pre-flight, communicators, fail-fast, signals.

Order on every rank: config (already validated) -> world size -> topology -> (rank 0) pre-flight of
the run directory and the checkpoint to resume from (:mod:`hpcmarl.preflight`), broadcast -> run directory
prepared -> roles.
Nothing is written before pre-flight has passed, so bad input leaves existing files untouched (rank 0 first
takes the run directory's lock, :mod:`hpcmarl.runlock`, and removes it again when pre-flight fails).
An exception on any rank prints rank, host and traceback and aborts the whole MPI job.
"""
from __future__ import annotations

import importlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import traceback
from typing import Optional

import numpy as np

from hpcmarl import __version__, faults, runlock, stopsignals, storage
from hpcmarl.algos import base as algos
from hpcmarl.algos.base import uses_state
from hpcmarl.comm import launcher, watchdog
from hpcmarl.config import Config
from hpcmarl.preflight import PreflightError, preflight, probe_learner
from hpcmarl.stopsignals import EXIT_PREEMPTED
from hpcmarl.topology import LEAGUE, LEARNER, Layout, make_layout, make_league_layout
from hpcmarl.typedconfig import ConfigError, to_yaml


def git_sha() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def package_versions() -> dict:
    out = {"hpcmarl": __version__, "python": platform.python_version()}
    for mod in ("numpy", "torch", "h5py", "mpi4py", "pettingzoo", "gymnasium", "mpe2", "horovod"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = "not installed"
    return out


class Context:
    """What every role receives: config, layout, communicators, run directory, resume point."""

    def __init__(self, cfg: Config, layout: Layout, world, learner_comm, pre: dict, config_yaml: str, argv):
        self.cfg, self.layout, self.world, self.learner_comm = cfg, layout, world, learner_comm
        self.group_comm = None  # league mode: the learners of this rank's learner group
        self.rank = world.Get_rank()
        self.role = layout.role(self.rank)
        self.run_dir = pre["run_dir"]
        self.resume_path = pre["resume_path"]
        self.start_update = pre["start_update"]
        self.config_yaml = config_yaml
        self.argv = argv
        self.host = socket.gethostname()
        self.preempted = False  # set when a signal stopped the run before its end
        self.faults = faults.Hook(self.rank)  # a test's injected fault (hpcmarl/faults.py): the loops call it
        self.hosts = None
        self.device = None
        self.env_spec = None

    # ---- signals ------------------------------------------------------------------------------------
    def stop_requested(self) -> bool:
        return stopsignals.signalled.is_set()

    # ---- startup agreement ----------------------------------------------------------------------------
    def agree_startup(self):
        """Every rank reports that its env and model are built; bounded wait, then go."""
        from mpi4py import MPI

        from hpcmarl.comm.protocol import wait_buffer

        ok = np.array([1], np.int32)
        out = np.zeros(1, np.int32)
        req = self.world.Iallreduce(ok, out, op=MPI.MIN)
        wait_buffer(req, self.cfg.runtime.startup_timeout_s, "every rank to finish startup")
        if out[0] != 1:  # pragma: no cover - a failing rank aborts the job before this
            raise RuntimeError("startup failed on another rank")
        watchdog.set_phase("run")

    def run_attrs(self) -> dict:
        from mpi4py import MPI

        return {
            "config": self.config_yaml,
            "git_sha": git_sha(),
            "versions": package_versions(),
            "mpi_library": MPI.Get_library_version().strip().splitlines()[0],
            "rank_map": [{"rank": r, "role": role, "host": self.hosts[r]} for r, role in self.layout.roles()],
            "slurm": {k: v for k, v in os.environ.items() if k.startswith("SLURM_")},
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command_line": " ".join(self.argv),
            "world_size": self.layout.world_size,
            "learners": self.layout.learners,
            "actors": self.layout.actors,
            "env": self.cfg.env.name,
            "algo": self.cfg.algo.name,
            "groups": ([g.name for g in self.cfg.league.groups] if self.layout.league else
                       [g.name for g in self.env_spec.groups] if self.env_spec else []),
            "group_agents": {g.name: g.agents for g in self.env_spec.groups} if self.env_spec else {},
            "league_groups": [g.name for g in self.cfg.league.groups] if self.layout.league else [],
            "league_policy_groups": [g.policy_group for g in self.cfg.league.groups] if self.layout.league else [],
            "league_outcome": self.cfg.league.outcome if self.layout.league else "",
        }


def set_threads(cfg: Config, world, role: str):
    import torch
    from mpi4py import MPI

    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    n_local = local.Get_size()
    local_rank = local.Get_rank()
    local.Free()
    want = cfg.learner.threads if role == LEARNER else cfg.actors.threads
    if want == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        # under a binding launcher the affinity mask is already this rank's share
        want = max(1, cores // n_local) if cores >= n_local else 1
    torch.set_num_threads(int(want))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return local_rank


def pick_device(cfg: Config, local_rank: int):
    import torch

    d = cfg.learner.device
    if d == "auto":
        d = "cuda" if torch.cuda.is_available() else "cpu"
    if d == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("learner.device=cuda but torch sees no GPU")
        d = f"cuda:{local_rank % torch.cuda.device_count()}"
    return torch.device(d)


def layout_for(cfg: Config, world_size: int) -> Layout:
    """The rank layout of ``cfg`` for ``world_size`` ranks (league mode: from ``league.groups``)."""
    if cfg.league.enabled:
        return make_league_layout(world_size, [(g.name, g.learners, g.actors) for g in cfg.league.groups])
    return make_layout(world_size, cfg.topology.learners, cfg.topology.actors)


def run_training(cfg: Config, fresh: bool = False, argv=()) -> int:
    """Run on every rank of the MPI job. Returns the exit status (errors in pre-flight: 2)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if rank == 0 else (lambda msg: None)
    try:
        layout = layout_for(cfg, size)
        faults.spec()  # a test's fault injection, parsed once (a malformed one is refused here)
    except ValueError as e:
        say(f"hpcmarl: error: {e}")
        return 2
    stopsignals.install()  # (the hpcmarl command installed them already; a direct caller gets them here)
    # MPI: every blocking call from here on runs under this rank's watchdog (hpcmarl.comm.watchdog)
    watchdog.install(f"rank {rank} ({layout.role(rank)}) on {socket.gethostname()}", cfg.runtime.startup_timeout_s,
                     cfg.runtime.timeout_s, abort=lambda: _abort_job(world))
    try:
        code = _run_roles(cfg, layout, world, fresh or cfg.fresh, argv, say)
        if code in (0, EXIT_PREEMPTED):  # MPI: a bounded end, so no rank waits forever in MPI_Finalize for a hung one
            from hpcmarl.comm.protocol import barrier

            barrier(world, cfg.runtime.timeout_s, "every rank to finish (a rank still busy or hung)")
        return code
    finally:
        watchdog.uninstall()


def _abort_job(world) -> None:  # pragma: no cover - ends the process
    """The watchdog's way out: abort every rank of the job (and leave this process should that return)."""
    code, note = launcher.unreachable_exit()
    if note:
        sys.stderr.write(f"hpcmarl: {note}\n")
        sys.stderr.flush()
    launcher.abort(world, "a bounded wait ran out (watchdog)", code)


def _run_roles(cfg: Config, layout: Layout, world, fresh: bool, argv, say) -> int:
    rank = world.Get_rank()
    # ---- pre-flight on rank 0, nothing written yet ------------------------------------------------------
    pre = None
    if rank == 0:
        faults.Hook(rank).at("preflight")
        try:
            runlock.take(cfg.resolved_run_dir, cfg.runtime.timeout_s, say)  # one job per run directory
            pre = preflight(cfg, fresh)
        except (PreflightError, ConfigError, runlock.RunDirError) as e:
            pre = {"error": str(e)}
    elif layout.role(rank) == LEARNER:
        try:  # MPI: the same build warms the lazy imports (env package, torch's optimizer machinery) this learner
            probe_learner(cfg)  # needs next, while rank 0 checks; rank 0 reports any error
        except Exception:  # noqa: BLE001 - rank 0 meets the same error and reports it
            pass
    with watchdog.guard("rank 0's pre-flight (config, run directory, checkpoint)"):
        pre = world.bcast(pre, root=0)
    if "error" in pre:
        say(f"hpcmarl: error: {pre['error']}")
        runlock.release()  # (rank 0) a pre-flight error leaves the run directory as it was
        return 2
    for w in pre["warnings"]:
        say(w)
    # an abort's marker (for the launcher guard) and its exit status
    launcher.configure(pre["run_dir"], f"rank {rank} ({layout.role(rank)})", cfg.runtime.max_requeues)
    config_yaml = to_yaml(cfg)
    if rank == 0:
        run_dir = pre["run_dir"]
        if pre["move_aside"]:
            aside = f"{run_dir.rstrip('/')}.old-{time.strftime('%Y%m%d-%H%M%S')}"
            os.rename(run_dir, aside)
            runlock.moved(aside)  # the lock went along: lock the new run directory, unlock the old run
            say(f"hpcmarl: fresh start: moved the previous run to {aside}")
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        os.makedirs(os.path.join(run_dir, "trajectories"), exist_ok=True)
        stale = storage.remove_stale_temporaries(run_dir)  # a SIGKILL during a checkpoint (or a snapshot) left them
        if stale:
            say(f"hpcmarl: removed {len(stale)} temporary file(s) of writes that never finished: "
                + ", ".join(os.path.relpath(p, run_dir) for p in stale))
        with open(os.path.join(run_dir, "config.yaml.tmp"), "w") as f:
            f.write(config_yaml)
        os.replace(os.path.join(run_dir, "config.yaml.tmp"), os.path.join(run_dir, "config.yaml"))
        print(layout.describe(), flush=True)
        # MPI: a node that does not answer must not keep mpirun (and the allocation) after an abort
        launcher.start_guard(run_dir, min(60.0, max(10.0, cfg.runtime.timeout_s / 2)))
    with watchdog.guard("rank 0 to prepare the run directory"):
        world.Barrier()

    # ---- communicators, built once and passed in -----------------------------------------------------------
    role = layout.role(rank)
    with watchdog.guard("every rank to build the communicators"):
        learner_comm = world.Split(color=0 if role == LEARNER else 1, key=rank)
        ctx = Context(cfg, layout, world, learner_comm if role == LEARNER else None, pre, config_yaml, list(argv))
        group_comm = None
        if layout.league:  # one communicator per learner group: its AllReduce never leaves the group
            group_comm = world.Split(color=layout.group_of(rank) if role == LEARNER else layout.world_size, key=rank)
            ctx.group_comm = group_comm if role == LEARNER else None
        ctx.hosts = world.allgather(ctx.host)
        launcher.set_hosts(ctx.hosts)  # a line that names a rank names its node too
        local_rank = set_threads(cfg, world, role)
    from hpcmarl.envs import probe_spec

    roles = importlib.import_module(algos.get(cfg.algo.name).data_flow().roles)  # the flow's role module (code paths)

    if role == LEAGUE:
        from hpcmarl.roles.league import league_main

        league_main(ctx)
    elif role == LEARNER:
        ctx.device = pick_device(cfg, local_rank)
        if layout.league:
            from hpcmarl.league.seats import league_spec

            ctx.env_spec = league_spec(cfg, layout.group_of(rank))
        else:
            ctx.env_spec = probe_spec(cfg.env.name, cfg.env.kwargs, cfg.policy_map, uses_state(cfg.algo))
        roles.learner_main(ctx)
    else:
        roles.actor_main(ctx)
    learner_comm.Free()
    if group_comm is not None:
        group_comm.Free()
    if ctx.preempted:
        # Only the lead learner reports 75 (the job's status is the highest of its ranks'): under
        # `srun --kill-on-bad-exit=1` an earlier non-zero exit of another rank would make Slurm kill the
        # lead while it finishes, and the step would end with 143 instead of 75 (no requeue).
        if rank != 0:
            return 0
        print(f"[hpcmarl] stopped by a signal; exit status {EXIT_PREEMPTED} (resume by running the same "
              f"command again: the run directory holds the checkpoint)", flush=True)
        return EXIT_PREEMPTED
    return 0


def disk_full_line(e: BaseException, run_dir: Optional[str]) -> str:
    """The one line a full disk gets (no traceback): what was not written, the free space, what to do."""
    ckpts = storage.list_checkpoints(os.path.join(run_dir, "checkpoints")) if run_dir else []
    newest = f"the newest complete checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was written yet"
    quota = storage.quota_exceeded(e)  # EDQUOT: the file system may have room, this user's or project's quota not
    if isinstance(e, storage.DiskFull):  # our own check, before a write
        msg = str(e)
    else:  # the OS or HDF5 met ENOSPC (another rank filled the disk between two checks) or EDQUOT
        u = shutil.disk_usage(run_dir or ".")
        what, within = ("disk quota exceeded on", ", but not within the quota") if quota else ("no space left on", "")
        msg = (f"{what} the file system of {run_dir} ({u.free / 2 ** 20:.1f} MiB free of {u.total / 2 ** 20:.1f} MiB"
               f"{within}): {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    todo = ("free space within the quota (see `quota -s`, or `lfs quota -h -u $USER` on Lustre)" if quota
            else "free space (or lower output.min_free_mb)")
    return f"{msg}; {newest}; {todo} and run the same command again to {'resume' if ckpts else 'start'}"


def abort_on_exception(fn, *args, run_dir: Optional[str] = None, **kwargs) -> int:
    """Run ``fn``; on any exception print rank, host and traceback (a full disk: one line), then abort the whole
    MPI job."""
    try:
        return fn(*args, **kwargs)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - everything must abort the job, KeyboardInterrupt too
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0
        from hpcmarl.comm.protocol import CommTimeout

        code = 1
        if storage.disk_full(e):
            tb = ""
            what = disk_full_line(e, run_dir)
        elif isinstance(e, CommTimeout):  # a bounded wait ran out: the line says what it waited for, and where
            tb = ""
            code, note = launcher.unreachable_exit()
            what = launcher.with_hosts(f"{e}; aborting the job") + (f" ({note})" if note else "")
        elif isinstance(e, ConfigError):  # e.g. a live logger's package missing at the lead's open: one line
            tb = ""
            what = f"{e}; aborting the job"
        else:
            tb = traceback.format_exc()
            what = f"{type(e).__name__}: {e}"
        sys.stderr.write(f"hpcmarl: rank {rank} on {socket.gethostname()} failed: {what}\n{tb}")
        sys.stderr.flush()
        runlock.release()  # rank 0's error ends the job: the run directory is free again
        if MPI.Is_initialized() and MPI.COMM_WORLD.Get_size() > 1:
            launcher.abort(MPI.COMM_WORLD, what.splitlines()[0] if what else "an error", code)
        return code
