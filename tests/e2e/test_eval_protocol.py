"""The evaluation protocol (eval.*): /eval rows at every multiple of eval.every_env_steps and at the end, the final
one equal to `hpcmarl evaluate` on the final checkpoint, the absolute metric from the best policy kept in RUN/eval/,
training untouched by evaluation, and a resume that keeps exactly the evaluations up to its checkpoint."""
import glob
import json
import os

import numpy as np
import pytest

from launch import final_arrays, hpcmarl, mpirun, require_extra, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

SMALL = ["runtime.timeout_s=60", "output.keep_checkpoints=1", "train.total_env_steps=2000", "env.num_envs=2",
         "output.checkpoint_every=5", "output.progress_s=1", "algo.hidden=16"]
TINY = ["configs/test_tiny.yaml"] + SMALL
EVAL = ["eval.every_env_steps=500", "eval.episodes=3", "eval.num_envs=2"]
ALGOS = {"mappo": TINY,  # one per data flow: synchronous rollouts, value-based (replay), gradients (NIGT)
         "qmix": ["configs/qmix_spread.yaml"] + SMALL + ["algo.buffer_episodes=8", "algo.batch_episodes=2",
                                                         "algo.learning_starts=2", "algo.train_steps=1"],
         "nigt": ["configs/nigt_spread.yaml"] + SMALL + ["algo.batch=4", "algo.init_batch=4"]}


def tables(run):
    from hpcmarl.storage import Run

    r = Run(run)
    return r._table("eval"), r._table("eval_episodes")


def hpcmarl_metrics(run):
    from hpcmarl.storage import Run

    return Run(run).metrics()


def evaluate_json(path, episodes, num_envs=2):
    p = hpcmarl(["evaluate", path, "--episodes", str(episodes), "--num-envs", str(num_envs), "--json"])
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


