"""Training on a batched simulator's env (``jaxmarl:MPE_simple_spread_v3``): serial mode, then ``inspect`` and
``evaluate`` of the run; ``mpirun -n 3`` (1 learner, 2 actors) with an exact resume after SIGTERM."""
import json

import numpy as np
import pytest

from launch import by_hand, final_arrays, hpcmarl, mpirun, require_extra, requires_mpirun

require_extra("jaxmarl", "jax")

E, T = 2, 5
# max_steps=4: JaxMARL MPE episodes of 5 steps, so every unroll of 5 ends one episode per copy (exact counts)
ARGS = ["configs/test_tiny.yaml", "env.name=jaxmarl:MPE_simple_spread_v3", "env.kwargs.max_steps=4",
        f"env.num_envs={E}", f"algo.unroll_length={T}", "algo.hidden=16", "output.progress_s=1",
        "runtime.timeout_s=120", "train.total_env_steps=100000000"]


def summary(run):
    p = hpcmarl(["inspect", str(run), "--json"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_serial_train_then_inspect_and_evaluate(tmp_path):
    run = tmp_path / "serial"
    p = hpcmarl(["train"] + ARGS + [f"run_dir={run}", "train.max_updates=3"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "serial" in p.stdout
    s = summary(run)
    assert s["env"] == "jaxmarl:MPE_simple_spread_v3"
    assert s["updates"] == 3 and s["env_steps"] == 3 * E * T and s["episodes"] == 3 * E
    assert list(s["trajectory_files"].values()) == [3 * E]
    p = hpcmarl(["evaluate", str(run), "--episodes", "4", "--json"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)  # stdout is the JSON alone (JaxMARL's import-time prints are kept out of it)
    assert r["env"] == "jaxmarl:MPE_simple_spread_v3" and r["episodes"] == 4 and r["length_mean"] == T
    assert r["groups"]["agent"]["episodes"] == 4 and np.isfinite(r["groups"]["agent"]["return_mean"])
    p = hpcmarl(["evaluate", str(run), "--episodes", "1", "--render-gif", str(tmp_path / "x.gif")], timeout=240)
    assert p.returncode == 2 and "--render-gif renders PettingZoo environments" in p.stderr


def test_smax_battles_record_their_outcome(tmp_path):
    """SMAX 3m (serial mode): every /episodes row has won 0 or 1, the metrics rows the won share, inspect the win
    rate; the evaluations and marl_eval.json their win rate."""
    from hpcmarl.storage import Run

    run = tmp_path / "smax"
    p = hpcmarl(["train", "configs/test_tiny.yaml", "env.name=jaxmarl:HeuristicEnemySMAX", "env.kwargs.scenario=3m",
                 "env.num_envs=16", "algo.unroll_length=25", "algo.hidden=16", "runtime.timeout_s=120",
                 "train.total_env_steps=100000000", "train.max_updates=4", "eval.every_env_steps=100000000",
                 "eval.episodes=4", f"run_dir={run}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    eps, m = Run(str(run)).episodes(), Run(str(run)).metrics()
    assert len(eps["won"]) > 0 and set(np.unique(eps["won"])) <= {0.0, 1.0}
    done = np.isfinite(m["win_rate"])
    assert done.any()
    for u, rate in zip(m["update"][done], m["win_rate"][done]):
        assert rate == eps["won"][eps["update"] == u].mean()
    assert summary(run)["win_rate"]["last"] == eps["won"][-500:].mean()
    # the final evaluation (and the absolute metric) have outcomes too, and marl_eval.json a win_rate
    from hpcmarl.analysis.export import load_run
    from hpcmarl.analysis.marleval import marl_eval_data

    ev, ev_eps = Run(str(run))._table("eval"), Run(str(run))._table("eval_episodes")
    assert list(ev["episodes"]) == [4, 40] and set(np.unique(ev_eps["won"])) <= {0.0, 1.0}
    for i in range(2):
        assert ev["win_rate"][i] == ev_eps["won"][ev_eps["eval"] == i].mean()
    data = marl_eval_data(load_run(str(run)))
    (task,) = data["jaxmarl"].values()
    (seed,) = task["mappo"].values()
    assert seed["step_0"]["win_rate"] == list(ev_eps["won"][ev_eps["eval"] == 0])


@requires_mpirun
@pytest.mark.parametrize("parts", [1, pytest.param(2, marks=by_hand)])
@pytest.mark.mpi
def test_three_ranks_train_and_resume_exactly(tmp_path, parts):
    """1 learner + 2 actors; stopped by SIGTERM at update 2 and resumed, the run ends with bitwise the arrays of the
    uninterrupted run (each actor's env copies restart from the episode seeds in the checkpoint); also with the copies
    stepped in two parts (env.parts=2: one copy's env step overlapping the other's inference; by hand, 75 s: CI
    checks the parts' seeds and their exact restore in tests/unit/test_batched_jax.py)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    args = ["train"] + ARGS + ["train.max_updates=4", "output.checkpoint_every=1000", f"env.parts={parts}"]
    p = mpirun(3, args + [f"run_dir={a}"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(a)
    assert s["updates"] == 4 and s["env_steps"] == 4 * 2 * E * T and s["episodes"] == 4 * 2 * E
    assert len(s["trajectory_files"]) == 2
    p = mpirun(3, args + [f"run_dir={b}"], timeout=300, env={"HPCMARL_INJECT_FAULT": "0:sigterm:2"})
    assert p.returncode == 75, p.stderr[-3000:]
    p = mpirun(3, args + [f"run_dir={b}"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    (want, attrs_a), (got, attrs_b) = final_arrays(a), final_arrays(b)
    assert attrs_a["update"] == attrs_b["update"] == 4 and sorted(want) == sorted(got)
    assert any(k.endswith("/env_seeds") for k in want)
    differ = [k for k in want if not np.array_equal(want[k], got[k])]
    assert not differ, f"arrays that differ after the resume: {differ}"
