"""Message records (hpcmarl.comm.spec) and HDF5 storage (run.h5, trajectories, checkpoints)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import h5py
import numpy as np
import pytest
import torch

from hpcmarl import storage as S
from hpcmarl.algos.ppo import PPOConfig, PPOLearner
from hpcmarl.analysis.summary import run_summary
from hpcmarl.comm.spec import META, RNG_BYTES, Record, RecordSpec, unroll_spec, weights_spec
from hpcmarl.envs import probe_spec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------------------------------
# RecordSpec / Record
# ------------------------------------------------------------------------------------------------
FIELDS = [("a", (3,), "u1"), ("b", (2, 2), "f8"), ("c", (), "i4"), ("d", (5,), "f4"), ("e", (1, 3), "i8"),
          ("f", (7,), "u1")]


def _byte_range(view, buf):
    start = view.__array_interface__["data"][0] - buf.__array_interface__["data"][0]
    return start, start + view.nbytes


def test_record_layout():
    spec = RecordSpec(FIELDS)
    sizes = [int(np.prod(s)) * np.dtype(t).itemsize for _, s, t in FIELDS]
    assert spec.nbytes == sum(-(-n // 8) * 8 for n in sizes)
    assert spec.nbytes % 8 == 0
    assert spec.names == [f[0] for f in FIELDS]
    assert spec.shapes() == {n: s for n, s, _ in FIELDS}
    rec = spec.alloc()
    assert rec.buf.dtype == np.uint8 and rec.buf.size == spec.nbytes
    ranges = []
    for (name, shape, dtype), size in zip(FIELDS, sizes):
        v = rec[name]
        assert v.shape == shape and v.dtype == np.dtype(dtype)
        assert np.shares_memory(v, rec.buf)
        lo, hi = _byte_range(v, rec.buf)
        assert lo % 8 == 0 and 0 <= lo and hi <= spec.nbytes and hi - lo == size
        ranges.append((lo, hi))
    ranges.sort()
    for (lo1, hi1), (lo2, hi2) in zip(ranges, ranges[1:]):
        assert hi1 <= lo2, "field views overlap"


def test_record_fields_are_independent():
    spec = RecordSpec(FIELDS)
    rec = spec.alloc()
    assert not rec.buf.any()
    rng = np.random.default_rng(0)
    values = {}
    for name, shape, dtype in FIELDS:
        val = rng.integers(1, 100, size=shape).astype(dtype)
        rec[name][...] = val
        values[name] = val.copy()
    for name, shape, dtype in FIELDS:  # overwrite one field at a time, the rest must be untouched
        rec[name][...] = 0
        for other, *_ in FIELDS:
            if other != name:
                np.testing.assert_array_equal(rec[other], values[other])
        rec[name][...] = values[name]
    # the buffer carries everything: a record rebuilt over a copy of the bytes reads the same values
    clone = Record(spec, rec.buf.copy())
    for name in values:
        np.testing.assert_array_equal(clone[name], values[name])
    cp = rec.copy()
    cp["b"][...] = -1.0
    np.testing.assert_array_equal(rec["b"], values["b"])


def test_record_rejects_wrong_buffer():
    spec = RecordSpec(FIELDS)
    with pytest.raises(AssertionError):
        Record(spec, np.zeros(spec.nbytes + 8, np.uint8))
    with pytest.raises(AssertionError):
        Record(spec, np.zeros(spec.nbytes, np.float32))


def test_empty_and_tiny_specs():
    assert RecordSpec([]).nbytes == 8
    assert RecordSpec([("x", (1,), "u1")]).nbytes == 8
    assert RecordSpec([("x", (9,), "u1")]).nbytes == 16
    assert RecordSpec([("x", (0, 4), "f8")]).alloc()["x"].shape == (0, 4)


def test_unroll_spec_shapes():
    env = probe_spec("simple_tag_v3", with_state=True)
    T, E = 6, 3
    spec = unroll_spec(env, T, E)
    sh = spec.shapes()
    assert sh["meta"] == (len(META),)
    assert sh["adversary/obs"] == (T + 1, E, 3, 16) and sh["agent/obs"] == (T + 1, E, 1, 14)
    assert sh["adversary/alive"] == (T + 1, E, 3)
    assert sh["agent/action"] == (T, E, 1) and sh["agent/action_mask"] == (T, E, 1, 5)
    assert sh["state"] == (T + 1, E, env.state_dim)
    assert sh["env_done"] == (T, E) and sh["rng"] == (RNG_BYTES,)
    assert sh["episodes"] == (T * E, 2 + 2 + 1)  # env, length, a return per group, won
    assert RNG_BYTES == torch.get_rng_state().numel()
    w = weights_spec(123)
    assert w.shapes()["params"] == (123,) and w.alloc()["params"].dtype == np.float32


# ------------------------------------------------------------------------------------------------
# run.h5
# ------------------------------------------------------------------------------------------------
ATTRS = {"env": "counting_v0", "algo": "ippo", "groups": ["agent", "adv"], "seed": 3,
         "config": {"algo": {"lr": 0.001, "name": "ippo"}, "topology": {"learners": 2}},
         "note": "a\x00b", "ratio": 0.25}


def _metric_row(i):
    return {"update": float(i + 1), "env_steps": float(100 * (i + 1)), "wall_time": 0.5 * i, "loss": 1.0 / (i + 1)}


def _episode_cols(start, n):
    idx = np.arange(start, start + n)
    return {"actor": (idx % 3).astype(np.int32), "env": (idx % 2).astype(np.int32),
            "length": (idx + 5).astype(np.int32),
            "policy_version": idx.astype(np.int64), "update": (idx // 2).astype(np.int64),
            "env_steps": (10 * idx).astype(np.int64), "wall_time": idx * 0.1,
            "return/agent": idx * 1.5, "return/adv": -idx.astype(np.float64), "won": (idx % 2).astype(np.float64)}


def _write_run(run_dir, n_metrics=4, n_eps=7):
    os.makedirs(run_dir, exist_ok=True)
    w = S.RunWriter(os.path.join(run_dir, "run.h5"), ATTRS, ["agent", "adv"], flush_s=0.0)
    for i in range(n_metrics):
        w.log_metrics(_metric_row(i))
        if i == 1:
            w.add_episodes(_episode_cols(0, 3))
    w.add_episodes(_episode_cols(3, n_eps - 3))
    rows = w.rows()
    w.close()
    return rows


def test_run_writer_reader_round_trip(tmp_path):
    run_dir = str(tmp_path / "run")
    rows = _write_run(run_dir)
    assert rows == {"episodes": 7, "metrics": 4}
    run = S.Run(run_dir)
    m = run.metrics()
    assert set(m) == {"update", "env_steps", "wall_time", "loss"}
    for k in m:
        np.testing.assert_array_equal(m[k], np.array([_metric_row(i)[k] for i in range(4)]))
        assert m[k].dtype == np.float64
    eps = run.episodes()
    ref = _episode_cols(0, 7)
    assert set(eps) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(eps[k], ref[k])
    attrs = run.attrs()
    assert attrs["kind"] == S.KIND_RUN and int(attrs["schema_version"]) == S.SCHEMA_VERSION
    assert json.loads(attrs["config"]) == ATTRS["config"]
    assert json.loads(attrs["groups"]) == ["agent", "adv"]
    assert attrs["env"] == "counting_v0" and attrs["note"] == "ab"
    assert int(attrs["seed"]) == 3 and float(attrs["ratio"]) == 0.25


def test_run_metrics_columns_fixed_by_first_row(tmp_path):
    path = str(tmp_path / "run.h5")
    w = S.RunWriter(path, {}, ["agent"])
    w.log_metrics({"a": 1.0, "b": 2.0})
    w.log_metrics({"a": 3.0, "c": 9.0})  # c is dropped, b is missing -> NaN
    w.close()
    m = S.Run(str(tmp_path)).metrics()
    assert set(m) == {"a", "b"}
    np.testing.assert_array_equal(m["a"], [1.0, 3.0])
    assert m["b"][0] == 2.0 and np.isnan(m["b"][1])


def test_run_summary(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_run(run_dir, n_metrics=5, n_eps=9)
    s = run_summary(S.Run(run_dir), window=3)
    r = _episode_cols(0, 9)["return/agent"]
    assert s["env"] == "counting_v0" and s["algo"] == "ippo"
    assert s["updates"] == 5 and s["env_steps"] == 500 and s["episodes"] == 9
    assert s["wall_time_s"] == pytest.approx(2.0)
    g = s["groups"]["agent"]
    assert g["return_first"] == pytest.approx(r[:3].mean())
    assert g["return_last"] == pytest.approx(r[-3:].mean())
    assert g["return_best"] == pytest.approx(max(r[i:i + 3].mean() for i in range(7)))
    assert g["episodes"] == 9
    assert s["groups"]["adv"]["return_best"] == pytest.approx(-1.0)  # mean of 0, -1, -2


def test_run_resume_truncates_later_rows(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_run(run_dir, n_metrics=4, n_eps=7)
    w = S.RunWriter(os.path.join(run_dir, "run.h5"), {"resumed": "yes"}, ["agent", "adv"],
                    resume_rows={"episodes": 3, "metrics": 2})
    assert w.rows() == {"episodes": 3, "metrics": 2}
    w.log_metrics(_metric_row(10))
    w.add_episodes(_episode_cols(100, 2))
    w.close()
    run = S.Run(run_dir)
    m = run.metrics()
    np.testing.assert_array_equal(m["update"], [1.0, 2.0, 11.0])
    np.testing.assert_array_equal(m["loss"], [1.0, 0.5, 1.0 / 11])
    eps = run.episodes()
    np.testing.assert_array_equal(eps["policy_version"], [0, 1, 2, 100, 101])
    np.testing.assert_array_equal(eps["return/agent"], np.array([0, 1, 2, 100, 101]) * 1.5)
    attrs = run.attrs()
    assert attrs["resumed"] == "yes" and attrs["env"] == "counting_v0"  # earlier attrs are kept


def test_run_resume_reports_rows_the_checkpoint_counts_but_the_file_lacks(tmp_path):
    """A run.h5 with fewer rows than the checkpoint counts (a crash before they reached the disk) is said, not
    silently continued: ``short`` lists the tables (RunLog.open turns it into one warning line)."""
    run_dir = str(tmp_path / "run")
    _write_run(run_dir, n_metrics=4, n_eps=7)
    w = S.RunWriter(os.path.join(run_dir, "run.h5"), {}, ["agent", "adv"], resume_rows={"episodes": 7, "metrics": 4})
    assert w.short == {}
    w.close()
    w = S.RunWriter(os.path.join(run_dir, "run.h5"), {}, ["agent", "adv"], resume_rows={"episodes": 9, "metrics": 3})
    assert w.short == {"episodes": (7, 9)}
    w.close()


def test_run_writer_flush_puts_every_row_on_disk(tmp_path, monkeypatch):
    """``flush()`` (before each checkpoint): HDF5 flush, then fsync of run.h5, whatever ``flush_s`` says."""
    path = str(tmp_path / "run.h5")
    w = S.RunWriter(path, {"env": "counting_v0"}, ["agent"], flush_s=1e9)
    w.log_metrics(_metric_row(1))
    w.add_episodes(_episode_cols(0, 3))
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    w.flush()
    assert synced == [os.path.realpath(path)]
    import shutil

    shutil.copy(path, str(tmp_path / "killed.h5"))  # the bytes on disk now: what a kill -9 would leave
    w.close()
    with S.open_read(str(tmp_path / "killed.h5"), S.KIND_RUN) as f:
        assert f["metrics/update"].shape == (1,) and f["episodes/actor"].shape == (3,)


def test_run_readable_while_writer_is_open(tmp_path):
    """run.h5 is SWMR: another process can read flushed rows while the writer still holds the file."""
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    w = S.RunWriter(os.path.join(run_dir, "run.h5"), ATTRS, ["agent", "adv"], flush_s=1e9)
    for i in range(3):
        w.log_metrics(_metric_row(i))
    w.add_episodes(_episode_cols(0, 4))
    w.maybe_flush(force=True)
    try:
        code = ("import json, sys; from hpcmarl.storage import Run; r = Run(sys.argv[1]); "
                "print(json.dumps({'u': r.metrics()['update'].tolist(), 'n': len(r.episodes()['length'])}))")
        out = subprocess.run([sys.executable, "-c", code, run_dir], capture_output=True, text=True, timeout=60,
                             cwd=ROOT)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got == {"u": [1.0, 2.0, 3.0], "n": 4}
    finally:
        w.close()


def test_run_reader_errors(tmp_path):
    with pytest.raises(S.StorageError):
        S.Run(str(tmp_path / "missing"))
    with pytest.raises(S.StorageError) as ei:
        S.Run(str(tmp_path))
    assert "run.h5" in str(ei.value)


# ------------------------------------------------------------------------------------------------
# trajectories
# ------------------------------------------------------------------------------------------------
N_AG, M, D = 2, 4, 2  # counting_v0: 2 agents, 4-step episodes, agent_1 dies at step 2
CKW = {"n_agents": N_AG, "max_cycles": M, "die_at": D}


def _feed(writer, collected, first_version=10):
    for u, rec in enumerate(collected.records):
        writer.add_unroll(rec, rec["env_done"], first_version + u)


def _read_traj(path):
    with S.open_read(path, S.KIND_TRAJ) as f:
        return S.read_table(f["steps"]), S.read_table(f["episodes"]), dict(f.attrs)


def test_trajectory_writer_complete_episodes(tmp_path, collect):
    T, E, U = 5, 3, 3  # 15 steps per env copy: 3 complete 4-step episodes + 3 steps in flight
    c = collect("counting_v0", T, E, U, CKW)
    path = str(tmp_path / "actor-00000.h5")
    w = S.TrajectoryWriter(path, c.venv.spec, E, fraction=1.0, seed=0, resume=False, attrs={"actor": 0})
    _feed(w, c)
    assert w.close() == E  # one unfinished episode per env copy is discarded

    steps, eps, attrs = _read_traj(path)
    n_complete = (T * U) // M
    assert len(eps["episode"]) == E * n_complete
    np.testing.assert_array_equal(np.sort(eps["episode"]), np.arange(E * n_complete))
    np.testing.assert_array_equal(eps["length"], np.full(E * n_complete, M))
    # reward 1 per live agent per step: agent_0 lives M steps, agent_1 D steps
    np.testing.assert_allclose(eps["return/agent"], np.full(E * n_complete, M + D))
    assert len(steps["t"]) == eps["length"].sum()
    assert json.loads(attrs["groups"]) == {"agent": ["agent_0", "agent_1"]}
    assert attrs["kind"] == S.KIND_TRAJ and int(attrs["actor"]) == 0

    for row in range(len(eps["episode"])):
        ep, i, start, L = (int(eps[k][row]) for k in ("episode", "env", "start", "length"))
        sl = slice(start, start + L)
        np.testing.assert_array_equal(steps["episode"][sl], ep)
        np.testing.assert_array_equal(steps["env"][sl], i)
        np.testing.assert_array_equal(steps["t"][sl], np.arange(L))
        obs, alive = steps["agent/obs"][sl], steps["agent/alive"][sl]
        np.testing.assert_array_equal(obs[:, 0, 0], np.arange(L))  # observation = step index
        np.testing.assert_array_equal(alive[:, 0], 1)
        np.testing.assert_array_equal(alive[:, 1], (np.arange(L) < D).astype(np.uint8))
        np.testing.assert_array_equal(obs[:, 1, 0], np.where(np.arange(L) < D, np.arange(L), 0))
        np.testing.assert_array_equal(steps["agent/reward"][sl].sum(0), [M, D])
        np.testing.assert_array_equal(steps["agent/terminated"][sl][:, 1], (np.arange(L) == D - 1).astype(np.uint8))
        np.testing.assert_array_equal(steps["agent/truncated"][sl][:, 0], (np.arange(L) == L - 1).astype(np.uint8))
        # which unroll each step came from: env-local step s = k*M + t sits in unroll s // T
        k = sorted(eps["episode"][eps["env"] == i].tolist()).index(ep)
        s = k * M + np.arange(L)
        np.testing.assert_array_equal(steps["policy_version"][sl], 10 + s // T)
        assert eps["policy_version_first"][row] == 10 + s[0] // T
        assert eps["policy_version_last"][row] == 10 + s[-1] // T
        # the rows are the unroll's rows: actions and log-probs too
        acts = np.array([c.records[x // T]["agent/action"][x % T, i] for x in s])
        logp = np.array([c.records[x // T]["agent/logp"][x % T, i] for x in s])
        np.testing.assert_array_equal(steps["agent/action"][sl], acts)
        np.testing.assert_array_equal(steps["agent/logp"][sl], logp)


def test_trajectory_fraction_zero_writes_nothing(tmp_path, collect):
    c = collect("counting_v0", 4, 2, 3, CKW)
    path = str(tmp_path / "actor-00001.h5")
    w = S.TrajectoryWriter(path, c.venv.spec, 2, fraction=0.0, seed=0, resume=False)
    _feed(w, c)
    w.close()
    steps, eps, _ = _read_traj(path)
    assert len(eps["episode"]) == 0 and len(steps["t"]) == 0


def test_trajectory_fraction_half_keeps_whole_episodes(tmp_path, collect):
    c = collect("counting_v0", 8, 4, 5, {"n_agents": 2, "max_cycles": 3})  # 40 steps -> 13 episodes per env
    path = str(tmp_path / "actor-00002.h5")
    w = S.TrajectoryWriter(path, c.venv.spec, 4, fraction=0.5, seed=1, resume=False)
    _feed(w, c)
    w.close()
    steps, eps, _ = _read_traj(path)
    n = len(eps["episode"])
    assert 0 < n < 4 * 13
    np.testing.assert_array_equal(eps["length"], 3)
    for row in range(n):
        sl = slice(int(eps["start"][row]), int(eps["start"][row]) + 3)
        np.testing.assert_array_equal(steps["t"][sl], [0, 1, 2])
        np.testing.assert_array_equal(steps["agent/obs"][sl][:, :, 0], [[0, 0], [1, 1], [2, 2]])


def test_trajectory_resume_continues_numbering(tmp_path, collect):
    c = collect("counting_v0", 4, 2, 2, CKW)  # 8 steps: 2 episodes per env
    path = str(tmp_path / "actor-00003.h5")
    w = S.TrajectoryWriter(path, c.venv.spec, 2, 1.0, 0, resume=False)
    _feed(w, c)
    w.close()
    c2 = collect("counting_v0", 4, 2, 1, CKW)
    w = S.TrajectoryWriter(path, c2.venv.spec, 2, 1.0, 0, resume=True)
    assert w.next_episode == 4
    _feed(w, c2, first_version=50)
    w.close()
    steps, eps, _ = _read_traj(path)
    assert sorted(eps["episode"].tolist()) == list(range(6))
    np.testing.assert_array_equal(eps["policy_version_first"][4:], 50)
    assert len(steps["t"]) == 6 * M


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import make_collected
    from hpcmarl import storage as S
    c = make_collected("counting_v0", 4, 2, 3, {"n_agents": 2, "max_cycles": 4, "die_at": 2})
    w = S.TrajectoryWriter(sys.argv[1], c.venv.spec, 2, 1.0, 0, resume=False, flush_s=1e9)
    for u, rec in enumerate(c.records):
        w.add_unroll(rec, rec["env_done"], u)
    w.maybe_flush(force=True)
    print(w.episodes.rows, w.steps.rows, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_trajectory_file_of_killed_writer_is_repaired(tmp_path, collect):
    path = str(tmp_path / "actor-00004.h5")
    r = subprocess.run([sys.executable, "-c", KILL_SCRIPT, path, os.path.dirname(__file__)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == -9, r.stderr
    n_eps, n_steps = map(int, r.stdout.split())
    assert n_eps == 2 * 3 and n_steps == n_eps * M  # 12 steps per env copy = 3 episodes
    # the killed SWMR writer left the consistency flags set: a plain open for writing refuses
    with pytest.raises(OSError):
        h5py.File(path, "a", libver="latest").close()
    steps0, eps0, _ = _read_traj(path)  # readers still work (SWMR read)
    assert len(eps0["episode"]) == n_eps

    c = collect("counting_v0", 4, 2, 1, CKW)
    w = S.TrajectoryWriter(path, c.venv.spec, 2, 1.0, 0, resume=True)  # open_for_append repairs
    assert w.next_episode == n_eps
    _feed(w, c, first_version=99)
    w.close()
    assert not os.path.exists(path + ".repair")
    steps, eps, attrs = _read_traj(path)
    assert attrs["kind"] == S.KIND_TRAJ
    assert len(eps["episode"]) == n_eps + 2
    for k in eps0:
        np.testing.assert_array_equal(eps[k][:n_eps], eps0[k])
    for k in steps0:
        np.testing.assert_array_equal(steps[k][:n_steps], steps0[k])
    np.testing.assert_array_equal(eps["episode"][n_eps:], [n_eps, n_eps + 1])
    np.testing.assert_array_equal(eps["start"][n_eps:], [n_steps, n_steps + M])


def test_trajectory_resume_rolls_back_to_the_checkpoint(tmp_path, collect):
    """A resume from the checkpoint of update 12 cuts the episodes of unrolls trained after it (``update`` > 12) and
    their steps; making those unrolls again gives the file of an uninterrupted run: no episode twice, numbers and
    policy versions continuing. Also: episodes whose steps a killed writer had not flushed are cut, and a file
    written before the ``update`` column existed gets it as policy version + 1."""
    c = collect("counting_v0", 4, 2, 4, CKW)  # every 4-step unroll ends one episode per env copy
    path = str(tmp_path / "actor-00005.h5")

    def write(resume_update=None, recs=c.records, first=0):
        w = S.TrajectoryWriter(path, c.venv.spec, 2, 1.0, 0, resume=resume_update is not None,
                               resume_update=resume_update)
        for u, rec in enumerate(recs, first):
            w.add_unroll(rec, rec["env_done"], 10 + u, 20 + u)  # version 10 + u, trained in update 20 + u
        w.close()
        return w

    write()
    want_steps, want_eps, _ = _read_traj(path)
    np.testing.assert_array_equal(want_eps["update"], np.repeat([20, 21, 22, 23], 2))
    w = S.TrajectoryWriter(path, c.venv.spec, 2, 1.0, 0, resume=True, resume_update=21)
    assert (w.rolled_back, w.next_episode, w.episodes.rows, w.steps.rows) == (4, 4, 4, 4 * M)
    w.close()
    write(21, c.records[2:], 2)  # the resumed run makes updates 22 and 23 again
    steps, eps, _ = _read_traj(path)
    assert sorted(eps) == sorted(want_eps) and sorted(steps) == sorted(want_steps)
    for k in want_eps:
        np.testing.assert_array_equal(eps[k], want_eps[k], err_msg=k)
    for k in want_steps:
        np.testing.assert_array_equal(steps[k], want_steps[k], err_msg=k)

    with h5py.File(path, "a", libver="latest") as f:  # a kill left the episodes table one flush ahead of the steps
        f["steps"].visititems(lambda n, d: d.resize((7 * M,) + d.shape[1:]) if isinstance(d, h5py.Dataset) else None)
    w = S.TrajectoryWriter(path, c.venv.spec, 2, 1.0, 0, resume=True, resume_update=99)
    assert (w.rolled_back, w.episodes.rows, w.steps.rows) == (1, 7, 7 * M)
    w.close()

    with h5py.File(path, "a", libver="latest") as f:  # a file of an older hpcmarl: no update column
        del f["episodes/update"]
    w = S.TrajectoryWriter(path, c.venv.spec, 2, 1.0, 0, resume=True, resume_update=12)  # versions 10, 11 kept
    assert (w.rolled_back, w.episodes.rows, w.steps.rows) == (3, 4, 4 * M)
    w.close()
    _, eps, _ = _read_traj(path)
    np.testing.assert_array_equal(eps["update"], [11, 11, 12, 12])


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "model/net.0.weight": rng.standard_normal((64, 80)).astype(np.float32),  # > 4096 values: compressed
        "model/net.0.bias": rng.standard_normal(64).astype(np.float32),
        "optim/0/step": np.asarray(np.float32(17.0)),
        "optim/0/exp_avg": rng.standard_normal((3, 4)),
        "rng/learner_gen": rng.integers(0, 256, 5056).astype(np.uint8),
        "counters": np.array([1, -2, 3], np.int64),
        "special": np.array([np.nan, np.inf, -0.0, 1e-45], np.float32),
    }


CK_ATTRS = {"update": 7, "env_steps": 12345, "lr": 3e-4, "env": "counting_v0",
            "learner_param_checksums": [1.5, 2.5], "config": {"a": {"b": [1, 2]}}}


def test_checkpoint_round_trip(tmp_path):
    arrays = _arrays()
    path = S.save_checkpoint(str(tmp_path / "ck"), 7, arrays, CK_ATTRS, keep=3)
    assert path == str(tmp_path / "ck" / "ckpt-000000007.h5")
    got, attrs = S.load_checkpoint(path)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        g = np.asarray(got[k])
        assert g.dtype == v.dtype and g.shape == v.shape, k
        assert g.tobytes() == v.tobytes(), k
    assert int(attrs["update"]) == 7 and int(attrs["env_steps"]) == 12345
    assert float(attrs["lr"]) == 3e-4 and attrs["env"] == "counting_v0"
    assert json.loads(attrs["learner_param_checksums"]) == [1.5, 2.5]
    assert json.loads(attrs["config"]) == {"a": {"b": [1, 2]}}
    assert attrs["kind"] == S.KIND_CKPT and int(attrs["complete"]) == 1
    assert [os.path.basename(p) for p in os.listdir(tmp_path / "ck")] == ["ckpt-000000007.h5"]  # no temp left


def _record_fsyncs(monkeypatch) -> list:
    """Paths fsynced from now on (the real fsync still runs)."""
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    return synced


def test_checkpoint_and_pool_snapshot_are_fsynced(tmp_path, monkeypatch):
    """The file is fsynced under its temporary name before the rename, its directory after it."""
    from hpcmarl.league.pool import read_policy, snapshot_path, write_snapshot

    synced = _record_fsyncs(monkeypatch)
    d = str(tmp_path / "checkpoints")
    path = S.save_checkpoint(d, 3, _arrays(), CK_ATTRS, keep=2)
    assert len(synced) == 2 and synced[0].startswith(os.path.realpath(path) + ".tmp"), synced
    assert synced[1] == os.path.realpath(d)
    synced.clear()
    snap = snapshot_path(str(tmp_path), "main", 5)
    write_snapshot(snap, np.arange(4, dtype=np.float32), {"group": "main", "version": 5})
    assert len(synced) == 2 and synced[0].startswith(os.path.realpath(snap) + ".tmp"), synced
    assert synced[1] == os.path.realpath(os.path.dirname(snap))
    np.testing.assert_array_equal(read_policy(snap)[0], np.arange(4))


def test_stale_temporaries_are_removed(tmp_path):
    """What a SIGKILL half-way through a checkpoint, a pool snapshot, the config's write or a repair of a killed
    writer's file (:func:`hpcmarl.storage.open_for_append`) leaves; nothing else."""
    run = tmp_path / "run"
    for d in ("checkpoints", "pool", "trajectories"):
        (run / d).mkdir(parents=True)
    stale = ["config.yaml.tmp", "checkpoints/ckpt-000000004.h5.tmp123", "pool/main-v0000007.h5.tmp9", "run.h5.repair",
             "trajectories/actor-00001.h5.repair"]
    kept = ["config.yaml", "checkpoints/ckpt-000000003.h5", "pool/main-v0000003.h5", "trajectories/actor-00000.h5",
            "run.h5"]
    for name in stale + kept:
        (run / name).write_bytes(b"x")
    assert sorted(S.remove_stale_temporaries(str(run))) == sorted(str(run / n) for n in stale)
    assert all((run / n).exists() for n in kept) and not any((run / n).exists() for n in stale)
    assert S.remove_stale_temporaries(str(run)) == []


