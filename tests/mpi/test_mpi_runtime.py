"""MPI tests: size-agnostic runs under mpirun -n 2 / -n 4 with a hard timeout per launch."""
import glob
import json
import os

import h5py
import numpy as np
import pytest

from launch import COUNTING, hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

TINY = ["env.num_envs=2", "algo.unroll_length=5", "algo.epochs=2", "algo.hidden=16",
        "output.progress_s=1", "runtime.timeout_s=60"]


def ckpt_model(run_dir):
    path = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "ckpt-*.h5")))[-1]
    with h5py.File(path, "r") as f:
        return {k: f["model"][k][()] for k in f["model"]}, dict(f.attrs)


@pytest.mark.parametrize("n,learners", [(2, 1), (4, 2)])
def test_weights_reach_every_actor(tmp_path, n, learners):
    """counting_v0 + the per-unroll weight checksum: every actor reports the checksum of the exact
    weights of every version (the learner aborts otherwise) and records each version it played."""
    run = tmp_path / "run"
    p = mpirun(n, ["train", "configs/test_tiny.yaml", f"run_dir={run}", *COUNTING,
                   f"topology.learners={learners}", "train.max_updates=6"] + TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    files = sorted(glob.glob(str(run / "trajectories" / "actor-*.h5")))
    assert len(files) == n - learners
    for path in files:
        with h5py.File(path, "r") as f:
            versions = set(np.unique(f["steps/policy_version"][()]).tolist())
        assert versions == set(range(6)), (path, versions)


def test_stale_weights_are_detected(tmp_path):
    """An actor that skips loading version 2 must make the job fail, not silently train on it."""
    run = tmp_path / "run"
    p = mpirun(2, ["train", "configs/test_tiny.yaml", f"run_dir={run}", *COUNTING,
                   "train.max_updates=6"] + TINY, env={"HPCMARL_INJECT_FAULT": "1:stale:2"}, timeout=120)
    assert p.returncode != 0
    assert "expected version 2" in p.stderr


@pytest.mark.parametrize("backend", ["horovod", "mpi"])
def test_learners_hold_identical_parameters(tmp_path, backend):
    run = tmp_path / backend
    p = mpirun(4, ["train", "configs/test_tiny.yaml", f"run_dir={run}", "topology.learners=2",
                   f"learner.backend={backend}", "train.max_updates=8", "output.checkpoint_every=4"] + TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    _, attrs = ckpt_model(str(run))
    sums = attrs["learner_param_checksums"]
    assert len(json.loads(sums) if isinstance(sums, str) else sums) == 2
    assert len(set(json.loads(sums) if isinstance(sums, str) else sums)) == 1


def test_horovod_and_mpi_backends_give_identical_parameters(tmp_path):
    models = {}
    for backend in ("horovod", "mpi"):
        run = tmp_path / backend
        p = mpirun(4, ["train", "configs/test_tiny.yaml", f"run_dir={run}", "topology.learners=2",
                       f"learner.backend={backend}", "train.max_updates=5"] + TINY)
        assert p.returncode == 0, p.stderr[-3000:]
        models[backend], _ = ckpt_model(str(run))
    assert models["horovod"].keys() == models["mpi"].keys()
    moved = False
    for k in models["horovod"]:
        np.testing.assert_array_equal(models["horovod"][k], models["mpi"][k], err_msg=k)
    # and training really changed them (compare against a 0-update init from the same seed)
    init_run = tmp_path / "init"
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"run_dir={init_run}", "train.max_updates=1"] + TINY)
    assert p.returncode == 0, p.stderr[-3000:]
    init, _ = ckpt_model(str(init_run))
    moved = any(not np.array_equal(init[k], models["mpi"][k]) for k in init)
    assert moved


