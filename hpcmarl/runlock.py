"""One job per run directory: the lock file ``RUN/.lock``, and what ``--fresh`` may move aside.

Rank 0 takes the lock before pre-flight (:func:`take`, from :func:`hpcmarl.launch.run_training`), so the choice
between a fresh start and a resume, and everything written after it, belong to one job. The lock is a small JSON
file created atomically (``O_CREAT | O_EXCL``) with the holder's host, pid, Slurm job id, start time and the time it
was last refreshed; a daemon thread rewrites it every ``runtime.timeout_s / 4`` (temporary file + rename). It is
removed when the job ends: a normal end and a stop by a signal (at interpreter exit), an error on rank 0
(:func:`release`, from :func:`hpcmarl.launch.abort_on_exception`) and a pre-flight error. A crash (SIGKILL, a dead
node, another rank's abort) leaves it behind, and it goes stale:

* its process is gone: same host (and pid namespace), and ``kill(pid, 0)`` says no such process, or the pid now
  belongs to a younger process, or the host has rebooted since;
* or it belongs to an earlier incarnation of this Slurm job (same ``SLURM_JOB_ID``, a lower
  ``SLURM_RESTART_COUNT``): Slurm never runs two incarnations of one job at once, so a job requeued after its node
  died owns its run directory at once;
* or it was not refreshed for ``2 x runtime.timeout_s`` (the larger of the holder's and this job's value), whatever
  host it names (the only test for a holder on another node, or a suspended one).

A second job on a locked run directory stops with one line (exit 2) that names the holder and what to do; a stale
lock is taken over with a one-line warning. ``hpcmarl validate`` takes no lock.

``--fresh`` moves aside only an hpcmarl run: a directory that holds ``run.h5`` (the lead learner's file), or
``config.yaml`` next to ``checkpoints/`` (what every run writes right after pre-flight). Anything else that is not
empty (someone's home directory, a project checkout) is refused with one line (:func:`fresh_aside`).
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, List, Optional

LOCK_NAME = ".lock"


class RunDirError(RuntimeError):
    """A run directory this job may not use as asked (one line, exit 2)."""


class LockHeld(RunDirError):
    """Another job holds the run directory's lock."""


class NotARun(RunDirError):
    """``--fresh`` on a directory that is not an hpcmarl run."""


