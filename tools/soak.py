#!/usr/bin/env python
"""Soak test: long runs of each flow, sampling every rank's resident memory (RSS) and open file descriptors.

For each flow (MAPPO: synchronous rollouts; MA-Trace: asynchronous; QMIX with a replay that fills up; a Connect Four
league) one ``mpirun`` job runs for ``--minutes``; every ``--every-s`` seconds the RSS and fd count of each hpcmarl rank
(the processes under mpirun, found through /proc) are sampled. Growth is measured from the first sample after
``--warmup-min`` minutes (replay buffers full, pools populated) to the last one. Prints a table per rank and ends with
``RESULT max_rss_growth=… fds_growth=…`` (the largest relative RSS growth of any rank, the largest change in fds).
Every sample is kept in ``<out>/<flow>_series.csv``.
Target (issue 18): RSS growth < 10% after the first 5 minutes, fds constant.

    .venv/bin/python tools/soak.py [--minutes 30] [--warmup-min 5] [--flows mappo matrace qmix league] [key=value ...]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from _common import ROOT, record

FLOWS = {
    "mappo": ("simple_spread_mappo.yaml", 4, ["topology.learners=2"]),
    "matrace": ("matrace_spread.yaml", 4, ["topology.learners=2"]),
    "qmix": ("qmix_spread.yaml", 3, ["algo.buffer_episodes=2000"]),
    "league": ("league_c4.yaml", 4, []),
}


def children(pid: int):
    """Every descendant of ``pid`` (mpirun's ranks are its children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def sample(pid: int):
    """(RSS in MiB, open fds) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def is_rank(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"hpcmarl.cli" in f.read()
    except OSError:
        return False


def soak(flow, a):
    config, ranks, overrides = FLOWS[flow]
    run_dir = os.path.join(a.out, flow)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1", HOROVOD_LOG_LEVEL="error")
    cmd = [shutil.which("mpirun") or "mpirun", "-n", str(ranks), "--bind-to", "none", sys.executable, "-m",
           "hpcmarl.cli", "train", os.path.join(ROOT, "configs", config), f"run_dir={run_dir}", "--fresh",
           "train.total_env_steps=1000000000", f"train.max_wall_s={a.minutes * 60}",
           "output.progress_s=60"] + overrides + a.overrides
    log = open(run_dir + ".log", "w")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    series = {}  # pid -> [(minutes, rss, fds)]
    try:
        while p.poll() is None:
            now = (time.monotonic() - t0) / 60
            for pid in filter(is_rank, children(p.pid)):
                s = sample(pid)
                if s is not None:
                    series.setdefault(pid, []).append((now, *s))
            if now > a.minutes + 10:
                raise SystemExit(f"{flow}: still running {a.minutes + 10:.0f} minutes after start; see {run_dir}.log")
            time.sleep(a.every_s)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
        log.close()
    if p.returncode != 0:
        raise SystemExit(f"{flow}: the run failed (exit {p.returncode}); see {run_dir}.log")
    with open(run_dir + "_series.csv", "w") as f:  # every sample, to see the shape of a growth, not only its size
        f.write("pid,minutes,rss_mib,fds\n")
        f.writelines(f"{pid},{t:.2f},{rss:.1f},{fd}\n" for pid, pts in sorted(series.items()) for t, rss, fd in pts)
    rows = []
    for k, (pid, pts) in enumerate(sorted(series.items())):
        after = [x for x in pts if x[0] >= a.warmup_min]
        if len(after) < 2:
            continue
        (_, rss0, fd0), (_, rss1, fd1) = after[0], after[-1]
        rows.append((k, rss0, rss1, (rss1 - rss0) / rss0, fd0, fd1))
    print(f"\n{flow}: {config} on {ranks} ranks for {a.minutes} min; growth from {a.warmup_min} min to the end")
    print("| rank (by pid) | RSS MiB at warm-up | RSS MiB at end | growth | fds at warm-up | fds at end |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, r0, r1, g, f0, f1 in rows:
        print(f"| {k} | {r0:.0f} | {r1:.0f} | {100 * g:+.1f}% | {f0} | {f1} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--warmup-min", type=float, default=5.0)
    ap.add_argument("--every-s", type=float, default=60.0)
    ap.add_argument("--flows", nargs="+", default=list(FLOWS), choices=list(FLOWS))
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "soak"))
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every flow")
    a = ap.parse_args()
    if a.warmup_min >= a.minutes:
        raise SystemExit("--warmup-min must be shorter than --minutes")
    os.makedirs(a.out, exist_ok=True)
    growth, fds, table = [], [], []
    for flow in a.flows:
        rows = soak(flow, a)
        table += [[flow, *r] for r in rows]
        for _, _, _, g, f0, f1 in rows:
            growth.append(g)
            fds.append(abs(f1 - f0))
    if not growth:
        raise SystemExit("no rank was sampled twice after the warm-up; run longer or sample more often")
    line = f"RESULT max_rss_growth={max(growth):.4f} fds_growth={max(fds)}"
    print(line)
    record(__file__, sys.argv[1:], line, extra={"tables": {"ranks": {
        "columns": ["flow", "rank (by pid)", "RSS MiB at warm-up", "RSS MiB at end", "growth", "fds at warm-up",
                    "fds at end"], "rows": table}}})


if __name__ == "__main__":
    main()
