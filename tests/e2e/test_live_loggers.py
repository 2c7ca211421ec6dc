"""Live loggers (output.loggers) in real training runs under mpirun: what TensorBoard, W&B (offline) and MLflow hold,
read back with their own readers, equals run.h5 /metrics; a resumed session continues the same runs; a logger that
fails mid-run is switched off with one warning; a missing package is one line before training starts."""
import os

import numpy as np
import pytest

from launch import ROOT, hpcmarl, mpirun, require_extra, requires_mpirun
from tracking_read import finite_by_step, mlflow_runs, tb_scalars, wandb_runs

pytestmark = [requires_mpirun, pytest.mark.mpi]

ALL = "output.loggers=[tensorboard,wandb,mlflow]"
BASE = ["train", "configs/test_tiny.yaml", "output.checkpoint_every=2", "output.trajectories=false",
        "runtime.timeout_s=60"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run, two sessions: 4 updates, then resumed to 6, every logger on."""
    for mod in ("tensorboard", "wandb", "mlflow"):
        require_extra(mod, "tracking")
    run = tmp_path_factory.mktemp("tracking") / "run"
    outs = []
    for updates in (4, 6):
        p = mpirun(2, BASE + [f"run_dir={run}", f"train.max_updates={updates}", ALL], timeout=180)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "warning" not in p.stderr, p.stderr[-3000:]
        outs.append(p)
    assert "resumed from" in outs[1].stdout
    from hpcmarl.analysis.export import load_run

    return str(run), load_run(str(run)).metrics


def test_tensorboard_holds_every_metrics_row(trained):
    run, m = trained
    assert len(m["update"]) == 6
    tb = tb_scalars(os.path.join(run, "tensorboard"))
    names = [k for k in m if m[k].ndim == 1 and np.isfinite(m[k]).any()]
    assert sorted(tb) == sorted(names)
    for name in names:
        want = finite_by_step(m, name)
        got = tb[name]
        assert [s for s, _ in got] == sorted(want), name  # each step once: the resume purged nothing it needed
        np.testing.assert_allclose([v for _, v in got], [want[s] for s in sorted(want)], rtol=1e-6, err_msg=name)


def test_wandb_offline_runs_hold_every_row_under_one_id(trained):
    run, m = trained
    runs = wandb_runs(run)
    assert len(runs) == 2  # one offline directory per session ...
    assert runs[0]["id"] == runs[1]["id"] and runs[0]["project"] == "hpcmarl"  # ... of the same W&B run
    rows = [r for w in runs for r in w["rows"]]
    assert [int(r["env_steps"]) for r in rows] == [int(s) for s in m["env_steps"]]
    for r, i in zip(rows, range(len(rows))):
        want = {k: float(m[k][i]) for k in m if m[k].ndim == 1 and np.isfinite(m[k][i])}
        assert sorted(r) == sorted(want)
        np.testing.assert_allclose([r[k] for k in sorted(r)], [want[k] for k in sorted(r)], rtol=1e-12)


def test_mlflow_run_holds_every_row_and_the_config(trained):
    run, m = trained
    client, runs = mlflow_runs(run)
    assert len(runs) == 1  # the resumed session found its run again
    r = runs[0]
    assert r.info.status == "FINISHED"
    assert r.data.tags["hpcmarl.run_dir"] == os.path.abspath(run)
    assert r.data.params["algo.name"] == "mappo" and r.data.params["train.max_updates"] == "4"  # the first session's
    for name in [k for k in m if m[k].ndim == 1 and np.isfinite(m[k]).any()]:
        hist = sorted((h.step, h.value) for h in client.get_metric_history(r.info.run_id, name))
        want = finite_by_step(m, name)
        assert [s for s, _ in hist] == sorted(want), name
        np.testing.assert_allclose([v for _, v in hist], [want[s] for s in sorted(want)], rtol=1e-12, err_msg=name)


def test_a_failing_logger_is_switched_off_and_training_goes_on(tmp_path):
    """tests/e2e/tracking_plugin.py makes TensorBoard's add_scalar raise OSError(ENOSPC) from the 2nd row on (the
    other loggers going on: tests/unit/test_tracking.py)."""
    require_extra("tensorboard", "tracking")
    run = tmp_path / "run"
    p = mpirun(2, BASE + [f"run_dir={run}", "train.max_updates=4", "output.loggers=[tensorboard]",
                          "plugins=[tests.e2e.tracking_plugin]"], timeout=180, env={"HPCMARL_TEST_TB_FAIL_AT": "2"})
    assert p.returncode == 0, p.stderr[-3000:]
    warnings = [line for line in p.stderr.splitlines() if "warning" in line]
    assert warnings == ["hpcmarl: warning: logger tensorboard failed (OSError: [Errno 28] No space left on device); "
                        "it is off for the rest of this session"], p.stderr[-3000:]
    assert "finished" in p.stdout
    from hpcmarl.analysis.export import load_run

    m = load_run(str(run)).metrics
    assert len(m["update"]) == 4
    assert [s for s, _ in tb_scalars(str(run / "tensorboard"))["update"]] == [int(m["env_steps"][0])]


def test_a_missing_package_is_one_line_before_training(tmp_path):
    """A ``wandb`` that cannot be imported (a stand-in package on PYTHONPATH): exit 2, one line naming the extra,
    nothing trained, no rank left waiting."""
    shadow = tmp_path / "shadow" / "wandb"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'wandb'\")\n")
    run = tmp_path / "run"
    p = mpirun(2, BASE + [f"run_dir={run}", "train.max_updates=2", ALL], timeout=120,
               env={"PYTHONPATH": str(tmp_path / "shadow") + os.pathsep + ROOT})
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.startswith("hpcmarl")]  # (mpirun adds its own lines)
    assert lines == ["hpcmarl: error: output.loggers: wandb needs the Python package 'wandb' (ImportError: No module "
                     "named 'wandb'): pip install -e \".[tracking]\""], p.stderr[-3000:]
    assert not os.path.exists(run / "run.h5")


def test_export_writes_tensorboard_files_or_says_which_extra_is_missing(trained, tmp_path):
    run, m = trained
    p = hpcmarl(["export", run, "--out", str(tmp_path / "with"), "--no-trajectories"])
    assert p.returncode == 0 and p.stderr == "", p.stderr[-3000:]
    tb = tb_scalars(str(tmp_path / "with" / "tensorboard"))
    assert tb == tb_scalars(os.path.join(run, "tensorboard"))  # what the live logger wrote, the same scalars
    shadow = tmp_path / "shadow" / "tensorboard"  # a tensorboard that cannot be imported
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'tensorboard'\")\n")
    p = hpcmarl(["export", run, "--out", str(tmp_path / "without"), "--no-trajectories"],
                env={"PYTHONPATH": str(tmp_path / "shadow") + os.pathsep + ROOT})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.splitlines() == ["hpcmarl: note: no TensorBoard files: the tensorboard package is not installed "
                                     "(No module named 'tensorboard'): pip install -e \".[tracking]\""]
    assert os.path.exists(tmp_path / "without" / "metrics.csv")
    assert not os.path.exists(tmp_path / "without" / "tensorboard")
