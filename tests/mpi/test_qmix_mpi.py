"""QMIX / VDN / MAST on the rollout flow under mpirun, each launch with a hard timeout."""
import glob
import json
import os

import numpy as np
import pytest

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

TINY = ["configs/mast_spread.yaml", "env.num_envs=2", "algo.hidden=16", "algo.batch_episodes=4",
        "algo.learning_starts=4", "algo.train_steps=2", "algo.topology_every=3", "algo.target_update=5",
        "algo.eps_anneal_steps=500", "algo.td_lambda_after=300", "algo.recent_episodes=8", "output.progress_s=1",
        "runtime.timeout_s=60", "output.checkpoint_every=5"]


def metrics(run):
    from hpcmarl.storage import Run

    return Run(run).metrics()


def checkpoint(run):
    """(path, learner checksums, {mask name: mask}, {parameter name: values}) of the newest checkpoint."""
    from hpcmarl.storage import load_checkpoint

    path = sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1]
    arrays, attrs = load_checkpoint(path)
    sums = attrs["learner_param_checksums"]
    masks = {k[len("mask/"):]: v.astype(bool) for k, v in arrays.items()
             if k.startswith("mask/") and k != "mask/version"}
    params = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    return path, (json.loads(sums) if isinstance(sums, str) else list(sums)), masks, params


def test_mast_with_two_learners(tmp_path):
    """2 learners (Horovod) + 2 actors, MAST at 90%: identical parameters on both learners, constant
    sparsity, topology updates, epsilon annealed, FLOPs written to run.h5; evaluate plays the checkpoint."""
    run = str(tmp_path / "mast")
    p = mpirun(4, ["train"] + TINY + [f"run_dir={run}", "topology.learners=2", "train.max_updates=20"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    m = metrics(run)
    assert len(m["update"]) == 20
    assert np.all(np.abs(m["sparsity"] - 0.9) < 0.01) and np.ptp(m["sparsity"]) == 0
    assert m["topology/grown"].sum() > 0
    assert m["epsilon"][0] > m["epsilon"][-1] >= 0.05
    assert np.all(np.diff(m["flops/train_total"]) >= 0) and m["flops/train_total"][-1] > 0
    assert m["flops/inference_step"][-1] > 0
    assert m["td_lambda"][0] == 0.0 and m["td_lambda"][-1] == 0.6
    path, sums, masks, params = checkpoint(run)
    assert len(sums) == 2 and sums[0] == sums[1]
    on = sum(int(v.sum()) for v in masks.values())
    assert abs(on / sum(v.size for v in masks.values()) - 0.1) < 0.01
    for k, mask in masks.items():  # the saved weights are exactly zero where masked
        assert np.all(params[k][~mask] == 0)
    ev = hpcmarl(["evaluate", path, "--episodes", "4"])
    assert ev.returncode == 0, ev.stderr[-2000:]
    out = hpcmarl(["inspect", run])
    assert out.returncode == 0 and "sparsity 0.900" in out.stdout, out.stdout


@pytest.mark.parametrize("name", ["qmix", "vdn"])
def test_serial_run_and_resume(tmp_path, name):
    """One rank: train, stop, resume from the checkpoint (masks and counters restored), same tables."""
    run = str(tmp_path / name)
    for updates in (6, 12):
        p = hpcmarl(["train"] + TINY + [f"run_dir={run}", f"algo.name={name}", f"train.max_updates={updates}"],
                    timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
    m = metrics(run)
    assert m["update"].tolist() == list(range(1, 13))
    f = m["flops/train_total"]
    # the resumed run continued the FLOP counter (its replay refills first: the buffer is not checkpointed)
    assert np.all(np.diff(f) >= 0) and f[-1] > f[5] > 0


def test_failing_actor_ends_the_job(tmp_path):
    p = mpirun(3, ["train"] + TINY + [f"run_dir={tmp_path / 'f'}", "train.max_updates=50", "learner.backend=mpi"],
               env={"HPCMARL_INJECT_FAULT": "2:raise:3"}, timeout=120)
    assert p.returncode != 0
    assert "injected fault on rank 2" in p.stderr
