"""Real-Slurm tests: a one-node slurmctld + slurmd on localhost (tools/slurm_local.py) runs the job
scripts in slurm/. Installs slurm-wlm/munge from apt when missing; skips (with the reason) only on a
machine that cannot run Slurm at all (no root, no apt)."""
import glob
import json
import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from launch import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
from slurm_local import LocalCluster, SlurmUnavailable  # noqa: E402

E, T = 2, 5
TINY = [f"env.num_envs={E}", f"algo.unroll_length={T}", f"env.kwargs.max_cycles={T}", "algo.epochs=2",
        "algo.hidden=16", "output.progress_s=2", "runtime.timeout_s=60"]


REPORT = []  # job ids and states, printed in the test session's summary (pytest captures print)


def say(msg):
    print(msg)
    REPORT.append(msg)


@pytest.fixture(scope="module", autouse=True)
def _report(request):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None and REPORT:
        with capman.global_and_fixture_disabled():
            tr.write_line("")
            for line in REPORT:
                tr.write_line(f"[slurm] {line}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    cluster = LocalCluster(str(root / "cluster"))
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(f"cannot run a local Slurm here: {e}")
    env = cluster.env
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    env["HPCMARL_ROOT"] = ROOT
    out = root / "jobs"
    out.mkdir()
    yield cluster, env, out
    cluster.stop()
    assert not any(_alive(pid) for pid in cluster.pids().values())


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def sbatch(env, out, args):
    p = subprocess.run(["sbatch", "--parsable", f"--chdir={ROOT}", f"--output={out}/%j.out"] + args,
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    jid = p.stdout.strip().split(";")[0]
    say(f"submitted job {jid}: {' '.join(args[:3])}")
    return jid


def job_info(env, jid):
    out = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True, env=env).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(cluster, env, out, jid, timeout=240, states=("COMPLETED",)):
    deadline = time.monotonic() + timeout
    info = {}
    while time.monotonic() < deadline:
        info = job_info(env, jid)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(1)
    say(f"job {jid}: state {info.get('JobState')}, restarts {info.get('Restarts')}, exit {info.get('ExitCode')}")
    if info.get("JobState") not in states:
        logs = "".join(open(p).read()[-3000:] for p in glob.glob(f"{out}/{jid}*.out"))
        ctld = open(os.path.join(cluster.root, "log", "slurmctld.log")).read()[-2000:]
        pytest.fail(f"job {jid} ended as {info.get('JobState')} (wanted {states}) within {timeout}s\n"
                    f"job log:\n{logs}\nslurmctld log:\n{ctld}")
    return info


def inspect(run):
    p = subprocess.run([sys.executable, "-m", "hpcmarl.cli", "inspect", str(run), "--json"], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_slurm_scripts_pass_test_only(slurm):
    cluster, env, out = slurm
    for script in sorted(glob.glob(os.path.join(ROOT, "slurm", "*.sbatch"))):
        args = [script, "configs/test_tiny.yaml"]
        if script.endswith("sweep.sbatch"):
            args = ["--array=0-1"] + args + ["slurm/sweep_example.txt"]
        p = subprocess.run(["sbatch", "--test-only", f"--chdir={ROOT}"] + args, capture_output=True, text=True, env=env)
        assert p.returncode == 0 and "to start at" in p.stderr, (script, p.stderr)


def test_slurm_train_job_writes_outputs(slurm):
    cluster, env, out = slurm
    jid = sbatch(env, out, ["slurm/train.sbatch", "configs/test_tiny.yaml", f"output.root={out}/runs",
                            "train.max_updates=6"] + TINY)
    wait_job(cluster, env, out, jid)
    run = out / "runs" / f"tiny-{jid}"  # named from the job id
    s = inspect(run)
    assert s["updates"] == 6 and s["episodes"] == 6 * 3 * E  # 4 tasks = 1 learner + 3 actors
    assert len(s["trajectory_files"]) == 3 and len(s["checkpoints"]) >= 1
    with h5py.File(run / "run.h5", "r") as f:
        slurm_vars = json.loads(f.attrs["slurm"])
        assert slurm_vars["SLURM_JOB_ID"] == jid


def test_slurm_preempted_job_requeues_and_resumes(slurm):
    cluster, env, out = slurm
    # 0.1 s added to every update: the signal (2 s after the first progress line, itself 2 s in) finds the run at
    # most ~40 updates in on any machine, and the requeued job trains the rest in seconds
    total = 60
    jid = sbatch(env, out, ["slurm/train.sbatch", "configs/test_tiny.yaml", f"output.root={out}/runs",
                            f"train.max_updates={total}", "train.total_env_steps=100000000",
                            "learner.update_delay_s=0.1"] + TINY)
    log = out / f"{jid}.out"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "[hpcmarl] upd" in log.read_text()):
        time.sleep(0.5)
    time.sleep(2)
    p = subprocess.run(["scancel", "--signal=USR1", "--batch", jid], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    say(f"sent USR1 to the batch step of job {jid}")
    info = wait_job(cluster, env, out, jid, timeout=300)
    assert int(info["Restarts"]) == 1
    text = log.read_text()
    assert "status 75" in text and "requeueing job" in text
    m = re.search(r"resumed from ckpt-(\d+)\.h5", text)
    assert m, text[-3000:]
    stopped_at = int(m.group(1))
    assert 0 < stopped_at < total
    run = out / "runs" / f"tiny-{jid}"  # the requeued job found its own directory
    s = inspect(run)
    assert s["updates"] == total and s["env_steps"] == total * 3 * E * T
    with h5py.File(run / "run.h5", "r") as f:
        np.testing.assert_array_equal(f["metrics/update"][()], np.arange(1, total + 1))
        upd = f["episodes/update"][()]
    # the same /episodes rows as an uninterrupted run: every update, exactly 3 actors x E episodes
    np.testing.assert_array_equal(np.unique(upd), np.arange(1, total + 1))
    assert set(np.unique(upd, return_counts=True)[1]) == {3 * E}


def test_slurm_array_sweep_two_tasks(slurm, tmp_path):
    cluster, env, out = slurm
    params = tmp_path / "params.txt"
    params.write_text("# seeds\nseed=11\n\nseed=12 algo.lr=3e-4\n")
    jid = sbatch(env, out, ["--array=0-1", "slurm/sweep.sbatch", "configs/test_tiny.yaml", str(params),
                            f"output.root={out}/runs", "train.max_updates=4"] + TINY)
    for task in (0, 1):
        wait_job(cluster, env, out, f"{jid}_{task}")
    for task, seed in ((0, 11), (1, 12)):
        run = out / "runs" / f"tiny-{jid}_{task}"
        s = inspect(run)
        assert s["updates"] == 4
        cfg = open(run / "config.yaml").read()
        assert f"seed: {seed}" in cfg
    assert "lr: 0.0003" in open(out / "runs" / f"tiny-{jid}_1" / "config.yaml").read()