@pytest.mark.parametrize("algo", list(ALGOS))
def test_eval_rows_final_equals_evaluate_and_absolute_metric(tmp_path, algo):
    run, plain = str(tmp_path / "eval"), str(tmp_path / "plain")
    p = mpirun(2, ["train"] + ALGOS[algo] + EVAL + [f"run_dir={run}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "[hpcmarl] evaluation at " in p.stdout and "absolute metric" in p.stdout
    ev, eps = tables(run)
    periodic = ev["absolute"] == 0
    steps = ev["env_steps"][periodic]
    final = hpcmarl_metrics(run)["env_steps"][-1]
    # one evaluation at the first update past each multiple of 500 env steps, and one at the end (both at once when
    # the run ends on a multiple, as the synchronous flow's 10-step updates do); the absolute metric last
    assert steps[-1] == final and np.all(np.diff(steps) > 0)
    assert set(steps // 500) >= set(range(1, int(final) // 500 + 1))
    if algo == "mappo":
        assert list(steps) == [500, 1000, 1500, 2000]
    n = len(steps)
    assert list(ev["absolute"]) == [0] * n + [1]
    assert list(np.bincount(eps["eval"])) == [3] * n + [30]
    for i in range(len(ev["update"])):  # each row's mean is the mean of its episodes
        np.testing.assert_allclose(eps["return/agent"][eps["eval"] == i].mean(), ev["return_mean/agent"][i])
    # the final evaluation is `hpcmarl evaluate` of the final checkpoint (keep_checkpoints=1: the only one left)
    ckpts = sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))
    assert len(ckpts) == 1
    r = evaluate_json(ckpts[0], 3)
    assert r["update"] == ev["update"][n - 1]
    np.testing.assert_array_equal(r["groups"]["agent"]["returns"], eps["return/agent"][eps["eval"] == n - 1])
    np.testing.assert_array_equal(r["episode_lengths"], eps["length"][eps["eval"] == n - 1])
    # the best periodic evaluation's policy is kept in RUN/eval/ although its checkpoint was pruned, and the absolute
    # metric is `hpcmarl evaluate` of it with 10 x eval.episodes
    best = int(np.argmax(ev["return_mean/agent"][periodic]))
    kept = glob.glob(os.path.join(run, "eval", "ckpt-*.h5"))
    assert [os.path.basename(k) for k in kept] == [f"ckpt-{int(ev['update'][best]):09d}.h5"]
    assert ev["policy_update"][n] == ev["update"][best]
    r = evaluate_json(kept[0], 30)
    np.testing.assert_array_equal(r["groups"]["agent"]["returns"], eps["return/agent"][eps["eval"] == n])
    # evaluation never touches training: the same run without it ends with the same arrays (random states included);
    # only where runs are deterministic at all (NIGT's gradient flow depends on arrival timing)
    if algo == "nigt":
        return
    p = mpirun(2, ["train"] + ALGOS[algo] + [f"run_dir={plain}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    want, _ = final_arrays(plain)
    got, _ = final_arrays(run)
    assert sorted(want) == sorted(got)
    assert not [k for k in want if not np.array_equal(want[k], got[k])]


def test_resume_keeps_the_evaluations_up_to_its_checkpoint(tmp_path):
    """Episodes of 5 steps and unrolls of 5 (exact resume): SIGTERM between two evaluations, then resume; the /eval
    and /eval_episodes tables equal those of the uninterrupted run, and the best policy file too."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    args = ["train"] + TINY + ["env.kwargs.max_cycles=5", "output.checkpoint_every=30", "eval.every_env_steps=400",
                               "eval.episodes=4", "eval.num_envs=2"]
    p = mpirun(2, args + [f"run_dir={a}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    # stopped at update 130 (1,300 env steps): after the evaluations at 400, 800 and 1,200, checkpoint at update 130
    p = mpirun(2, args + [f"run_dir={b}"], timeout=240, env={"HPCMARL_INJECT_FAULT": "0:sigterm:130"})
    assert p.returncode == 75, p.stderr[-3000:]
    ev_b, _ = tables(b)
    assert list(ev_b["env_steps"]) == [400, 800, 1200]
    p = mpirun(2, args + [f"run_dir={b}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    (ev_a, eps_a), (ev_b, eps_b) = tables(a), tables(b)
    assert list(ev_a["env_steps"]) == [400, 800, 1200, 1600, 2000, 2000]
    for k in ev_a:
        if k != "wall_time":
            np.testing.assert_array_equal(ev_a[k], ev_b[k], err_msg=k)
    for k in eps_a:
        np.testing.assert_array_equal(eps_a[k], eps_b[k], err_msg=k)
    assert ([os.path.basename(p) for p in glob.glob(os.path.join(a, "eval", "*.h5"))]
            == [os.path.basename(p) for p in glob.glob(os.path.join(b, "eval", "*.h5"))])


def test_inspect_plot_and_loggers_show_the_evaluations(tmp_path):
    require_extra("tensorboard", "tracking")
    run = str(tmp_path / "r")
    p = mpirun(2, ["train"] + TINY + ["eval.every_env_steps=1000", "eval.episodes=2", "output.loggers=[tensorboard]",
                                      f"run_dir={run}"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    p = hpcmarl(["inspect", run])
    assert p.returncode == 0, p.stderr
    ev, _ = tables(run)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("eval ")]
    assert len(line) == 1, p.stdout
    assert f"last {ev['return_mean/agent'][-2]:.2f}" in line[0] and f"absolute {ev['return_mean/agent'][-1]:.2f}" \
        in line[0], line
    p = hpcmarl(["inspect", run, "--json"])
    s = json.loads(p.stdout)
    assert s["eval"]["agent"]["absolute"] == pytest.approx(ev["return_mean/agent"][-1])
    # plot: the evaluations beside the training return
    from hpcmarl.analysis.export import load_run
    from hpcmarl.analysis.plot import _plot_returns

    fig = _plot_returns([load_run(run)], "env_steps", 0)
    (marks,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().endswith(": evaluation")]
    np.testing.assert_array_equal(marks.get_ydata(), ev["return_mean/agent"][ev["absolute"] == 0])
    # the live loggers get every evaluation at its env steps
    from tracking_read import tb_scalars

    tb = tb_scalars(os.path.join(run, "tensorboard"))
    steps, values = zip(*tb["eval/return_mean/agent"])
    np.testing.assert_array_equal(steps, ev["env_steps"][ev["absolute"] == 0])
    np.testing.assert_allclose(values, ev["return_mean/agent"][ev["absolute"] == 0], rtol=1e-6)
    ((_, absolute),) = tb["eval/absolute/return_mean/agent"]
    assert absolute == pytest.approx(ev["return_mean/agent"][-1], rel=1e-6)