def test_checkpoint_keep_k(tmp_path):
    d = str(tmp_path)
    for u in (1, 2, 9, 10, 11, 100, 1000):
        S.save_checkpoint(d, u, {"x": np.array([u])}, {"update": u}, keep=3)
        assert len(S.list_checkpoints(d)) <= 3
    kept = S.list_checkpoints(d)
    assert [os.path.basename(p) for p in kept] == [f"ckpt-{u:09d}.h5" for u in (11, 100, 1000)]
    assert sorted(os.listdir(d)) == sorted(os.path.basename(p) for p in kept)
    path, arrays, attrs = S.latest_checkpoint(d, log=lambda m: pytest.fail(m))
    assert path == kept[-1] and int(arrays["x"][0]) == 1000 and int(attrs["update"]) == 1000


@pytest.mark.parametrize("keep_fraction", [0.0, 0.05, 0.5, 0.9, 0.999])
def test_truncated_checkpoint(tmp_path, keep_fraction):
    d = str(tmp_path)
    for u in (1, 2, 3):
        S.save_checkpoint(d, u, _arrays(u), {"update": u}, keep=5)
    newest = S.checkpoint_path(d, 3)
    size = os.path.getsize(newest)
    with open(newest, "r+b") as f:
        f.truncate(int(size * keep_fraction))
    with pytest.raises(S.StorageError) as ei:
        S.load_checkpoint(newest)
    assert newest in str(ei.value)
    logged = []
    found = S.latest_checkpoint(d, log=logged.append)
    assert found is not None
    path, arrays, attrs = found
    assert path == S.checkpoint_path(d, 2) and int(attrs["update"]) == 2
    assert arrays["model/net.0.weight"].tobytes() == _arrays(2)["model/net.0.weight"].tobytes()
    assert len(logged) == 1 and newest in logged[0]


