"""Bring your own environment: an env hpcmarl does not register, given as "module:callable", trained under mpirun."""
import json
import os

import pytest

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]


def test_example_env_by_import_path_trains_on_three_ranks(tmp_path):
    """examples/walk_env.py (1 learner + 2 actors): the run learns (the walkers get closer to their goals) and
    inspect reports the group found from the agent names."""
    run = tmp_path / "walk"
    p = mpirun(3, ["train", "configs/simple_spread_mappo.yaml", "env.name=examples.walk_env:parallel_env",
                   f"run_dir={run}", "env.num_envs=8", "algo.unroll_length=10", "train.max_updates=40",
                   "output.progress_s=5", "runtime.timeout_s=60"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = hpcmarl(["inspect", str(run), "--json", "--window", "100"])
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["env"] == "examples.walk_env:parallel_env" and list(s["groups"]) == ["walker"]
    g = s["groups"]["walker"]
    assert g["return_last"] > g["return_first"] + 1.0, g  # a random walker scores about -7.5


def test_env_registered_by_a_plugin_trains_by_its_short_name(tmp_path):
    """examples/walk_env.py registers itself as ``walk_v0`` (``hpcmarl.register_env``): with the module in the config's
    ``plugins`` every rank imports it before the config is read, so the short name trains under mpirun; without it
    the name is unknown (exit 2, one line)."""
    run = tmp_path / "walk"
    p = mpirun(2, ["train", "configs/simple_spread_mappo.yaml", "plugins=[examples.walk_env]", "env.name=walk_v0",
                   f"run_dir={run}", "env.num_envs=8", "algo.unroll_length=10", "train.max_updates=5",
                   "output.progress_s=5", "runtime.timeout_s=60"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = hpcmarl(["inspect", str(run), "--json"])
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["env"] == "walk_v0" and list(s["groups"]) == ["walker"] and s["updates"] == 5
    p = hpcmarl(["train", "configs/simple_spread_mappo.yaml", "env.name=walk_v0", f"run_dir={tmp_path / 'x'}"])
    assert p.returncode == 2 and "walk_v0" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("path", ["no_such_module_xyz:env", "examples.walk_env:missing", "json:loads"])
def test_bad_env_path_exits_2_and_writes_nothing(tmp_path, path):
    run = tmp_path / "bad"
    p = hpcmarl(["train", "configs/simple_spread_mappo.yaml", f"env.name={path}", f"run_dir={run}"])
    assert p.returncode == 2, p.stderr
    assert path in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(run)


def test_target_return_stops_the_run_and_says_where(tmp_path):
    """train.target_return: the run stops once the full episode window reaches it and reports the window mean the
    stop vote saw (never below the target) and the env steps."""
    import re

    p = hpcmarl(["train", "configs/simple_spread_mappo.yaml", "env.name=examples.walk_env:parallel_env",
                 f"run_dir={tmp_path / 'r'}", "env.num_envs=8", "algo.unroll_length=10", "train.max_updates=400",
                 "train.target_return=-6.0", "output.episode_window=100"], timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    m = re.search(r"reached the target return -6.0 \(walker (-?[\d.]+) over the last 100 episodes\) at ([\d,]+) env "
                  r"steps", p.stdout)
    assert m, p.stdout[-2000:]
    assert float(m.group(1)) >= -6.0 and "finished (target_return reached)" in p.stdout
