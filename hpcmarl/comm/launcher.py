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
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

MARKER = ".hpcmarl-abort"
LAUNCHERS = ("mpirun", "mpiexec", "orterun", "prterun", "prte", "hydra_pmi_proxy", "mpiexec.hydra")

_run_dir: Optional[str] = None
_who = "a rank"


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


def set_run_dir(run_dir: str, who: str) -> None:
    """Where this rank leaves its marker when it aborts (every rank, once the run directory is known), and how the
    marker names it (e.g. ``rank 2 (actor)``)."""
    global _run_dir, _who
    _run_dir, _who = run_dir, " ".join(who.split())


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


def abort(comm, why: str = "") -> None:  # pragma: no cover - ends the process
    """Mark, then abort every rank of the job through ``comm`` (MPI_Abort), and leave this process."""
    mark_abort(why)
    try:
        comm.Abort(1)
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