def test_incomplete_checkpoint_and_all_damaged(tmp_path):
    d = str(tmp_path)
    p = S.checkpoint_path(d, 5)
    os.makedirs(d, exist_ok=True)
    with h5py.File(p, "w") as f:  # no "complete" flag: e.g. written by something that died mid-way
        f.attrs["kind"] = S.KIND_CKPT
        f.attrs["schema_version"] = S.SCHEMA_VERSION
        f["x"] = np.zeros(3)
    with pytest.raises(S.StorageError) as ei:
        S.load_checkpoint(p)
    assert "incomplete" in str(ei.value)
    logged = []
    assert S.latest_checkpoint(d, log=logged.append) is None
    assert len(logged) == 1 and p in logged[0]
    assert S.latest_checkpoint(str(tmp_path / "nothing_here"), log=logged.append) is None


def test_open_read_errors(tmp_path):
    missing = str(tmp_path / "missing.h5")
    with pytest.raises(S.StorageError) as ei:
        S.open_read(missing)
    assert missing in str(ei.value)
    text = tmp_path / "notes.h5"
    text.write_text("this is not hdf5\n" * 100)
    with pytest.raises(S.StorageError) as ei:
        S.open_read(str(text))
    assert "not an HDF5 file" in str(ei.value)
    with pytest.raises(S.StorageError):
        S.load_checkpoint(str(text))
    # an hpcmarl file of another kind
    ck = S.save_checkpoint(str(tmp_path / "ck"), 1, {"x": np.zeros(2)}, {}, keep=1)
    with pytest.raises(S.StorageError) as ei:
        S.open_read(ck, S.KIND_RUN)
    assert "kind" in str(ei.value)
    # a future schema version
    with h5py.File(ck, "a") as f:
        f.attrs["schema_version"] = S.SCHEMA_VERSION + 1
    with pytest.raises(S.StorageError) as ei:
        S.load_checkpoint(ck)
    assert "schema version" in str(ei.value)
    # a directory without run.h5 / a run.h5 that is not HDF5
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.h5").write_text("garbage")
    with pytest.raises(S.StorageError):
        S.Run(str(tmp_path / "r")).metrics()


