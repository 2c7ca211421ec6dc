#!/usr/bin/env python
"""Node faults x flows: what a frozen, cut-off, killed or slowed node does to a run of each flow, across nodes.

Runs on the cluster in one box (``tools/cluster.py``, 3 simulated nodes, Open MPI over TCP; needs root). Each case
trains one flow with 2 learners and 4 actors placed round robin (node01: learner 0 and actor 1; node02: learner 1 and
actor 2; node03: actors 0 and 3), waits for its second checkpoint, then hits one node:

    freeze        every process of node03 (actors only) stopped (cgroup freezer)
    cut           node03's link down
    kill          every process of node03 killed
    slow          node03 gets a tenth of one core (every process of it together)
    kill-learner  every process of node02 (learner 1 and an actor) killed
    kill-lead     every process of node01 (learner 0, which writes the checkpoints, an actor and mpirun) killed

``--when running`` (default) hits the node once the second checkpoint exists; ``--when checkpoint`` hits it while the
lead learner writes a later checkpoint (its temporary file seen; ``during a write`` says whether it still existed
right after the hit). Then it watches for ``2 x runtime.timeout_s + 60`` seconds. Outcome: **ended** (the job, mpirun
included, exited: the seconds after the fault, its exit status and whether its last lines name the node), **trains
on** (still running at the end of the watch, with new updates in its last ``runtime.timeout_s`` seconds: the updates
per second before and after the fault) or **stuck** (running without new updates). A job that ended must leave
nothing behind: **left over** counts the processes still alive on the nodes not hit, up to 30 s after ``mpirun`` exited
(an orphaned rank would hold the allocation; with ``kill-lead`` ``mpirun`` itself is gone). Then the job is stopped
if it still runs, every node rebooted (processes killed, link and CPU restored), the newest complete checkpoint checked
(**checkpoint intact**: it opens and holds its model's arrays), and the same command resumes to 3 updates past the
last one written: **rows lost** counts the updates missing from ``/metrics`` and **duplicated** the ones written
twice (both must be 0).

Prints the table fault x flow and ends with

    RESULT cases=… ended_in_bound=k/n left_over=… trained_on=… stuck=… rows_lost=… duplicated=… resumed=k/n
        checkpoint_intact=k/n

    sudo .venv/bin/python tools/fault_matrix.py [--flows mappo matrace-drop nigt-rennala …]
        [--faults freeze cut kill slow kill-learner kill-lead] [--when running|checkpoint] [--timeout-s 15] [--fresh]

Resumable: each case's row is kept in ``runs/fault_matrix/<flow>-<fault>-<when>.json`` with the commit it ran on,
and the same command plays only the cases not kept yet (``--fresh`` plays them all again); the record names each
row's commit (a table from several commits says so).
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from _common import ROOT, _git, record

# learner.backend=mpi everywhere but mappo-horovod: Horovod's waiting all-reduce spins, and on nodes with more ranks
# than cores (6 ranks on 2 cores here) it starves the ranks it waits for (docs/operations/multi-node.md)
SMALL = ["env.num_envs=2", "algo.hidden=16", "output.progress_s=2", "output.checkpoint_every=2",
         "actors.step_delay_s=0.002", "train.total_env_steps=100000000"]
FLOWS = {
    "mappo": ["configs/test_tiny.yaml"],
    "mappo-horovod": ["configs/test_tiny.yaml", "learner.backend=horovod"],  # (the later value wins)
    "matrace-wait": ["configs/matrace_spread.yaml", "algo.unroll_length=5"],
    "matrace-drop": ["configs/matrace_spread.yaml", "algo.unroll_length=5", "algo.queue_full=drop"],
    "qmix": ["configs/qmix_spread.yaml", "algo.unroll_length=25", "algo.batch_episodes=4", "algo.learning_starts=4",
             "algo.eps_anneal_steps=1000"],
    "nigt-allreduce": ["configs/nigt_spread.yaml", "algo.aggregation=allreduce", "algo.batch=4", "algo.init_batch=4",
                       "env.kwargs.max_cycles=10"],
    "nigt-rennala": ["configs/nigt_spread.yaml", "algo.aggregation=rennala", "algo.batch=4", "algo.init_batch=4",
                     "env.kwargs.max_cycles=10"],
    "nigt-malenia": ["configs/nigt_spread.yaml", "algo.aggregation=malenia", "algo.batch=4", "algo.init_batch=4",
                     "env.kwargs.max_cycles=10"],
}
FAULTS = ("freeze", "cut", "kill", "slow", "kill-learner", "kill-lead")
NODE_OF = {"kill-learner": "node02", "kill-lead": "node01"}  # else node03 (actors only)
KEPT = os.path.join(ROOT, "runs", "fault_matrix")
RANKS = 6  # 2 learners + 4 actors over 3 nodes, round robin


def updates(run):
    """The ``update`` column of run.h5's /metrics (read while the run writes it: SWMR), or [] before it exists."""
    import h5py

    try:
        with h5py.File(os.path.join(run, "run.h5"), "r", libver="latest", swmr=True) as f:
            d = f["metrics/update"]
            d.refresh()
            return d[()].astype(int)
    except (OSError, KeyError):
        return np.zeros(0, int)