def test_serial_mode_and_one_mpi_actor_are_the_same_computation(tmp_path):
    """One code path: 1 rank (the learner steps its own envs) and 2 ranks (1 learner + 1 actor) give
    bit-identical parameters and episode returns for the same seed."""
    args = ["train", "configs/test_tiny.yaml", "train.max_updates=3", "learner.threads=1"] + TINY
    p = hpcmarl(args + [f"run_dir={tmp_path / 'serial'}"])
    assert p.returncode == 0, p.stderr[-3000:]
    p = mpirun(2, args + [f"run_dir={tmp_path / 'mpi'}"])
    assert p.returncode == 0, p.stderr[-3000:]
    a, _ = ckpt_model(str(tmp_path / "serial"))
    b, _ = ckpt_model(str(tmp_path / "mpi"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with h5py.File(tmp_path / "serial" / "run.h5", "r") as fa, h5py.File(tmp_path / "mpi" / "run.h5", "r") as fb:
        np.testing.assert_array_equal(fa["episodes/return/agent"][()], fb["episodes/return/agent"][()])


@pytest.mark.parametrize("algo", ["mappo", "qmix"])
def test_overlapping_actors_train_on_one_step_stale_unrolls(tmp_path, algo):
    """actors.overlap: actors collect the next unroll while the learners update. Every unroll is checked against the
    checksum of the version it names, the lag is exactly 1 after the first round, learners stay identical, the
    stop drains the unroll still on the way (no hang) and a resumed run continues."""
    run = tmp_path / "run"
    config = "configs/test_tiny.yaml" if algo == "mappo" else "configs/qmix_spread.yaml"
    args = ["train", config, f"run_dir={run}", *COUNTING, "topology.learners=2", "actors.overlap=true",
            "output.checkpoint_every=4", "train.total_env_steps=100000"] + [a for a in TINY if a != "algo.epochs=2"]
    if algo == "qmix":
        args += ["algo.learning_starts=4", "algo.batch_episodes=4", "algo.episode_limit=5"]
    p = mpirun(4, args + ["train.max_updates=8"], timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    with h5py.File(run / "run.h5", "r") as f:
        lag, lag_max = f["metrics/lag_mean"][()], f["metrics/lag_max"][()]
        played = f["episodes/policy_version"][()]
    assert lag[0] == 0 and np.all(lag[1:] == 1) and np.all(lag_max[1:] == 1), lag
    assert played.max() <= 6  # episodes carry the version that played them (the last update trains on version 6)
    ckpts = sorted(glob.glob(str(run / "checkpoints" / "ckpt-*.h5")))
    with h5py.File(ckpts[-1], "r") as f:
        sums = json.loads(f.attrs["learner_param_checksums"])
    assert len(sums) == 2 and sums[0] == sums[1]
    p = mpirun(4, args + ["train.max_updates=12"], timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from ckpt-000000008.h5" in p.stdout


def test_overlap_is_refused_where_it_does_not_apply():
    for extra, what in [(["algo.name=matrace"], "synchronous rollout flow"), (["algo.recurrent=true"], "recurrent")]:
        p = hpcmarl(["validate", "--np", "3", "configs/test_tiny.yaml", "actors.overlap=true"] + extra)
        assert p.returncode == 2 and "actors.overlap" in p.stderr and what in p.stderr, p.stderr


@pytest.mark.parametrize("algo,args", [
    ("mappo", ["configs/test_tiny.yaml"] + TINY),  # rollouts: unrolls, weights
    ("qmix", ["configs/mast_spread.yaml", "env.num_envs=2", "algo.hidden=16", "algo.batch_episodes=4",  # + masks
              "algo.learning_starts=4", "algo.train_steps=2", "algo.topology_every=3", "runtime.timeout_s=60"]),
    ("matrace", ["configs/test_tiny.yaml", "algo.name=matrace"] + TINY),  # asynchronous rollouts (synchronous sends)
    ("nigt", ["configs/nigt_spread.yaml", "algo.hidden=16", "algo.batch=6", "algo.init_batch=6",  # gradients
              "runtime.timeout_s=60"]),
])
def test_records_sent_in_chunks_arrive_whole(tmp_path, algo, args):
    """Records over HPCMARL_MPI_CHUNK_BYTES travel as several messages (a 2 GiB message fails under MPI 3): with
    1,000-byte chunks every record is split, and a synchronous flow trains bitwise as with whole messages (weights
    also arrive intact in the asynchronous flows: every actor reports their checksum, the learner aborts on a
    mismatch)."""
    args = ["train"] + args + ["train.max_updates=6", "output.checkpoint_every=3", "learner.backend=mpi"]
    chunked = mpirun(3, args + [f"run_dir={tmp_path / 'chunked'}"], env={"HPCMARL_MPI_CHUNK_BYTES": "1000"})
    assert chunked.returncode == 0, chunked.stderr[-3000:]
    if algo in ("mappo", "qmix"):
        whole = mpirun(3, args + [f"run_dir={tmp_path / 'whole'}"])
        assert whole.returncode == 0, whole.stderr[-3000:]
        a, b = ckpt_model(str(tmp_path / "chunked"))[0], ckpt_model(str(tmp_path / "whole"))[0]
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_compiled_learners_with_a_foreign_cache(tmp_path):
    """learner.compile=true on 2 learners (4 ranks) whose compile cache belongs to another user: each learner says
    in one line that it compiles without the cache, nothing is written into it, the run trains compiled (averaged
    gradients, clipping after the average) and the learners hold identical parameters. With runtime.timeout_s=8:
    the first update compiles for longer (20-60 s on 2 cores, no cache), and the actors waiting for its weights and
    the learners waiting for each other in its all-reduce wait under runtime.startup_timeout_s instead (before, the
    job aborted: "timed out after 8s waiting for weights"); later updates are bounded by timeout_s again."""
    if os.geteuid() != 0:
        pytest.skip("making a cache another user's needs root")
    cache = tmp_path / "xdg" / "hpcmarl" / "inductor"
    cache.mkdir(parents=True, mode=0o700)
    os.chown(cache, 65534, 65534)
    run = tmp_path / "run"
    p = mpirun(4, ["train", "configs/test_tiny.yaml", f"run_dir={run}", "topology.learners=2", "learner.backend=mpi",
                   "learner.compile=true", "train.max_updates=4", "output.checkpoint_every=4"] + TINY
               + ["runtime.timeout_s=8", "runtime.startup_timeout_s=300"],
               env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}, timeout=420)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("compile cache not used") == 2, p.stderr[-3000:]
    assert "is owned by uid 65534" in p.stderr
    assert p.stdout.count("learner update compiled (learner.compile=true") == 1, p.stdout[-2000:]
    assert list(cache.iterdir()) == []
    _, attrs = ckpt_model(str(run))
    sums = attrs["learner_param_checksums"]
    sums = json.loads(sums) if isinstance(sums, str) else sums
    assert len(sums) == 2 and len(set(sums)) == 1