# ------------------------------------------------------------------------------------------------
# no pickle: only numeric datasets, numeric or string attributes
# ------------------------------------------------------------------------------------------------
def _assert_plain(path):
    seen = {"datasets": 0, "attrs": 0}

    def check_attrs(obj, where):
        for name in obj.attrs:
            dt = obj.attrs.get_id(name).dtype
            ok = dt.kind in "biuf" or h5py.check_string_dtype(dt) is not None
            assert ok, f"{path}:{where} attribute {name!r} has dtype {dt!r}"
            seen["attrs"] += 1

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            assert obj.dtype.kind in "biuf", f"{path}:{name} has dtype {obj.dtype!r}"
            assert obj.dtype.names is None and h5py.check_string_dtype(obj.dtype) is None
            assert h5py.check_vlen_dtype(obj.dtype) is None and h5py.check_opaque_dtype(obj.dtype) is False
            seen["datasets"] += 1
        check_attrs(obj, name)

    with h5py.File(path, "r") as f:
        check_attrs(f, "/")
        f.visititems(visit)
    assert seen["datasets"] > 0 and seen["attrs"] > 0
    return seen


def test_files_hold_no_pickled_or_opaque_data(tmp_path, collect):
    # run.h5
    run_dir = str(tmp_path / "run")
    _write_run(run_dir)
    _assert_plain(os.path.join(run_dir, "run.h5"))
    # trajectories
    c = collect("counting_v0", 4, 2, 2, CKW)
    traj = str(tmp_path / "actor-00000.h5")
    w = S.TrajectoryWriter(traj, c.venv.spec, 2, 1.0, 0, resume=False, attrs={"actor": 0, "env": "counting_v0"})
    _feed(w, c)
    w.close()
    _assert_plain(traj)
    # a checkpoint of real learner state (parameters, Adam moments and step, RNG state)
    cfg = PPOConfig(name="mappo", unroll_length=4, hidden=8, layers=1, epochs=1)
    learner = PPOLearner(c.venv.spec, cfg, torch.device("cpu"), 0)
    learner.update(c.records)
    ck = S.save_checkpoint(str(tmp_path / "ck"), 1, learner.state_arrays(), dict(CK_ATTRS, fresh=True), keep=1)
    seen = _assert_plain(ck)
    assert seen["datasets"] == len(learner.state_arrays())


