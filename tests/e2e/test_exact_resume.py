"""Exact resume: a synchronous run stopped by SIGTERM and resumed ends with bitwise the same checkpoint arrays
(parameters, optimizer state, value normalisation, every rank's random state) as the same run uninterrupted.

It holds where every unroll ends with its episodes (``unroll_length`` a multiple of a fixed episode length, as
here): the checkpoint carries each actor's torch RNG state and its env copies' episode seeds, and the resumed
actors restart their env copies from those seeds. See docs/operations/resume.md#exact-resume for where it
cannot hold."""

import numpy as np
import pytest

from launch import final_arrays, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

ARGS = ["topology.learners=2", "env.num_envs=2", "algo.unroll_length=5",
        "env.kwargs.max_cycles=5", "algo.hidden=16", "runtime.timeout_s=60", "output.checkpoint_every=1000",
        "train.total_env_steps=100000000", "output.progress_s=1"]
ALGO = {"mappo": ["configs/test_tiny.yaml", "algo.epochs=2", "algo.minibatches=2"],
        # QMIX: each learner's replay buffer and sampling generator are in the checkpoint; MAST: its masks too
        "qmix": ["configs/qmix_spread.yaml", "algo.buffer_episodes=6", "algo.batch_episodes=3",
                 "algo.learning_starts=2", "algo.train_steps=2", "output.trajectories=false"]}
ALGO["mast"] = ALGO["qmix"] + ["algo.sparsity=0.9", "algo.topology_every=3", "algo.topology_end=1000"]


@pytest.mark.parametrize("algo", list(ALGO))
def test_sigterm_and_resume_equal_an_uninterrupted_run(tmp_path, algo):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    args = ALGO[algo][:1] + ARGS + ALGO[algo][1:] + ["train.max_updates=8"]
    p = mpirun(4, ["train"] + args + [f"run_dir={a}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    # the lead learner receives SIGTERM during update 3: it stops there, checkpoints and exits 75 (resumable)
    p = mpirun(4, ["train"] + args + [f"run_dir={b}"], timeout=240, env={"HPCMARL_INJECT_FAULT": "0:sigterm:3"})
    assert p.returncode == 75, p.stderr[-3000:]
    stopped, _ = final_arrays(b)
    p = mpirun(4, ["train"] + args + [f"run_dir={b}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    want, attrs_a = final_arrays(a)
    got, attrs_b = final_arrays(b)
    assert attrs_a["update"] == attrs_b["update"] == 8
    assert sorted(want) == sorted(got)
    assert any(k.startswith("rng/actor-") and k.endswith("/env_seeds") for k in want)
    differ = [k for k in want if not np.array_equal(want[k], got[k])]
    assert not differ, f"arrays that differ after the resume: {differ}"
    moved = [k for k in want if k.startswith("model/") and not np.array_equal(want[k], stopped[k])]
    assert moved  # the resumed part trained (the comparison is not between two copies of the stopped state)
    versions = [k for k in want if k.endswith("mask/version")]
    assert bool(versions) == (algo == "mast")
    for k in versions:  # MAST: topology updates happened before the stop and after the resume
        assert want[k] > stopped[k] > 0, (k, want[k], stopped[k])
