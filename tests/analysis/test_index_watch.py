"""index (VDS), the episode iterator and watch, on real runs made in the test session."""
import io
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from launch import ROOT, hpcmarl


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ix") / "run"
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"run_dir={d}", "train.max_updates=12", "env.kwargs.max_cycles=4",
                 "output.checkpoint_every=4"])
    assert p.returncode == 0, p.stderr[-2000:]
    # a second actor file (a copy), so the index really concatenates several sources
    shutil.copy(d / "trajectories" / "actor-00000.h5", d / "trajectories" / "actor-00001.h5")
    return d


def test_index_is_the_concatenation_of_the_actor_files(run):
    from hpcmarl.analysis.trajectory_index import build_index

    path = build_index(str(run))
    with h5py.File(path, "r") as ix, h5py.File(run / "trajectories" / "actor-00000.h5", "r") as a0:
        n_steps, n_eps = a0["steps/env"].shape[0], a0["episodes/episode"].shape[0]
        assert n_steps > 0 and n_eps > 0
        for name in ("steps/env", "steps/agent/obs", "steps/agent/action", "steps/agent/reward", "episodes/length",
                     "episodes/return/agent", "episodes/start"):
            both = np.concatenate([a0[name][()], a0[name][()]])
            np.testing.assert_array_equal(ix[name][()], both, err_msg=name)
        np.testing.assert_array_equal(ix["steps/actor"][()], np.repeat([0, 1], n_steps))
        np.testing.assert_array_equal(ix["episodes/actor"][()], np.repeat([0, 1], n_eps))
        gs = ix["episodes/global_start"][()]
        np.testing.assert_array_equal(gs, np.concatenate([a0["episodes/start"][()],
                                                          a0["episodes/start"][()] + n_steps]))


def test_episode_iterator_and_filters(run):
    from hpcmarl.analysis.trajectories import iter_episodes

    with h5py.File(run / "trajectories" / "actor-00000.h5", "r") as a0:
        lengths = a0["episodes/length"][()]
        returns = a0["episodes/return/agent"][()]
        vfirst = a0["episodes/policy_version_first"][()]
    eps = list(iter_episodes(str(run), actor=0))
    assert [e.length for e in eps] == lengths.tolist()
    np.testing.assert_allclose([e.returns["agent"] for e in eps], returns)
    for e in eps:
        assert e.data["agent/reward"].shape[0] == e.length
        assert e.returns["agent"] == pytest.approx(float(e.data["agent/reward"].sum()))
    assert len(list(iter_episodes(str(run)))) == 2 * len(lengths)
    v = int(vfirst[len(vfirst) // 2])
    sel = list(iter_episodes(str(run), actor=0, policy_version=v))
    assert sel and all(e.policy_version_first <= v <= e.policy_version_last for e in sel)


def test_watch_follows_a_live_run_and_leaves_it_intact(tmp_path):
    """``watch`` reads a run while it trains; the run, stopped by SIGTERM once the watch is done (it would train on
    for a minute), still closes run.h5 cleanly with every update's metrics row."""
    from hpcmarl.analysis.watch import watch

    run = tmp_path / "live"
    proc = subprocess.Popen([sys.executable, "-m", "hpcmarl.cli", "train", "configs/test_tiny.yaml", f"run_dir={run}",
                             "train.max_updates=100000", "train.total_env_steps=100000000", "output.flush_s=0.3"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90  # start watching once the run has begun writing run.h5
        while not (run / "run.h5").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        buf = io.StringIO()
        n = watch(str(run), interval=1.0, count=5, plot=str(tmp_path / "live.png"), out=buf)
        out = buf.getvalue()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert n == 5
    updates = [int(u) for u in __import__("re").findall(r"update (\d+)", out)]
    assert len(updates) >= 3 and updates == sorted(updates) and updates[-1] > updates[0], out
    assert (tmp_path / "live.png").stat().st_size > 0
    assert proc.returncode == 75, err[-2000:]  # stopped by the signal, checkpointed
    with h5py.File(run / "run.h5", "r") as f:  # closed cleanly by the writer: a plain open works
        rows = f["metrics/update"][()]
    assert rows[-1] >= updates[-1]
    np.testing.assert_array_equal(rows, np.arange(1, rows.size + 1))
    with h5py.File(run / "trajectories" / "actor-00000.h5", "r") as f:
        assert f["episodes/episode"].shape[0] > 0


def test_index_errors_name_the_path(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    (bad / "trajectories" / "actor-00001.h5").write_bytes(b"not hdf5 at all")
    p = hpcmarl(["index", str(bad)])
    assert p.returncode == 2 and "actor-00001.h5" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    p = hpcmarl(["watch", str(tmp_path / "missing"), "--count", "1", "--interval", "0.1"])
    assert p.returncode in (0, 2)