def intact(run) -> bool:
    """The newest complete checkpoint opens and holds its model's arrays."""
    import h5py

    ckpts = checkpoints(run)
    if not ckpts:
        return False
    try:
        with h5py.File(ckpts[-1], "r") as f:
            return len(f["model"]) > 0 and all(f["model"][k].size > 0 for k in f["model"])
    except (OSError, KeyError):
        return False


def checkpoints(run):
    from hpcmarl.storage import list_checkpoints

    return list_checkpoints(os.path.join(run, "checkpoints"))


class Case:
    def __init__(self, c, flow, fault, a):
        self.c, self.flow, self.fault, self.a = c, flow, fault, a
        self.run = os.path.join(c.shared, "fault-matrix", f"{flow}-{fault}")
        self.args = FLOWS[flow][:1] + SMALL + ["learner.backend=mpi"] + FLOWS[flow][1:] + [
            f"runtime.timeout_s={a.timeout_s}", "topology.learners=2", f"run_dir={self.run}"]
        self.node = NODE_OF.get(fault, "node03")
        self.writing = os.path.join(self.run, "checkpoints", "ckpt-*.h5.tmp*")

    def command(self, extra):
        argv = [sys.executable, "-m", "hpcmarl.cli", "train"] + self.args + list(extra)
        return self.c.mpirun_command(RANKS, argv, forward=("PYTHONUNBUFFERED", "HOROVOD_LOG_LEVEL"))

    def env(self):
        return dict(os.environ, PYTHONUNBUFFERED="1", HOROVOD_LOG_LEVEL="error")

    def hit(self):
        c, n = self.c, self.node
        {"freeze": c.freeze, "cut": c.cut, "kill": c.kill, "slow": lambda node: c.slow(node, 10),
         "kill-learner": c.kill, "kill-lead": c.kill}[self.fault](n)

    def left_over(self, wait_s: float = 30.0) -> int:
        """Processes still alive on the nodes not hit (their namespace holders aside), polled until none is left or
        ``wait_s`` passed: 0 when the job left nothing behind."""
        deadline = time.monotonic() + wait_s
        while True:
            n = sum(len(set(self.c.pids(node)) - {self.c.holder_pid(node)}) for node in self.c.names
                    if node != self.node)
            if n == 0 or time.monotonic() > deadline:
                return n
            time.sleep(0.5)

    def reboot_all(self, p):
        """Every node thawed, linked, at full CPU, every process of it killed (``mpirun`` runs on node01)."""
        for node in self.c.names:
            self.c.reboot(node)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def play(self):
        """Run the case; returns its row (a dict)."""
        a = self.a
        row = {"flow": self.flow, "fault": self.fault, "node": self.node, "when": a.when}
        shutil.rmtree(self.run, ignore_errors=True)  # an earlier invocation's checkpoints would start the fault early
        p = subprocess.Popen(self.command(["train.max_updates=100000", "--fresh"]), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=self.env(), cwd=ROOT, start_new_session=True)
        out = ""
        try:
            deadline = time.monotonic() + 180
            first = None  # (time, updates) when the first update was seen
            while len(checkpoints(self.run)) < 2:
                if first is None and len(updates(self.run)):
                    first = (time.monotonic(), len(updates(self.run)))
                if p.poll() is not None or time.monotonic() > deadline:
                    self.reboot_all(p)
                    raise SystemExit(f"{self.flow}: no second checkpoint before the fault:\n"
                                     f"{p.stdout.read()[-3000:]}")
                time.sleep(0.5)
            if a.when == "checkpoint":  # the lead learner's next checkpoint write under way
                deadline = time.monotonic() + 180
                while not glob.glob(self.writing):
                    if p.poll() is not None or time.monotonic() > deadline:
                        self.reboot_all(p)
                        raise SystemExit(f"{self.flow}: no checkpoint write seen:\n{p.stdout.read()[-3000:]}")
                    time.sleep(0.001)
            before = updates(self.run)
            t_fault = time.monotonic()
            self.hit()
            if a.when == "checkpoint":
                row["during_write"] = bool(glob.glob(self.writing))
            bound = 2 * a.timeout_s + 60
            seen = {}  # wall time -> updates written, while the job lives
            while p.poll() is None and time.monotonic() - t_fault < bound:
                seen[time.monotonic() - t_fault] = len(updates(self.run))
                time.sleep(1.0)
            took = time.monotonic() - t_fault
            if p.poll() is None:  # still running at the end of the watch
                recent = [n for t, n in seen.items() if t >= took - a.timeout_s]
                moved = bool(recent) and recent[-1] > recent[0]
                row.update(outcome="trains on" if moved else "stuck", seconds=round(took, 1), exit=None,
                           ups_after=round((recent[-1] - recent[0]) / a.timeout_s, 2) if recent else 0.0)
            else:
                out = p.stdout.read()
                row.update(outcome="ended", seconds=round(took, 1), exit=p.returncode,
                           names_node=self.node in out[-4000:], in_bound=took <= bound, left_over=self.left_over())
            if first is not None and t_fault > first[0]:
                row["ups_before"] = round((len(before) - first[1]) / (t_fault - first[0]), 2)
        finally:
            running = p.poll() is None  # the job trains on (or hangs): the reboots stop it, mpirun included
            self.reboot_all(p)
            if running:
                out = p.stdout.read()
        row["tail"] = [ln for ln in out.strip().splitlines() if "hpcmarl" in ln][-2:]
        row["checkpoint_intact"] = intact(self.run)
        last = updates(self.run)
        row["updates_at_stop"] = int(last[-1]) if len(last) else 0
        # the node is back: the same command resumes to 3 updates past the last one written
        target = row["updates_at_stop"] + 3
        r = subprocess.run(self.command([f"train.max_updates={target}"]), capture_output=True, text=True,
                           env=self.env(), cwd=ROOT, timeout=300, start_new_session=True)
        got = updates(self.run)
        expect = np.arange(1, target + 1)
        row["resumed"] = r.returncode == 0 and "resumed from" in r.stdout
        row["rows_lost"] = int(len(np.setdiff1d(expect, got)))
        row["duplicated"] = int(len(got) - len(np.unique(got)))
        if not row["resumed"]:
            row["resume_tail"] = (r.stdout + r.stderr)[-600:]
        return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", nargs="+", default=list(FLOWS), choices=list(FLOWS))
    ap.add_argument("--faults", nargs="+", default=list(FAULTS), choices=list(FAULTS))
    ap.add_argument("--when", choices=("running", "checkpoint"), default="running",
                    help="hit the node mid-run (default) or while the lead learner writes a checkpoint")
    ap.add_argument("--timeout-s", type=int, default=15, help="runtime.timeout_s of every run")
    ap.add_argument("--fresh", action="store_true", help="play every case again (else kept cases are reused)")
    ap.add_argument("--state", default="/var/tmp/hpcmarl-fault-cluster", help="the cluster's state directory")
    a = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cluster as cluster_tool

    os.makedirs(KEPT, exist_ok=True)
    cases = [(flow, fault, os.path.join(KEPT, f"{flow}-{fault}-{a.when}.json")) for flow in a.flows
             for fault in a.faults]
    todo = [case for case in cases if a.fresh or not os.path.exists(case[2])]
    if todo:
        c = cluster_tool.Cluster.started(a.state, 3, "10.213.51.0/24", "hfm")
        try:
            for i, (flow, fault, kept) in enumerate(todo):
                print(f"case {i + 1}/{len(todo)}: {flow} x {fault} ({a.when})", flush=True)
                row = Case(c, flow, fault, a).play()
                row["commit"] = (_git("rev-parse", "HEAD") or "unknown")[:10]
                print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
                with open(kept + ".tmp", "w") as f:
                    json.dump(row, f)
                os.replace(kept + ".tmp", kept)
        finally:
            c.stop()
    rows = []
    for _, _, kept in cases:
        with open(kept) as f:
            rows.append(json.load(f))
    finish(a, rows)


