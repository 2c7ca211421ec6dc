#!/usr/bin/env python
"""Can a job lose an actor node and go on? What Open MPI does when a node dies, with and without --enable-recovery.

Runs on the cluster in one box (``tools/cluster.py``, 3 simulated nodes, Open MPI over TCP; needs root). Six ranks,
two per node, round robin: rank 0 (node01, a learner's place) receives from every other rank, which send a small
message every 0.2 s; 8 s in, every process of node03 (ranks 2 and 5, and its Open MPI daemon) is killed. Rank 0
listens for 40 s, then tells the ranks it still hears from to stop (never a rank silent for 5 s: a send to a dead rank
blocks for ever), and the survivors call ``MPI_Finalize``. Two launches:

    default            mpirun as hpcmarl's docs and scripts use it
    enable-recovery    mpirun --enable-recovery (Open MPI's "keep the job when a process dies")

Per launch: whether rank 0 lived through its 40 s, the messages it got from each rank, how many survivors returned
from ``MPI_Finalize``, and whether ``mpirun`` exited within 60 s of that (with its status), or still ran (then it is
killed: it would hold the allocation until its wall-time limit). Ends with

    RESULT default_exit=… default_s=… recovery_listened=… recovery_finalized=k/n recovery_mpirun_exited=…

    sudo .venv/bin/python tools/probe_recovery.py
"""
import os
import re
import subprocess
import sys
import time

from _common import record

PROBE = r'''
import socket, sys, time
from mpi4py import MPI
comm = MPI.COMM_WORLD
comm.Set_errhandler(MPI.ERRORS_RETURN)
r, n = comm.Get_rank(), comm.Get_size()
if r == 0:
    last, got, t0 = {s: time.time() for s in range(1, n)}, {s: 0 for s in range(1, n)}, time.time()
    while time.time() - t0 < 40:
        for s in range(1, n):
            while comm.Iprobe(source=s, tag=1):
                comm.recv(source=s, tag=1)
                got[s] += 1
                last[s] = time.time()
        time.sleep(0.05)
    print("LISTENED", " ".join(f"{s}:{got[s]}" for s in got), flush=True)
    for s in range(1, n):
        if time.time() - last[s] < 5:
            comm.send(None, dest=s, tag=2)
else:
    while not comm.Iprobe(source=0, tag=2):
        comm.send(r, dest=0, tag=1)
        time.sleep(0.2)
MPI.Finalize()
print(f"FINALIZED {r} on {socket.gethostname()}", flush=True)
'''


def launch(c, extra, script):
    """One launch; returns its row."""
    cmd = c.mpirun_command(6, [sys.executable, script], forward=("PYTHONUNBUFFERED",))
    i = cmd.index("mpirun")
    cmd = cmd[:i + 1] + extra + cmd[i + 1:]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    time.sleep(8)
    t_kill = time.monotonic()
    c.kill("node03")
    try:
        out, _ = p.communicate(timeout=110)
        exited, status = True, p.returncode
    except subprocess.TimeoutExpired:  # listening 40 s + finalize: past this mpirun waits for the lost node
        p.kill()
        out, _ = p.communicate()
        exited, status = False, None
    listened = re.search(r"LISTENED (.*)", out)
    return {"mpirun_exited": exited, "exit": status, "seconds_after_kill": round(time.monotonic() - t_kill, 1),
            "listened": listened.group(1) if listened else None,
            "finalized": len(re.findall(r"FINALIZED \d+", out)), "wall_s": round(time.monotonic() - t0, 1),
            "tail": [ln for ln in out.splitlines() if ln.strip()][-6:]}


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cluster as cluster_tool

    state = "/var/tmp/hpcmarl-recovery-probe"
    c = cluster_tool.Cluster.started(state, 3, "10.213.61.0/24", "hrp")
    rows = {}
    try:
        script = os.path.join(c.shared, "recovery_probe.py")
        with open(script, "w") as f:
            f.write(PROBE)
        for name, extra in (("default", []), ("enable-recovery", ["--enable-recovery"])):
            rows[name] = launch(c, extra, script)
            print(name, {k: v for k, v in rows[name].items() if k != "tail"}, flush=True)
            for node in c.names:
                c.reboot(node)
    finally:
        c.stop()
    d, r = rows["default"], rows["enable-recovery"]
    line = (f"RESULT default_exit={d['exit']} default_s={d['seconds_after_kill']} "
            f"recovery_listened={'yes' if r['listened'] else 'no'} recovery_finalized={r['finalized']}/4 "
            f"recovery_mpirun_exited={'yes' if r['mpirun_exited'] else 'no'}")
    print(line)
    record(__file__, sys.argv[1:], line, extra={"launches": rows})


if __name__ == "__main__":
    main()
