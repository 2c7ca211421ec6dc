#!/usr/bin/env python
"""A cluster in one box: N simulated nodes on this machine, for trying a multi-node job before it is queued.

Each node is a network namespace with its own address on a private bridge, its own hostname (UTS namespace:
``node01`` ...) and its own node-local scratch (a mount namespace whose ``/tmp`` is a private directory); every other
path, the repository and the run directories included, is the cluster's shared storage. Open MPI launches across
the nodes from a hostfile through a launch agent that enters a node (the ``ssh`` of a real cluster, with a clean
environment like ssh's): ranks on different nodes talk over TCP, ranks on one node over shared memory. Every process
a node starts is in that node's cgroups, so the node can be slowed (CPU quota), frozen and thawed, or killed whole;
its link can be cut, restored or capped (``tc tbf``). The addresses exist only inside the namespaces this tool
creates (the nodes have no route out of the machine); it refuses a subnet already in use, and ``stop`` (or the
death of the process that owns the cluster, with ``--owner``) removes everything it made. Needs root (Linux).

    python tools/cluster.py start [--nodes 4] [--slurm]  # prints the hostfile, launch agent (and SLURM_CONF)
    SLURM_CONF=/var/tmp/hpcmarl-cluster/slurm/slurm.conf sbatch --nodes=3 slurm/train.sbatch configs/demo.yaml
    python tools/cluster.py mpirun -n 6 -- .venv/bin/hpcmarl train configs/demo.yaml run_dir=/srv/runs/demo
    python tools/cluster.py exec node02 -- hostname
    python tools/cluster.py freeze node03 | thaw node03 | kill node03 | cut node03 | restore node03
    python tools/cluster.py reboot node03            # every process killed, link and CPU restored, slurmd restarted
    python tools/cluster.py slow node03 10           # a tenth of one core for every process of node03 (1: normal)
    python tools/cluster.py cap node03 100mbit       # link bandwidth (0: no cap)
    python tools/cluster.py status | stop
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

DEFAULT_STATE = "/var/tmp/hpcmarl-cluster"
DEFAULT_SUBNET = "10.213.47.0/24"
CGROUP = "/sys/fs/cgroup"
CONTROLLERS = ("freezer", "cpu")
PERIOD_US = 100_000  # CFS period of the CPU quota that slows a node
# what a node's login environment keeps of the caller's (the rest is dropped, as ssh would)
KEEP_ENV = ("PATH", "HOME", "LANG", "TERM", "USER", "LOGNAME")


class ClusterError(RuntimeError):
    """The cluster cannot be started or used (the message says why)."""


def _run(cmd: List[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed: {(p.stderr or p.stdout).strip()[:300]}")
    return p


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cluster:
    """The simulated cluster whose state lives in ``state`` (one per state directory; names derive from it)."""

    def __init__(self, state: str = DEFAULT_STATE, nodes: int = 4, subnet: str = DEFAULT_SUBNET, tag: str = "hm"):
        self.state = os.path.abspath(state)
        if os.path.realpath(self.state) == "/tmp" or os.path.realpath(self.state).startswith("/tmp/"):
            raise ClusterError(f"the state directory {self.state} is under /tmp, which each node has to itself; "
                               f"pick one on shared storage (default {DEFAULT_STATE})")
        meta = os.path.join(self.state, "cluster.json")
        if os.path.exists(meta):  # an existing cluster: its own facts win
            with open(meta) as f:
                m = json.load(f)
            nodes, subnet, tag = m["nodes"], m["subnet"], m["tag"]
        if not 1 <= nodes <= 64:
            raise ClusterError(f"--nodes must be 1..64, got {nodes}")
        if not tag.isalnum() or len(tag) > 4:
            raise ClusterError(f"tag must be 1-4 letters or digits, got {tag!r}")
        self.n, self.tag = nodes, tag
        self.net = ipaddress.ip_network(subnet, strict=True)
        if self.net.num_addresses < nodes + 16 or not self.net.is_private:
            raise ClusterError(f"subnet {subnet} must be private and hold {nodes + 16} addresses")
        self.names = [f"node{i + 1:02d}" for i in range(nodes)]
        hosts = list(self.net.hosts())
        self.bridge_ip = str(hosts[0])
        self.ips = {name: str(hosts[10 + i]) for i, name in enumerate(self.names)}
        self.bridge = f"{tag}br0"
        self.hostfile = os.path.join(self.state, "hostfile")
        self.agent = os.path.join(self.state, "agent")
        self.shared = os.path.join(self.state, "shared")  # a place for run directories that every node sees

    # -- names -------------------------------------------------------------------------------------------
    def netns(self, node: str) -> str:
        return f"{self.tag}-{node}"

    def veth(self, node: str) -> str:
        return f"{self.tag}v{node[4:]}"  # host side (<= 15 characters); the node side is eth0

    def cg(self, controller: str, node: Optional[str] = None) -> str:
        base = os.path.join(CGROUP, controller, f"hpcmarl-cluster-{self.tag}")
        return os.path.join(base, node) if node else base

    def node_dir(self, node: str) -> str:
        return os.path.join(self.state, node)

    def holder_pid(self, node: str) -> int:
        self._check_node(node)
        try:
            with open(os.path.join(self.node_dir(node), "holder.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            raise ClusterError(f"{node} is not running (no cluster in {self.state}?)") from None

    def _check_node(self, node: str) -> None:
        if node not in self.names:
            raise ClusterError(f"no node {node!r}: this cluster has {', '.join(self.names)}")

    @property
    def running(self) -> bool:
        return os.path.exists(os.path.join(self.state, "cluster.json"))

    # -- start / stop ------------------------------------------------------------------------------------
    def _check_free(self) -> None:
        if os.geteuid() != 0:
            raise ClusterError("the simulated cluster needs root (network namespaces, cgroups)")
        for tool in ("ip", "nsenter", "unshare", "tc"):
            if not shutil.which(tool):
                raise ClusterError(f"{tool} is not installed (iproute2, util-linux)")
        for c in CONTROLLERS:
            if not os.path.isdir(os.path.join(CGROUP, c)):
                raise ClusterError(f"cgroup v1 controller {c} is not mounted at {CGROUP}/{c}")
        if self.running:
            raise ClusterError(f"a cluster already runs from {self.state} (stop it first)")
        addrs = _run(["ip", "-o", "addr", "show"]).stdout + _run(["ip", "-o", "route", "show"]).stdout
        for word in addrs.split():
            try:
                other = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if other.version == 4 and other.overlaps(self.net) and not other.is_loopback:
                raise ClusterError(f"subnet {self.net} is already in use on this machine ({word}); pick another "
                                   f"with --subnet")
        links = _run(["ip", "-o", "link", "show"]).stdout
        if f" {self.bridge}:" in links or f" {self.bridge}@" in links:
            raise ClusterError(f"a link named {self.bridge} exists already (another cluster with tag {self.tag}?)")

    @classmethod
    def started(cls, state: str, nodes: int, subnet: str, tag: str) -> "Cluster":
        """A benchmark's cluster, owned by this process: what an interrupted invocation left in ``state`` is removed
        first."""
        cls(state, nodes=nodes, subnet=subnet, tag=tag).stop()
        c = cls(state, nodes=nodes, subnet=subnet, tag=tag)
        c.start(owner=os.getpid())
        return c

    def start(self, owner: Optional[int] = None, slurm: bool = False) -> None:
        """Build the nodes (and with ``slurm`` a Slurm controller plus one slurmd per node); with ``owner`` (a pid) a
        keeper process removes the cluster once that process is gone."""
        self._check_free()
        os.makedirs(self.state, exist_ok=True)
        os.makedirs(self.shared, exist_ok=True)
        meta = {"nodes": self.n, "subnet": str(self.net), "tag": self.tag, "ips": self.ips}
        with open(os.path.join(self.state, "cluster.json"), "w") as f:
            json.dump(meta, f)
        try:
            self._build()
            if slurm:
                self._start_slurm()
        except BaseException:
            self.stop()
            raise
        if owner:
            subprocess.Popen([sys.executable, os.path.abspath(__file__), "_keeper", "--state", self.state,
                              "--owner", str(owner)], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _build(self) -> None:
        n = self.net.prefixlen
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.bridge_ip}/{n}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        with open(os.path.join(self.state, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n")
            f.write(f"{self.bridge_ip} {self.tag}-head\n")
            for name in self.names:
                f.write(f"{self.ips[name]} {name}\n")
        with open(self.hostfile, "w") as f:
            f.writelines(f"{name} slots=2\n" for name in self.names)
        for c in CONTROLLERS:
            os.makedirs(self.cg(c), exist_ok=True)
        for name in self.names:
            self._build_node(name, n)
        self._write_agent()

    def _build_node(self, name: str, prefixlen: int) -> None:
        ns, veth, d = self.netns(name), self.veth(name), self.node_dir(name)
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        os.chmod(os.path.join(d, "tmp"), 0o1777)
        for c in CONTROLLERS:
            os.makedirs(self.cg(c, name), exist_ok=True)
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        for cmd in (["ip", "addr", "add", f"{self.ips[name]}/{prefixlen}", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
            _run(["ip", "netns", "exec", ns] + cmd)
        # the holder keeps the node's UTS and mount namespaces alive; everything the node runs enters them
        script = (f"for c in {' '.join(CONTROLLERS)}; do echo $$ > {self.cg('$c', name)}/cgroup.procs; done; "
                  f"exec nsenter --net=/var/run/netns/{ns} unshare --uts --mount --propagation private "
                  f"/bin/sh -c 'hostname {name} && mount --bind {d}/tmp /tmp && "
                  f"mount --bind {self.state}/hosts /etc/hosts && echo ready > {d}/ready && exec sleep infinity'")
        p = subprocess.Popen(["/bin/sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "holder.err"), "w"))
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(d, "ready")):
            if p.poll() is not None or time.monotonic() > deadline:
                err = open(os.path.join(d, "holder.err")).read().strip()
                raise ClusterError(f"{name} did not start: {err[-300:] or 'no message'}")
            time.sleep(0.05)
        with open(os.path.join(d, "holder.pid"), "w") as f:
            f.write(str(p.pid))

    def _write_agent(self) -> None:
        """Open MPI's ``plm_rsh_agent``: ``agent NODE COMMAND...`` runs the command on the node, as ssh would (a
        login environment: only the variables of KEEP_ENV pass; Open MPI forwards what ranks need with ``-x``)."""
        keep = " ".join(f'"{k}=${{{k}:-}}"' for k in KEEP_ENV)
        text = f"""#!/bin/sh