def finish(a, rows):
    bound = 2 * a.timeout_s + 60
    columns = ["flow", "fault (node)", "outcome", "seconds after the fault", "exit", "names the node", "left over",
               "rows lost",
               "duplicated", "resumed", "checkpoint intact", "commit"]
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    table = []
    for r in rows:
        cells = [r["flow"], r["fault"] + f" ({r['node']})" + (", during a write" if r.get("during_write") else ""),
                 r["outcome"] + (f", {r['ups_after']} updates/s (before: {r.get('ups_before')})"
                                 if r["outcome"] != "ended" else ""),
                 r["seconds"], "" if r["exit"] is None else r["exit"],
                 "" if r["outcome"] != "ended" else ("yes" if r["names_node"] else "no"), r.get("left_over", "n/a"),
                 r["rows_lost"], r["duplicated"], "yes" if r["resumed"] else "no",
                 "yes" if r.get("checkpoint_intact") else "no", r.get("commit", "")]
        table.append(cells)
        print("| " + " | ".join(str(x) for x in cells) + " |")
    ended = [r for r in rows if r["outcome"] == "ended"]
    on = sum(r["outcome"] == "trains on" for r in rows)
    line = (f"RESULT cases={len(rows)} ended_in_bound={sum(r['seconds'] <= bound for r in ended)}/{len(ended)} "
            f"left_over={sum(r.get('left_over', 0) for r in ended)}"
            f"{'' if all('left_over' in r for r in ended) else ' (not counted in cases kept from before)'} "
            f"trained_on={on} stuck={sum(r['outcome'] == 'stuck' for r in rows)} "
            f"rows_lost={sum(r['rows_lost'] for r in rows)} duplicated={sum(r['duplicated'] for r in rows)} "
            f"resumed={sum(r['resumed'] for r in rows)}/{len(rows)} "
            f"checkpoint_intact={sum(bool(r.get('checkpoint_intact')) for r in rows)}/{len(rows)}")
    print(line)
    commits = sorted({r.get("commit", "") for r in rows})
    note = (f"cases from {len(commits)} commits ({', '.join(commits)}): kept cases are reused by a later invocation"
            if len(commits) > 1 else None)
    record(__file__, sys.argv[1:], line,
           extra={"timeout_s": a.timeout_s, "bound_s": bound, "note": note,
                  "tables": {"cases": {"columns": columns, "rows": table}}})


if __name__ == "__main__":
    main()
