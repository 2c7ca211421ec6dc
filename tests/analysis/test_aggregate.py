"""compare --by (rliable aggregation over seeds) and the marl-eval JSON round trip, on short real runs and on
run.h5 files crafted with the storage writer (evaluation tables)."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from hpcmarl.analysis.export import export_run, load_run
from hpcmarl.analysis.marleval import marl_eval_data, merge_marl_eval
from hpcmarl.storage import RunWriter

from launch import ROOT, hpcmarl, require_extra

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")  # arch 7, via rliable


@pytest.fixture(scope="module")
def rl():
    require_extra("rliable", "stats")
    from hpcmarl.analysis.aggregate import load_rliable

    return load_rliable()


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """ippo and mappo on simple_spread, seeds 1 and 2: 30 updates each, two trainings at a time."""
    root = tmp_path_factory.mktemp("agg_runs")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1")
    runs = {(a, s): str(root / f"{a}-{s}") for a in ("ippo", "mappo") for s in (1, 2)}
    items = list(runs.items())
    for i in range(0, len(items), 2):
        procs = []
        for (algo, seed), d in items[i:i + 2]:
            cmd = [sys.executable, "-m", "hpcmarl.cli", "train", "configs/test_tiny.yaml", f"run_dir={d}",
                   "train.max_updates=30", "env.kwargs.max_cycles=5", "learner.threads=1", f"seed={seed}",
                   f"algo.name={algo}"]
            procs.append((cmd, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True, start_new_session=True)))
        for cmd, p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, f"{' '.join(cmd)} -> {p.returncode}\n{out[-2000:]}"
    return runs


def crafted(run_dir, algo, seed, returns, evals=None, env="simple_spread_v3", groups=("agent",), window=4):
    """A run.h5 written by RunWriter: training episodes ``returns`` (one per update, 10 env steps apart, the same
    return for every group) and, with ``evals`` = [(env_steps, absolute, [episode returns])], /eval and
    /eval_episodes rows."""
    os.makedirs(run_dir)
    cfg = {"env": {"name": env}, "algo": {"name": algo}, "seed": seed, "output": {"episode_window": window}}
    tables = {}
    if evals is not None:
        tables["eval"] = {k: ((), "f8") for k in ["update", "env_steps", "wall_time", "episodes", "absolute",
                                                  "length_mean"] + [f"return_{s}/{g}" for g in groups
                                                                    for s in ("mean", "std")]}
        tables["eval_episodes"] = {k: ((), "f8") for k in ["eval", "episode", "length"] +
                                   [f"return/{g}" for g in groups]}
    w = RunWriter(os.path.join(run_dir, "run.h5"), {"config": yaml.safe_dump(cfg), "groups": json.dumps(list(groups)),
                                                    "env": env, "algo": algo}, list(groups), tables=tables)
    n = len(returns)
    steps = 10 * np.arange(1, n + 1)
    w.add_episodes({"actor": np.zeros(n, "i4"), "env": np.zeros(n, "i4"), "length": np.full(n, 5, "i4"),
                    "policy_version": np.arange(n), "update": np.arange(1, n + 1), "env_steps": steps,
                    "wall_time": 0.1 * np.arange(1, n + 1), **{f"return/{g}": np.asarray(returns, float)
                                                               for g in groups}})
    for i, (evs, absolute, rets) in enumerate(evals or []):
        w.append("eval", {"update": [evs / 10], "env_steps": [evs], "wall_time": [evs / 100], "episodes": [len(rets)],
                          "absolute": [float(absolute)], "length_mean": [5.0],
                          **{f"return_mean/{g}": [np.mean(rets)] for g in groups},
                          **{f"return_std/{g}": [np.std(rets)] for g in groups}})
        w.append("eval_episodes", {"eval": np.full(len(rets), i), "episode": np.arange(len(rets)),
                                   "length": np.full(len(rets), 5), **{f"return/{g}": np.asarray(rets, float)
                                                                       for g in groups}})
    w.log_metrics({"update": float(n), "env_steps": float(steps[-1]), "wall_time": 0.1 * n})
    w.close()
    return str(run_dir)


def _episodes(d):
    out = {}
    with h5py.File(os.path.join(d, "run.h5"), "r") as f:
        f["episodes"].visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


# --------------------------------------------------------------------------------------------------
# score sources
# --------------------------------------------------------------------------------------------------
def test_score_source_eval_absolute_then_last_eval_then_training_window(tmp_path):
    from hpcmarl.analysis.aggregate import run_score

    train = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    both = load_run(crafted(tmp_path / "abs", "a", 1, train, [(20, 0, [7, 9]), (40, 0, [10, 12]), (40, 1, [8, 8.5]),
                                                               (60, 0, [3, 5])]))
    assert run_score(both, "agent") == (pytest.approx(8.25), "eval_absolute")
    last = load_run(crafted(tmp_path / "last", "a", 2, train, [(20, 0, [7, 9]), (40, 0, [10, 12])]))
    assert run_score(last, "agent") == (pytest.approx(11.0), "eval_last")
    none = load_run(crafted(tmp_path / "none", "a", 3, train))
    assert none.eval is None and none.eval_episodes is None
    assert run_score(none, "agent") == (pytest.approx(np.mean(train[-4:])), "train_window")  # output.episode_window
    assert run_score(none, "agent", window=2) == (pytest.approx(5.5), "train_window")
    # --at-env-steps: the training window ending there, evaluations ignored
    assert run_score(both, "agent", window=2, at_env_steps=30) == (pytest.approx(2.5), "train_window@30")
    with pytest.raises(Exception, match="no policy group 'nope'"):
        run_score(none, "nope")


def test_compare_by_reports_each_groups_score_source_and_warns(tmp_path, rl):
    from hpcmarl.analysis.aggregate import aggregate_runs, format_aggregate

    runs = [crafted(tmp_path / "a1", "a", 1, [1, 2], [(20, 1, [5, 6])]),
            crafted(tmp_path / "a2", "a", 2, [1, 2], [(20, 0, [5, 6])]),
            crafted(tmp_path / "b1", "b", 1, [3, 4], env="simple_tag_v3", groups=("adversary", "agent"))]
    res = aggregate_runs(runs, by="algo", reps=200)
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["a"]["source"] == "eval_absolute x1, eval_last x1" and rows["b"]["source"] == "train_window"
    assert rows["b"]["runs"] == 1 and rows["b"]["IQM_ci"] == [3.5, 3.5]  # first group: adversary, 1 run
    assert any("fewer than 2 runs in b" in w for w in res["warnings"])
    assert any("different environments" in w and "not comparable" in w for w in res["warnings"])
    text = format_aggregate(res)
    assert "| b | 1 | train_window |" in text and "warning: fewer than 2 runs" in text
    # --group, --by another config key
    res = aggregate_runs(runs[2:], by="env.name", group="agent", reps=50)
    assert res["names"] == ["simple_tag_v3"] and res["scores"] == {"simple_tag_v3": [3.5]} and not res["poi"]


# --------------------------------------------------------------------------------------------------
# compare --by on real runs: the numbers are rliable's, the files are there
# --------------------------------------------------------------------------------------------------
def test_compare_by_algo_is_rliable_on_the_runs_scores(real_runs, rl, tmp_path):
    library, metrics, _ = rl
    from hpcmarl.analysis.aggregate import aggregate_runs

    res = aggregate_runs(list(real_runs.values()), by="algo", reps=500, seed=3)
    assert res["names"] == ["ippo", "mappo"] and not res["warnings"]
    scores = {}
    for algo in res["names"]:
        dirs = [real_runs[(algo, s)] for s in (1, 2)]
        assert res["runs"][algo] == [os.path.abspath(d) for d in dirs]
        scores[algo] = np.array([[_episodes(d)["return/agent"][-500:].mean()] for d in dirs])
        assert res["scores"][algo] == pytest.approx(scores[algo].ravel().tolist())
        assert res["sources"][algo] == ["train_window", "train_window"]
    point, ci = library.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_median(x)]),
        reps=500, random_state=np.random.RandomState(3))
    for row in res["rows"]:
        n = row["name"]
        assert row["IQM"] == pytest.approx(metrics.aggregate_iqm(scores[n]))
        assert row["mean"] == pytest.approx(scores[n].mean())
        assert [row["IQM"], row["mean"], row["median"]] == pytest.approx(point[n].tolist())
        assert row["IQM_ci"] == pytest.approx(ci[n][:, 0].tolist()) and row["mean_ci"] == pytest.approx(ci[n][:, 1])
    assert res["poi"]["ippo,mappo"]["p"] == pytest.approx(
        metrics.probability_of_improvement(scores["ippo"], scores["mappo"]))
    profile, _ = library.create_performance_profile(scores, np.array(res["profile"]["tau"]), reps=2)
    assert res["profile"]["ippo"] == pytest.approx(profile["ippo"].tolist())


def test_compare_by_cli_writes_the_report_and_valid_pngs(real_runs, rl, tmp_path):
    out = tmp_path / "cmp"
    p = hpcmarl(["compare", *real_runs.values(), "--by", "algo", "--reps", "300", "--out", str(out)])
    assert p.returncode == 0, p.stderr
    assert "| algo | runs | score source | IQM [95% CI] | mean [95% CI] | median [95% CI] |" in p.stdout
    assert "| ippo | 2 | train_window |" in p.stdout and "Probability of improvement" in p.stdout
    from matplotlib import image

    for name in ("performance_profile", "interval_estimates", "probability_of_improvement"):
        path = out / f"{name}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = image.imread(str(path))
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 100 and img.std() > 0
    assert (out / "compare.md").read_text() in p.stdout
    res = json.loads((out / "compare.json").read_text())
    assert res["reps"] == 300 and res["seed"] == 0 and [r["name"] for r in res["rows"]] == ["ippo", "mappo"]
    again = hpcmarl(["compare", *real_runs.values(), "--by", "algo", "--reps", "300", "--json"])
    assert json.loads(again.stdout)["rows"] == res["rows"]  # fixed bootstrap seed: reproducible
    merged = json.loads((out / "marl_eval.json").read_text())
    assert sorted(merged["mpe"]["simple_spread_v3"]) == ["ippo", "mappo"]
    assert sorted(merged["mpe"]["simple_spread_v3"]["ippo"]) == ["seed_1", "seed_2"]


def test_compare_by_without_rliable_says_how_to_install(real_runs, monkeypatch, capsys):
    from hpcmarl import cli

    for name in [m for m in sys.modules if m.split(".")[0] in ("rliable", "arch")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable -> ImportError
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", real_runs[("ippo", 1)], real_runs[("mappo", 1)], "--by", "algo"])
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert err == 'compare --by needs rliable: pip install -e ".[stats]"\n' and out == ""


# --------------------------------------------------------------------------------------------------
# marl-eval round trip: the files export writes, merged, read by marl-eval itself
# --------------------------------------------------------------------------------------------------
def _marl_eval_matrices(raw):
    require_extra("marl_eval", "stats")
    from marl_eval.utils.data_processing_utils import create_matrices_for_rliable, data_process_pipeline

    processed = data_process_pipeline(raw_data=raw, metrics_to_normalize=[])
    assert "extra" in processed, "marl-eval could not process the file"
    env = next(iter(raw))
    return processed, create_matrices_for_rliable(data_dictionary=processed, environment_name=env,
                                                  metrics_to_normalize=[])


def test_marl_eval_reads_exported_training_runs(real_runs, tmp_path):
    parts = []
    for (algo, seed), d in real_runs.items():
        res = export_run(d, str(tmp_path / f"{algo}-{seed}"), trajectories=False)
        with open(res["marl_eval"]["path"]) as fh:
            parts.append(json.load(fh))
    raw = merge_marl_eval(parts)
    _, (absolute, over_time) = _marl_eval_matrices(json.loads(json.dumps(raw)))
    for algo in ("ippo", "mappo"):
        assert absolute["mean_return"][algo].shape == (2, 1)
        for i, seed in enumerate((1, 2)):
            run = raw["mpe"]["simple_spread_v3"][algo][f"seed_{seed}"]
            eps = _episodes(real_runs[(algo, seed)])
            steps = sorted((k for k in run if k.startswith("step_")), key=lambda k: int(k[5:]))
            got = np.concatenate([run[k]["return"] for k in steps])
            assert np.allclose(got, eps["return/agent"])  # every training episode, in order
            means = [np.mean(run[k]["return"]) for k in steps]
            assert np.allclose(over_time["mean_return"][algo][i, 0, :], means)
            assert absolute["mean_return"][algo][i, 0] == pytest.approx(max(means))  # the best bin


def test_marl_eval_reads_evaluation_rows(tmp_path):
    evals = {("a", 1): [(20, 0, [1, 2]), (40, 0, [3, 5]), (40, 1, [4, 4.5, 5])],
             ("a", 2): [(20, 0, [0, 2]), (40, 0, [6, 7]), (40, 1, [6, 6, 6.5])],
             ("b", 1): [(20, 0, [-1, 1]), (40, 0, [2, 2]), (40, 1, [1, 2, 3])],
             ("b", 2): [(20, 0, [1, 1]), (40, 0, [9, 9]), (40, 1, [7, 8, 9])]}
    datas = {k: load_run(crafted(tmp_path / f"{k[0]}{k[1]}", k[0], k[1], [0.0, 1.0], ev)) for k, ev in evals.items()}
    one = marl_eval_data(datas[("a", 1)])["mpe"]["simple_spread_v3"]["a"]["seed_1"]
    assert set(one) == {"step_0", "step_1", "absolute_metrics"}
    assert one["step_1"] == {"step_count": 40, "elapsed_time": 0.4, "return": [3.0, 5.0], "agent_return": [3.0, 5.0]}
    assert one["absolute_metrics"] == {"return": [4.0, 4.5, 5.0], "agent_return": [4.0, 4.5, 5.0]}
    raw = merge_marl_eval([marl_eval_data(d) for d in datas.values()])
    _, (absolute, over_time) = _marl_eval_matrices(raw)
    for (algo, seed), ev in evals.items():
        assert absolute["mean_return"][algo][seed - 1, 0] == pytest.approx(np.mean(ev[2][2]))
        assert over_time["mean_return"][algo][seed - 1, 0, :] == pytest.approx([np.mean(ev[0][2]), np.mean(ev[1][2])])


def test_merge_keeps_runs_with_the_same_seed():
    part = {"mpe": {"t": {"a": {"seed_1": {"absolute_metrics": {}}}}}}
    assert list(merge_marl_eval([part, part, part])["mpe"]["t"]["a"]) == ["seed_1", "seed_1_2", "seed_1_3"]