# launch agent of the simulated cluster in {self.state} (written by tools/cluster.py): AGENT NODE COMMAND...
node=$1; shift
case "$node" in *@*) node=${{node#*@}};; esac
pid=$(cat "{self.state}/$node/holder.pid" 2>/dev/null) || {{ echo "agent: no node $node" >&2; exit 255; }}
for c in {' '.join(CONTROLLERS)}; do echo $$ > "{self.cg('$c')}/$node/cgroup.procs" || exit 255; done
exec env -i {keep} HPCMARL_CLUSTER_NODE="$node" \\
  nsenter -t "$pid" --net --uts --mount --wd="${{HOME:-/}}" -- /bin/sh -c "$*"
"""
        with open(self.agent, "w") as f:
            f.write(text)
        os.chmod(self.agent, 0o755)

    # -- Slurm across the nodes ---------------------------------------------------------------------------
    @property
    def slurm_conf(self) -> str:
        return os.path.join(self.state, "slurm", "slurm.conf")

    @property
    def slurm_env(self) -> Dict[str, str]:
        """The environment of a Slurm client (``sbatch``, ``squeue``) of this cluster."""
        return dict(os.environ, SLURM_CONF=self.slurm_conf)

    def _start_slurm(self, cpus: int = 4, timeout: float = 60) -> None:
        """slurmctld in this machine's namespace on the bridge's address, one slurmd inside each node (in its cgroups:
        freezing or killing a node takes its slurmd too). Each node's private /tmp keeps PMIx's directories apart."""
        import socket

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import slurm_local

        try:
            slurm_local.install_packages()
        except slurm_local.SlurmUnavailable as e:
            raise ClusterError(str(e)) from None
        d = os.path.dirname(self.slurm_conf)
        for sub in ("state", "log", "spool"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        head = socket.gethostname().split(".")[0]
        nodes = ",".join(self.names)
        with open(self.slurm_conf, "w") as f:
            f.write(f"""# Slurm of the simulated cluster in {self.state} (written by tools/cluster.py)
ClusterName=hpcmarlbox
SlurmctldHost={head}({self.bridge_ip})
SlurmctldPort={slurm_local._free_port()}
SlurmdPort={slurm_local._free_port()}
{slurm_local.common_conf(10)}
SlurmdTimeout=30
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
""")
            for name in self.names:
                f.write(f"NodeName={name} NodeAddr={self.ips[name]} CPUs={cpus} State=UNKNOWN\n")
            f.write(f"PartitionName=debug Nodes={nodes} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE\n")
        for name in self.names:
            os.makedirs(os.path.join(d, "spool", name), exist_ok=True)
        munged = slurm_local.start_munge()
        with open(os.path.join(d, "munged.pid"), "w") as f:
            f.write(str(munged))
        env = self.slurm_env
        with open(os.path.join(d, "log", "daemons.out"), "a") as log:
            ctld = subprocess.Popen(["slurmctld", "-D", "-i", "-f", self.slurm_conf], stdout=log, stderr=log,
                                    env=env, start_new_session=True)
        with open(os.path.join(d, "slurmctld.pid.ours"), "w") as f:
            f.write(str(ctld.pid))
        for name in self.names:
            self._start_slurmd(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                                 env=env).stdout.split()
            states = dict(zip(out[::2], out[1::2]))
            if len(states) == self.n and all(s in ("idle", "mix", "alloc") for s in states.values()):
                return
            time.sleep(0.5)
        raise ClusterError(f"the Slurm nodes did not become idle in {timeout:.0f}s ({states}); logs in {d}/log")

    def _start_slurmd(self, node: str) -> None:
        """The node's slurmd, inside the node (its namespaces and cgroups)."""
        with open(os.path.join(os.path.dirname(self.slurm_conf), "log", "daemons.out"), "a") as log:
            subprocess.Popen(self.node_command(node, ["slurmd", "-D", "-f", self.slurm_conf, "-N", node]),
                             stdout=log, stderr=log, env=self.slurm_env, start_new_session=True, cwd="/")

    def _stop_slurm(self) -> None:
        d = os.path.dirname(self.slurm_conf)
        for name in ("slurmctld.pid.ours", "munged.pid"):
            try:
                pid = int(open(os.path.join(d, name)).read())
            except (OSError, ValueError):
                continue
            if pid > 0:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(d, ignore_errors=True)

    def stop(self) -> None:
        """Remove everything this cluster made: every node's processes, namespaces, links, cgroups, state."""
        self._stop_slurm()
        for name in self.names:
            self.kill(name, everything=True)
            for c in CONTROLLERS:
                try:
                    os.rmdir(self.cg(c, name))
                except OSError:
                    pass
            _run(["ip", "netns", "del", self.netns(name)], check=False)
            _run(["ip", "link", "del", self.veth(name)], check=False)
        _run(["ip", "link", "del", self.bridge], check=False)
        for c in CONTROLLERS:
            try:
                os.rmdir(self.cg(c))
            except OSError:
                pass
        for name in self.names:
            shutil.rmtree(self.node_dir(name), ignore_errors=True)
        for f in ("cluster.json", "hostfile", "agent", "hosts"):
            try:
                os.remove(os.path.join(self.state, f))
            except OSError:
                pass

    # -- using it ----------------------------------------------------------------------------------------
    def pids(self, node: str) -> List[int]:
        self._check_node(node)
        try:
            with open(os.path.join(self.cg("freezer", node), "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def node_command(self, node: str, argv: List[str]) -> List[str]:
        """The command line that runs ``argv`` on ``node`` (in its cgroups and namespaces, environment kept)."""
        pid = self.holder_pid(node)
        cgs = " ".join(f"{self.cg(c, node)}/cgroup.procs" for c in CONTROLLERS)
        enter = (f'for f in {cgs}; do echo $$ > "$f" || exit 255; done; '
                 f'exec nsenter -t {pid} --net --uts --mount --wd="$PWD" -- "$@"')
        return ["/bin/sh", "-c", enter, "node-enter"] + list(argv)

    def mpirun_command(self, np: int, argv: List[str], map_by: str = "node", forward: tuple = (),
                       nodes: int = 0) -> List[str]:
        """``mpirun`` (run on node01, as a batch script would) across every node (the first ``nodes`` of them, when
        given): TCP between nodes."""
        if not 0 <= nodes <= self.n:
            raise ClusterError(f"this cluster has {self.n} nodes, not {nodes}")
        hosts = ["--host", ",".join(f"{name}:{np}" for name in self.names[:nodes])] if nodes else [
            "--hostfile", self.hostfile]
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-n", str(np),
               *hosts, "--map-by", map_by,
               "--mca", "plm_rsh_agent", self.agent, "--mca", "plm_rsh_no_tree_spawn", "1",
               "--mca", "oob_tcp_if_include", str(self.net), "--mca", "btl_tcp_if_include", str(self.net),
               "--mca", "btl", "tcp,vader,self", "--mca", "mpi_yield_when_idle", "1"]
        for name in forward:
            cmd += ["-x", name]
        return self.node_command(self.names[0], cmd + list(argv))

    def freeze(self, node: str) -> None:
        self._write(self.cg("freezer", node), "freezer.state", "FROZEN")

    def thaw(self, node: str) -> None:
        self._write(self.cg("freezer", node), "freezer.state", "THAWED")

    def kill(self, node: str, everything: bool = False) -> int:
        """SIGKILL every process of the node (frozen ones too); the node itself stays (the process holding its
        namespaces is spared, unless ``everything``: what :meth:`stop` asks)."""
        spared = set()
        if not everything:
            try:
                spared.add(self.holder_pid(node))
            except ClusterError:
                pass
        targets = [p for p in self.pids(node) if p not in spared]  # (none when the cgroup is gone)
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if targets:
            self.thaw(node)  # a frozen process dies once thawed
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and set(self.pids(node)) - spared:
            time.sleep(0.05)
        return len(targets)

    def reboot(self, node: str) -> None:
        """The node comes back clean: every process killed (frozen ones too), its /tmp emptied, link up, CPU
        unlimited, and its slurmd started again with an empty spool when the cluster has Slurm (what a reboot leaves;
        a killed job's PMIx directory left in /tmp would make the requeued job's step fail to launch there)."""
        self.kill(node)
        self.restore(node)
        self.slow(node, 1)
        for d in (os.path.join(self.node_dir(node), "tmp"),
                  os.path.join(os.path.dirname(self.slurm_conf), "spool", node)):
            for entry in os.listdir(d) if os.path.isdir(d) else []:
                p = os.path.join(d, entry)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.remove(p)
        if os.path.exists(self.slurm_conf):
            self._start_slurmd(node)

    def cut(self, node: str) -> None:
        _run(["ip", "link", "set", self.veth(node), "down"])

    def restore(self, node: str) -> None:
        _run(["ip", "link", "set", self.veth(node), "up"])

    def slow(self, node: str, factor: float) -> None:
        """Every process of the node together gets 1/factor of one core (factor 1: no limit)."""
        quota = -1 if factor <= 1 else max(1000, int(PERIOD_US / factor))
        self._write(self.cg("cpu", node), "cpu.cfs_period_us", str(PERIOD_US))
        self._write(self.cg("cpu", node), "cpu.cfs_quota_us", str(quota))

    def cap(self, node: str, rate: str) -> None:
        """Cap the node's link in both directions (``tc tbf``; ``0``: remove the cap)."""
        self._check_node(node)
        sides = [["tc"], ["ip", "netns", "exec", self.netns(node), "tc"]]
        devs = [self.veth(node), "eth0"]
        for pre, dev in zip(sides, devs):
            _run(pre + ["qdisc", "del", "dev", dev, "root"], check=False)
            if rate not in ("0", "off", "none"):
                _run(pre + ["qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb",
                            "latency", "50ms"])

    def status(self) -> List[dict]:
        rows = []
        links = _run(["ip", "-o", "link", "show"]).stdout
        for name in self.names:
            frozen = open(os.path.join(self.cg("freezer", name), "freezer.state")).read().strip()
            quota = int(open(os.path.join(self.cg("cpu", name), "cpu.cfs_quota_us")).read())
            line = next((ln for ln in links.splitlines() if f" {self.veth(name)}@" in ln), "")
            rows.append({"node": name, "ip": self.ips[name], "processes": len(self.pids(name)) - 1,
                         "freezer": frozen, "cpu": "full" if quota < 0 else f"{quota / PERIOD_US:.2f} core",
                         "link": "down" if "state DOWN" in line or ",UP" not in line else "up"})
        return rows

    def _write(self, directory: str, name: str, value: str) -> None:
        if not os.path.isdir(directory):
            raise ClusterError(f"no cgroup {directory} (is the cluster running?)")
        with open(os.path.join(directory, name), "w") as f:
            f.write(value)


def _keeper(c: Cluster, owner: int) -> None:
    """Remove the cluster once ``owner`` is gone (however it ended) or this keeper is told to stop."""
    stop = []
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: stop.append(1))
    while not stop and _alive(owner) and c.running:
        time.sleep(0.5)
    if c.running:
        c.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("action", choices=["start", "stop", "status", "exec", "mpirun", "freeze", "thaw", "kill", "reboot",
                                       "cut", "restore", "slow", "cap", "_keeper"])
    ap.add_argument("args", nargs="*", help="NODE [VALUE] for node controls; the command after -- for exec/mpirun")
    ap.add_argument("--state", default=DEFAULT_STATE, help=f"state directory (default {DEFAULT_STATE})")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--subnet", default=DEFAULT_SUBNET)
    ap.add_argument("--tag", default="hm", help="prefix of the cluster's links, namespaces and cgroups")
    ap.add_argument("--owner", type=int, default=0, help="(start) remove the cluster when this pid is gone")
    ap.add_argument("-n", "--np", type=int, default=0, help="(mpirun) ranks")
    ap.add_argument("--slurm", action="store_true", help="(start) a Slurm controller and one slurmd per node too")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    a.args += argv[cut + 1:]
    try:
        c = Cluster(a.state, a.nodes, a.subnet, a.tag)
        if a.action == "start":
            c.start(owner=a.owner or None, slurm=a.slurm)
            print(f"cluster of {c.n} nodes up: {', '.join(f'{k} {v}' for k, v in c.ips.items())}")
            print(f"hostfile {c.hostfile}; launch agent {c.agent}; shared storage for runs {c.shared}")
            if a.slurm:
                print(f"Slurm: export SLURM_CONF={c.slurm_conf}")
            return 0
        if a.action == "_keeper":
            _keeper(c, a.owner)
            return 0
        if a.action == "stop":
            c.stop()
            return 0
        if a.action == "status":
            if not c.running:
                print(f"no cluster runs from {c.state}")
                return 1
            for r in c.status():
                print("  ".join(f"{k}={v}" for k, v in r.items()))
            return 0
        if a.action in ("exec", "mpirun"):
            if a.action == "exec":
                if not a.args:
                    raise ClusterError("exec needs NODE -- COMMAND")
                cmd = c.node_command(a.args[0], a.args[1:])
            else:
                cmd = c.mpirun_command(a.np or c.n, a.args, forward=("PATH", "PYTHONUNBUFFERED"))
            os.environ.setdefault("PYTHONUNBUFFERED", "1")
            rc = subprocess.call(cmd)
            return 128 - rc if rc < 0 else rc  # killed by a signal: as a shell reports it
        if not a.args:
            raise ClusterError(f"{a.action} needs a node name")
        node = a.args[0]
        c._check_node(node)
        if a.action in ("slow", "cap"):
            if len(a.args) != 2:
                raise ClusterError(f"{a.action} needs NODE VALUE")
            if a.action == "slow":
                c.slow(node, float(a.args[1]))
            else:
                c.cap(node, a.args[1])
        elif a.action == "kill":
            print(f"killed {c.kill(node)} process(es) of {node}")
        else:
            getattr(c, a.action)(node)
        return 0
    except (ClusterError, ValueError) as e:
        print(f"cluster: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
