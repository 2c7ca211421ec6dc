"""An aborted job must also end its launcher, even when a node does not answer (no MPI import here).

``MPI_Abort`` ends every rank the launcher can reach, but ``mpirun`` then waits for the daemon of every node before
it exits: a node that is frozen, or whose link is cut, never answers, and the job would hold its allocation until
its wall-time limit. So every rank that aborts first leaves a marker in the run directory (shared storage: any
node's rank can write it), and the lead learner, when its launcher runs on its own node (``mpirun`` started it),
starts a small guard process at start-up: the guard watches the launcher and the marker, and when the launcher is
still there ``grace`` seconds after the marker appeared, it prints one line and ends the launcher (SIGKILL). Under
Slurm's ``srun`` the step is ended by ``srun --kill-on-bad-exit``.

    python -m hpcmarl.comm.launcher LAUNCHER_PID MARKER GRACE_S   # the guard (started by :func:`start_guard`)
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

MARKER = ".hpcmarl-abort"
LAUNCHERS = ("mpirun", "mpiexec", "orterun", "prterun", "prte", "hydra_pmi_proxy", "mpiexec.hydra")

EXIT_UNREACHABLE = 69  # EX_UNAVAILABLE: a rank was lost or did not answer in time; slurm/step.sh requeues the job

_run_dir: Optional[str] = None
_who = "a rank"
_hosts: List[str] = []
_max_requeues = 0


def _stat(pid: int):
    """``(name, parent pid)`` of a running process, from /proc (None when it is gone, a zombie, or this is not
    Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2:].split()[:2]
    return None if state in "ZX" else (name, int(ppid))


def find_launcher(pid: Optional[int] = None) -> Optional[int]:
    """The pid of the ``mpirun`` (or another launcher of LAUNCHERS) among this process's ancestors on this node."""
    pid = os.getppid() if pid is None else pid
    for _ in range(16):
        st = _stat(pid)
        if st is None or pid <= 1:
            return None
        if st[0] in LAUNCHERS:
            return pid
        pid = st[1]
    return None


def marker_path(run_dir: str) -> str:
    return os.path.join(run_dir, MARKER)


def configure(run_dir: str, who: str, max_requeues: int) -> None:
    """(every rank, once the run directory is known) Where this rank leaves its marker when it aborts, how the marker
    names it (e.g. ``rank 2 (actor)``), and how many requeues a lost rank may cost under Slurm."""
    global _run_dir, _who, _max_requeues
    _run_dir, _who, _max_requeues = run_dir, " ".join(who.split()), int(max_requeues)


def set_hosts(hosts: List[str]) -> None:
    """Every rank's host (index: rank), so that a line naming a rank names its node too."""
    _hosts[:] = list(hosts)


def with_hosts(line: str) -> str:
    """``… from actor rank 2 …`` -> ``… from actor rank 2 (node03) …`` for every rank whose host is known."""
    def name(m):
        r = int(m.group(1))
        return f"{m.group(0)} ({_hosts[r]})" if 0 <= r < len(_hosts) else m.group(0)

    return re.sub(r"\brank (\d+)\b(?! on )", name, line)


def unreachable_exit() -> tuple:
    """``(exit status, note)`` of a job that lost a rank: 69 (requeued by slurm/step.sh) while this Slurm job has
    requeues left (``runtime.max_requeues``), else 1 with a note saying why it is not requeued."""
    if not os.environ.get("SLURM_JOB_ID"):
        return EXIT_UNREACHABLE, ""
    try:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        restarts = 0
    if restarts < _max_requeues:
        return EXIT_UNREACHABLE, (f"exit {EXIT_UNREACHABLE}: slurm/step.sh requeues the job, requeue {restarts + 1} of "
                                  f"runtime.max_requeues={_max_requeues}")
    return 1, f"not requeued: this job was requeued {restarts} time(s) (runtime.max_requeues={_max_requeues})"


def mark_abort(why: str) -> None:
    """Leave the marker (one line: host, pid, why) before ``MPI_Abort``; never raises."""
    if _run_dir is None:
        return
    try:
        with open(marker_path(_run_dir), "a") as f:
            f.write(f"{time.time():.3f}\t{_who} on {socket.gethostname()} (pid {os.getpid()})\t"
                    f"{' '.join(str(why).split())[:300]}\n")
    except OSError:
        pass


def abort(comm, why: str = "", code: int = 1) -> None:  # pragma: no cover - ends the process
    """Mark, then abort every rank of the job through ``comm`` (MPI_Abort with ``code``), and leave this process."""
    mark_abort(why)
    try:
        comm.Abort(code)
    finally:
        os._exit(1)


def start_guard(run_dir: str, grace_s: float) -> Optional[int]:
    """(lead learner) Remove an earlier incarnation's marker and start the guard when ``mpirun`` runs on this node;
    returns the guard's pid (None: no launcher here to guard)."""
    try:
        os.remove(marker_path(run_dir))
    except OSError:
        pass
    launcher = find_launcher()
    if launcher is None:
        return None
    # the guard holds none of this rank's pipes (mpirun waits for them to close before it counts a rank as ended)
    p = subprocess.Popen([sys.executable, "-m", "hpcmarl.comm.launcher", str(launcher), marker_path(run_dir),
                          f"{grace_s:g}"], start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    return p.pid


def _say(launcher: int, line: str) -> None:
    """Write ``line`` where the launcher's own messages go (its stderr), opened only now: holding the launcher's
    pipe would keep whoever reads it waiting for the end of the output."""
    try:
        with open(f"/proc/{launcher}/fd/2", "a") as f:
            f.write(line + "\n")
    except OSError:
        pass


def guard(launcher: int, marker: str, grace_s: float, poll_s: float = 0.5) -> int:
    """Watch ``launcher`` until it exits; end it when it outlives the marker by ``grace_s``. Returns 1 when it had
    to end the launcher, else 0."""
    born = time.time()
    while _stat(launcher) is not None:
        try:
            seen = os.stat(marker).st_mtime
        except OSError:
            seen = None
        if seen is not None and seen >= born - 1 and time.time() - seen > grace_s:
            try:
                with open(marker) as f:
                    first = f.readline().rstrip("\n").split("\t")
                who = f"{first[1]}: {first[2]}" if len(first) == 3 else "a rank"
            except OSError:
                who = "a rank"
            _say(launcher, f"hpcmarl: the job aborted {time.time() - seen:.0f}s ago ({who}) but its launcher "
                           f"(pid {launcher}) still waits for a node that does not answer; ending it")
            try:  # (SIGTERM would make mpirun try its own abort again, and wait again)
                os.kill(launcher, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return 1
        time.sleep(poll_s)
    return 0


if __name__ == "__main__":  # pragma: no cover - the guard process
    sys.exit(guard(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