# --------------------------------------------------------------------------------------------------
# who holds it, and is that one still alive
# --------------------------------------------------------------------------------------------------
def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    text = _read_text(f"/proc/{pid}/stat")
    try:
        return int(text[text.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def identity() -> dict:
    """This process as a lock holder (without the times)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid), "pidns": _pid_namespace(),
            "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
            "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0")}


def process_gone(holder: dict) -> bool:
    """The holder's process is known to be gone: it ran on this host (same boot, same pid namespace) and its pid is
    free or taken by a younger process, or the host has rebooted since. False when that cannot be told (another
    host, another pid namespace) or the process is alive."""
    me = identity()
    if holder.get("host") != me["host"]:
        return False
    if holder.get("boot_id") and me["boot_id"] and holder["boot_id"] != me["boot_id"]:
        return True  # rebooted since: no process survives that
    if holder.get("pidns") and me["pidns"] and holder["pidns"] != me["pidns"]:
        return False  # another container on this host: its pids are not ours to look at
    try:
        pid = int(holder.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    stat = _read_text(f"/proc/{pid}/stat")
    if stat[stat.rfind(")") + 2:][:1] in ("Z", "X"):
        return True  # exited, not yet reaped (an aborted job's rank that its launcher has not waited for)
    start = holder.get("pid_start")
    now = _pid_start(pid)
    return start is not None and now is not None and int(start) != now  # the pid was reused


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def describe(holder: dict) -> str:
    """``pid 123 on host n01 (Slurm job 456), running since 2024-05-01T10:00:00+0200``."""
    if not holder.get("host"):
        return "an unknown job (the lock file is empty or unreadable)"
    job = f" (Slurm job {holder['slurm_job_id']})" if holder.get("slurm_job_id") else " (not a Slurm job)"
    since = f", running since {_stamp(float(holder['started']))}" if holder.get("started") else ""
    return f"pid {holder.get('pid')} on host {holder['host']}{job}{since}"


def read(path: str) -> dict:
    """The lock file's holder (``{}`` when it is empty or not JSON: being written, or damaged), with ``mtime``."""
    st = os.stat(path)
    with open(path) as f:
        text = f.read()
    try:
        holder = json.loads(text)
        if not isinstance(holder, dict):
            holder = {}
    except ValueError:
        holder = {}
    holder["mtime"] = st.st_mtime
    return holder


def stale_reason(holder: dict, stale_after_s: float, now: Optional[float] = None) -> str:
    """Why the lock of ``holder`` is stale ('' when it is not): its process is gone, or it was not refreshed for
    ``stale_after_s`` seconds (or the holder's own ``stale_after_s``, whichever is larger)."""
    now = time.time() if now is None else now
    me = identity()
    if me["slurm_job_id"] and holder.get("slurm_job_id") == me["slurm_job_id"]:
        try:
            earlier = int(holder.get("slurm_restart") or 0) < int(me["slurm_restart"] or 0)
        except ValueError:
            earlier = False
        if earlier:  # Slurm never runs two incarnations of one job at once: that one has ended (its node died)
            return (f"it belongs to an earlier incarnation of this Slurm job ({me['slurm_job_id']}, restart "
                    f"{holder.get('slurm_restart') or 0}; this is restart {me['slurm_restart']})")
    if holder.get("host") and process_gone(holder):
        return f"its process is gone (pid {holder.get('pid')} on this host, {holder['host']})"
    limit = max(float(stale_after_s), float(holder.get("stale_after_s") or 0.0))
    refreshed = max(float(holder.get("refreshed") or 0.0), float(holder.get("mtime") or 0.0))
    age = now - refreshed
    if age > limit:
        return f"it was not refreshed for {age:.0f}s (stale after {limit:.0f}s: 2 x runtime.timeout_s)"
    return ""


# --------------------------------------------------------------------------------------------------
# the lock
# --------------------------------------------------------------------------------------------------
class RunLock:
    """The lock this process holds on ``run_dir`` (see :func:`take`)."""

    def __init__(self, run_dir: str, timeout_s: float, created: List[str]):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.stale_after_s = 2.0 * float(timeout_s)
        self.interval_s = max(0.05, float(timeout_s) / 4.0)
        self.created = created  # directories made to hold the lock (removed on release while still empty)
        self.token = uuid.uuid4().hex
        self.info = dict(identity(), token=self.token, stale_after_s=self.stale_after_s, started=time.time())
        self.info["started_at"] = _stamp(self.info["started"])
        self.lost = ""  # set when the lock file turned out not to be ours any more
        self._mutex = threading.Lock()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _content(self) -> str:
        now = time.time()
        return json.dumps(dict(self.info, refreshed=now, refreshed_at=_stamp(now)), indent=1) + "\n"

    def create(self) -> bool:
        """Create the lock file atomically; False when one exists."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._content().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def ours(self, path: Optional[str] = None) -> bool:
        try:
            return read(path or self.path).get("token") == self.token
        except OSError:
            return False

    def refresh(self) -> bool:
        """Rewrite the refreshed time (temporary file + rename); False (and :attr:`lost` set) when the lock file is
        no longer this job's: another job took it over as stale, or it was removed."""
        with self._mutex:
            if self.lost or self._done.is_set():
                return False
            if not self.ours():
                self.lost = (f"the lock {self.path} is no longer this job's (removed, or taken over as stale by "
                             f"another job)")
                return False
            tmp = f"{self.path}.tmp{os.getpid()}"
            try:
                with open(tmp, "w") as f:
                    f.write(self._content())
                os.replace(tmp, self.path)
            except OSError:  # a full disk or a hiccup of the file system: the next refresh tries again
                try:
                    os.remove(tmp)
                except OSError:
                    pass
            return True

    def start(self, warn: Callable[[str], None]) -> None:
        """Refresh every :attr:`interval_s` seconds in a daemon thread until :meth:`release`."""
        def loop():
            while not self._done.wait(self.interval_s):
                if not self.refresh():
                    if self.lost and not self._done.is_set():
                        warn(f"hpcmarl: warning: {self.lost}; this job goes on, but two jobs may now write to "
                             f"{self.run_dir}")
                    return

        self._thread = threading.Thread(target=loop, name="hpcmarl-runlock", daemon=True)
        self._thread.start()

    def moved(self, aside: str) -> None:
        """``--fresh`` renamed the run directory (with this lock inside) to ``aside``: lock the new, empty run
        directory and drop the lock file from the old run."""
        with self._mutex:
            os.makedirs(self.run_dir, exist_ok=True)
            if not self.create():
                holder = read(self.path)
                raise LockHeld(f"run directory {self.run_dir} was locked by {describe(holder)} while this job moved "
                               f"the previous run to {aside}")
            old = os.path.join(aside, LOCK_NAME)
            if self.ours(old):
                os.remove(old)

    def release(self) -> None:
        """Stop refreshing, remove the lock file if it is still ours, and the directories made for it while they
        are empty (a pre-flight error leaves nothing behind)."""
        self._done.set()
        with self._mutex:
            if self.ours():
                try:
                    os.remove(self.path)
                except OSError:
                    pass
            for d in self.created:  # deepest first
                try:
                    os.rmdir(d)
                except OSError:
                    break


_held: Optional[RunLock] = None


def take(run_dir: str, timeout_s: float, warn: Callable[[str], None]) -> Optional[RunLock]:
    """Lock ``run_dir`` for this job (creating the directory if needed) and start refreshing it.

    Returns None (no lock) when ``run_dir`` exists and is not a directory: pre-flight reports that. A stale lock is
    taken over with a warning through ``warn``.

    Raises:
        LockHeld: another job holds a lock that is not stale (the message is the one line to print).
        RunDirError: the lock file cannot be created (e.g. no permission).
    """
    global _held
    if _held is not None:  # a lock of an earlier run in this process (run_training is not re-entrant): its run is over
        release()
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        return None
    created = []
    d = os.path.abspath(run_dir)
    while d and not os.path.exists(d):
        created.append(d)
        d = os.path.dirname(d)
    try:
        os.makedirs(run_dir, exist_ok=True)
        lock = RunLock(run_dir, timeout_s, created)
        took = None  # (holder, why) of a stale lock moved out of the way
        for _ in range(5):
            if lock.create():
                break
            try:
                holder = read(lock.path)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            why = stale_reason(holder, lock.stale_after_s)
            if not why:
                refreshed = max(float(holder.get("refreshed") or 0.0), float(holder.get("mtime") or 0.0))
                raise LockHeld(f"run directory {run_dir} is in use by another job: {describe(holder)}, lock refreshed "
                               f"{max(0.0, time.time() - refreshed):.0f}s ago ({lock.path}); wait for that job to "
                               f"end (or cancel it), or use another run_dir or name; a lock whose job died is taken "
                               f"over once it is stale (its process gone, or not refreshed for "
                               f"{max(lock.stale_after_s, float(holder.get('stale_after_s') or 0.0)):.0f}s)")
            if _take_over(lock, holder):
                took = (holder, why)
        else:
            raise LockHeld(f"run directory {run_dir}: could not take its lock {lock.path} (other jobs keep taking "
                           f"it); try again")
    except OSError as e:  # no permission, a read-only or full file system
        _cleanup(created)
        where = e.filename or lock_path(run_dir)
        raise RunDirError(f"cannot lock run directory {run_dir}: {e.strerror or e}: {where}") from None
    except BaseException:
        _cleanup(created)
        raise
    if took is not None:
        warn(f"hpcmarl: warning: took over the stale lock of {run_dir} held by {describe(took[0])}: {took[1]}")
    lock.start(warn)
    _held = lock
    return lock


def lock_path(run_dir: str) -> str:
    return os.path.join(run_dir, LOCK_NAME)


def _take_over(lock: RunLock, holder: dict) -> bool:
    """Move a stale lock file out of the way (rename, so two jobs never both do it); False when another job was
    quicker. Should the renamed file turn out not to be the stale one (a job took over between our read and the
    rename), it is put back."""
    aside = f"{lock.path}.stale-{lock.token}"
    try:
        os.rename(lock.path, aside)
    except FileNotFoundError:
        return False
    try:
        now = read(aside)
    except OSError:
        return True
    same = all(now.get(k) == holder.get(k) for k in ("token", "host", "pid", "started"))
    if not same:
        try:
            os.link(aside, lock.path)  # fails if a lock exists again: then that one decides
        except OSError:
            pass
    os.remove(aside)
    return same


def _cleanup(created: List[str]) -> None:
    for d in created:
        try:
            os.rmdir(d)
        except OSError:
            break


def held() -> Optional[RunLock]:
    """The lock this process holds (None: none)."""
    return _held


def moved(aside: str) -> None:
    """``--fresh`` renamed the locked run directory to ``aside`` (see :meth:`RunLock.moved`); no-op without a lock."""
    if _held is not None:
        _held.moved(aside)


def release() -> None:
    """Give up this process's lock (no-op without one): the end of the job, an error, a pre-flight failure."""
    global _held
    lock, _held = _held, None
    if lock is not None:
        lock.release()


atexit.register(release)


# --------------------------------------------------------------------------------------------------
# --fresh
# --------------------------------------------------------------------------------------------------
def entries(run_dir: str) -> List[str]:
    """What ``run_dir`` holds, the lock file (and its temporaries) left out."""
    return sorted(e for e in os.listdir(run_dir) if not e.startswith(LOCK_NAME))  # (.lock.tmp*: a crashed refresh)


def is_run(run_dir: str) -> bool:
    """``run_dir`` is an hpcmarl run: it holds ``run.h5``, or ``config.yaml`` next to ``checkpoints/``."""
    j = lambda name: os.path.join(run_dir, name)  # noqa: E731
    return os.path.isfile(j("run.h5")) or (os.path.isfile(j("config.yaml")) and os.path.isdir(j("checkpoints")))


def fresh_aside(run_dir: str) -> bool:
    """``--fresh``: whether ``run_dir`` is to be moved aside (False: it holds nothing but this job's lock).

    Raises:
        NotARun: ``run_dir`` holds other files but is not an hpcmarl run (:func:`is_run`); nothing is moved.
    """
    held = entries(run_dir)
    if not held:
        return False
    if is_run(run_dir):
        return True
    shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
    raise NotARun(f"--fresh moves aside only an hpcmarl run directory (one with run.h5, or config.yaml and "
                  f"checkpoints/); {run_dir} is not one (it holds {shown}), so it was left as it is: pick a run_dir "
                  f"of its own for this run")
