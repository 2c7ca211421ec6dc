"""A crashing environment does not end a long run (actors.env_errors=reset), unless told to or past the limit:
counting_v0 with crash_at raises in the N-th step()/reset() of each env instance (so a re-created copy raises again
N calls later), in the synchronous rollout, asynchronous rollout and gradient flows."""
import json

import pytest

from launch import COUNTING, hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

BASE = [*COUNTING, "env.num_envs=2", "algo.hidden=8", "output.progress_s=5", "runtime.timeout_s=60",
        "env.kwargs.max_cycles=5"]
FLOWS = {
    "rollouts": ["configs/test_tiny.yaml", "algo.unroll_length=5"],
    "rollouts_async": ["configs/matrace_spread.yaml", "algo.unroll_length=5"],
    "gradients": ["configs/nigt_spread.yaml", "algo.batch=2", "algo.init_batch=2"],
}


def summary(run):
    p = hpcmarl(["inspect", str(run), "--json"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("flow", list(FLOWS))
@pytest.mark.parametrize("crash_in", ["step", "reset"])
def test_crashing_env_copies_are_recreated_and_counted(tmp_path, flow, crash_in):
    run = tmp_path / "run"
    p = mpirun(3, ["train"] + FLOWS[flow] + BASE + [f"run_dir={run}", "env.kwargs.crash_at=7",
                                                    f"env.kwargs.crash_in={crash_in}", "train.max_updates=8"],
               timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("Traceback") == 2, p.stderr[-3000:]  # the first error of each actor, with its traceback
    assert f"crashed in {crash_in} call 7" in p.stderr and "re-created" in p.stderr
    s = summary(run)
    assert s["updates"] == 8 and s["env_errors"] >= 2, s


def test_abort_or_too_many_errors_end_the_job(tmp_path):
    args = ["train"] + FLOWS["rollouts"] + BASE + ["env.kwargs.crash_at=3", "train.max_updates=50"]
    p = mpirun(2, args + [f"run_dir={tmp_path / 'a'}", "actors.env_errors=abort"], timeout=120)
    assert p.returncode != 0 and "counting_v0 crashed in step call 3" in p.stderr
    p = mpirun(2, args + [f"run_dir={tmp_path / 'b'}", "actors.max_env_errors=2"], timeout=120)
    assert p.returncode != 0 and "more than actors.max_env_errors=2" in p.stderr


def test_league_seats_and_evaluation_games_survive_crashing_envs(tmp_path):
    """League mode: the actor's seat envs and the league rank's evaluation games re-create a crashing copy."""
    run = tmp_path / "run"
    p = mpirun(3, ["train", "configs/league_spread.yaml"] + BASE + [
        f"run_dir={run}", "algo.unroll_length=5", "env.kwargs.crash_at=7", "train.max_updates=8",
        "league.groups.0.snapshot_every=4"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "crashed in step call 7" in p.stderr and "re-created" in p.stderr
    assert "snapshot(s) added to the pool" in p.stdout
    s = summary(run)
    assert s["updates"] == 8 and s["env_errors"] >= 1, s
