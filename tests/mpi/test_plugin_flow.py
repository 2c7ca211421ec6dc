"""A data flow as a plug-in: examples/backup_flow.py (docs/extending/flow.md) registers the flow and an algorithm on it;
nothing under hpcmarl/ names either. Each launch has a hard timeout."""
import numpy as np
import pytest

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

PLUGIN = ["configs/test_tiny.yaml", "plugins=[examples.backup_flow]", "algo.name=mappo_backup",
          "learner.compile=false"]


def test_backup_actors_flow_trains_on_the_first_unrolls_and_drops_the_late_ones(tmp_path):
    """1 learner, 3 actors, actor 2 eight times slower (injected sleeps dominate the real costs), ``algo.backups=1``:
    every update trains on 2 unrolls of the current version, the slow actor's come too late and are dropped
    (counted in /metrics late_unrolls), so its episodes are (nearly) absent from /episodes while the synchronous flow
    would take a third of them from it; the run stops cleanly (the actor still collecting is drained)."""
    from hpcmarl.storage import Run

    run = str(tmp_path / "backup")
    updates, T, E = 30, 5, 2
    p = mpirun(4, ["train"] + PLUGIN + [f"run_dir={run}", "algo.backups=1", "actors.delay=[1, 1, 8]",
                                        "actors.step_delay_s=0.002", f"train.max_updates={updates}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "late unroll(s) dropped" in p.stdout, p.stdout[-2000:]
    r = Run(run)
    m = r.metrics()
    assert m["update"].tolist() == list(range(1, updates + 1))
    assert np.diff(m["env_steps"], prepend=0).tolist() == [2 * T * E] * updates  # two unrolls per update
    assert m["late_unrolls"][-1] >= 1 and np.all(np.diff(m["late_unrolls"]) >= 0), m["late_unrolls"]
    actors = r.episodes()["actor"]
    per_actor = [int(np.sum(actors == a)) for a in range(3)]
    assert per_actor[2] * 4 < min(per_actor[:2]), per_actor


def test_backup_flow_states_what_it_cannot_do():
    """The registry entries speak for the plug-in: its config check, no actors.overlap (the flow's capability), and
    no sizing model (said before anything is measured)."""
    p = hpcmarl(["validate", "--np", "4"] + PLUGIN + ["algo.backups=-1"])
    assert p.returncode == 2 and "config key 'algo.backups': must be >= 0" in p.stderr, p.stderr[-1000:]
    p = hpcmarl(["validate", "--np", "4"] + PLUGIN + ["actors.overlap=true"])
    assert p.returncode == 2 and "is not available on mappo_backup's rollouts_backup flow" in p.stderr, p.stderr
    p = hpcmarl(["validate", "--np", "4", "--predict"] + PLUGIN)
    assert p.returncode == 2 and "the rollouts_backup flow is not modelled" in p.stderr, p.stderr[-1000:]
    assert "measuring this node" not in p.stdout