def test_trajectory_writer_bounds_its_chunk_cache(tmp_path, collect):
    """Each dataset's chunk cache holds two chunks of the widest field, not h5py's 8 MiB default (which grew an
    actor's RSS by ~100 MiB over its first GB of trajectories), also when a resume reopens the file."""
    c = collect("counting_v0", 5, 3, 2, CKW)
    path = str(tmp_path / "actor-00003.h5")
    for resume in (False, True):
        w = S.TrajectoryWriter(path, c.venv.spec, 3, fraction=1.0, seed=0, resume=resume)
        assert w.f.id.get_access_plist().get_cache()[2] == 1 << 20  # small rows: the 1 MiB floor
        _feed(w, c)
        w.close()
    wide = types.SimpleNamespace(groups=[types.SimpleNamespace(name="g", n=8, obs_dim=4096, action_shape=(),
                                                               agents=[f"g_{i}" for i in range(8)], discrete=True)])
    w = S.TrajectoryWriter(str(tmp_path / "wide.h5"), wide, 1, fraction=1.0, seed=0, resume=False)
    assert w.f.id.get_access_plist().get_cache()[2] == 2 * 1024 * 8 * 8 * 4096  # two chunks of 8 x 4096 values
    w.close()
    _, eps, _ = _read_traj(path)
    assert len(eps["episode"]) > 0


def test_a_column_new_to_a_resumed_table_is_padded_to_its_rows(tmp_path):
    """run.h5 of an older hpcmarl (no /episodes/won) resumed: the new column gets the rows the others hold (NaN),
    so the table keeps its row count and appends after them."""
    path = str(tmp_path / "t.h5")
    with h5py.File(path, "w") as f:
        t = S.Table(f.require_group("episodes"), {"length": ((), "i4")})
        t.append({"length": np.array([5, 6, 7])})
    with h5py.File(path, "a") as f:
        t = S.Table(f["episodes"], {"length": ((), "i4"), "won": ((), "f8")})
        assert t.rows == 3 and np.isnan(f["episodes/won"][:]).all()
        t.append({"length": np.array([8]), "won": np.array([1.0])})
        assert list(f["episodes/length"][:]) == [5, 6, 7, 8] and f["episodes/won"][3] == 1.0
