#!/usr/bin/env python
"""A throw-away one-node Slurm cluster on localhost, for tests and for trying the sbatch scripts.

Everything lives under one directory (config, state, spool, logs); nothing under /etc is written:
clients find the cluster through ``SLURM_CONF``. Needs root (slurmd runs jobs as their users) and
``slurm-wlm`` + ``munge`` (installed from apt with ``--install``).

    python tools/slurm_local.py start DIR [--install]   # prints: export SLURM_CONF=DIR/slurm.conf
    python tools/slurm_local.py stop DIR
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

PACKAGES = ["slurm-wlm", "munge"]


class SlurmUnavailable(RuntimeError):
    """This machine cannot run a local Slurm (the message says why)."""


def install_packages() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurm-wlm/munge are not installed and this is not root (no apt)")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True, timeout=600)
    p = subprocess.run(["apt-get", "install", "-y", "-qq"] + PACKAGES, env=env, capture_output=True, text=True,
                       timeout=900)
    if p.returncode != 0:
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {p.stderr[-500:]}")


def common_conf(requeue_delay: int) -> str:
    """The lines of slurm.conf every test cluster shares (this one-node cluster and tools/cluster.py's): root runs
    the daemons and the jobs, munge, no cgroups, nodes that return to service, requeue allowed; a requeued job may
    start again ``requeue_delay`` seconds after (Slurm's default: 120)."""
    return f"""SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire={requeue_delay}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
MpiDefault=none
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=3600"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_munge() -> int:
    """munged, unless one answers already (then 0: not ours to stop); returns its pid."""
    sock = "/run/munge/munge.socket.2"
    if os.path.exists(sock) and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return 0  # already running (not ours to stop)
    os.makedirs("/run/munge", exist_ok=True)
    if not os.path.exists("/etc/munge/munge.key"):
        subprocess.run(["mungekey", "--create"], capture_output=True)
    p = subprocess.Popen(["munged", "--foreground", "--force"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(100):
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return p.pid
        time.sleep(0.1)
    raise SlurmUnavailable("munged did not start")


class LocalCluster:
    def __init__(self, root: str, cpus: int = 0, requeue_delay: int = 10):
        self.root = os.path.abspath(root)
        self.conf = os.path.join(self.root, "slurm.conf")
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or max(8, os.cpu_count() or 1)  # declared CPUs (config_overrides): room for 4-8 ranks
        self.pids_file = os.path.join(self.root, "pids")
        # a requeued job waits cred_expire seconds before it may start again (Slurm's default: 120)
        self.requeue_delay = requeue_delay

    @property
    def env(self) -> dict:
        return dict(os.environ, SLURM_CONF=self.conf)

    def write_conf(self) -> None:
        for d in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        r = self.root
        text = f"""# one-node test cluster written by tools/slurm_local.py
ClusterName=hpcmarl
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
{common_conf(self.requeue_delay)}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
"""
        with open(self.conf, "w") as f:
            f.write(text)
        # two placeholder GPUs (harmless character devices), so scripts that ask for GPUs (hetjob.sbatch) are
        # accepted by `sbatch --test-only` and can be scheduled here
        with open(os.path.join(self.root, "gres.conf"), "w") as f:
            f.write(f"AutoDetect=off\nNodeName={self.host} Name=gpu File=/dev/null\n"
                    f"NodeName={self.host} Name=gpu File=/dev/zero\n")

    def start(self, timeout: float = 60) -> None:
        if os.geteuid() != 0:
            raise SlurmUnavailable("a local Slurm needs root (slurmd)")
        install_packages()
        self.write_conf()
        pids = {"munged": start_munge()}
        log = open(os.path.join(self.root, "log", "daemons.out"), "a")
        for name, cmd in (("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf]),
                          ("slurmd", ["slurmd", "-D", "-f", self.conf, "-N", self.host])):
            p = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env, start_new_session=True)
            pids[name] = p.pid
        with open(self.pids_file, "w") as f:
            f.write(" ".join(f"{k}={v}" for k, v in pids.items()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                                 env=self.env).stdout.strip()
            if out in ("idle", "mix", "alloc"):
                return
            if out in ("drain", "down", "drng", "down*"):
                subprocess.run(["scontrol", "update", f"NodeName={self.host}", "State=RESUME"], env=self.env,
                               capture_output=True)
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"the node did not become idle in {timeout:.0f}s; logs in {self.root}/log")

    def pids(self) -> dict:
        if not os.path.exists(self.pids_file):
            return {}
        return {k: int(v) for k, v in (kv.split("=") for kv in open(self.pids_file).read().split())}

    def stop(self) -> None:
        """Stop the daemons this cluster started, by their pids."""
        for name, pid in reversed(list(self.pids().items())):
            if pid <= 0:
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if os.path.exists(self.pids_file):
            os.remove(self.pids_file)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("dir")
    ap.add_argument("--install", action="store_true", help="apt-get install slurm-wlm munge when missing")
    a = ap.parse_args()
    c = LocalCluster(a.dir)
    try:
        if a.action == "start":
            if a.install:
                install_packages()
            c.start()
            print(f"export SLURM_CONF={c.conf}")
        else:
            c.stop()
    except SlurmUnavailable as e:
        print(f"slurm_local: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
