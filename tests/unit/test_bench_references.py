"""tools/bench_sample_efficiency.py's references outside hpcmarl: how EPyMARL (--epymarl), BenchMARL
(--benchmarl-python) and JaxMARL's SMAX baselines (--jaxmarl-baselines) are launched and how their logs become scores
at budgets (stand-ins write what EPyMARL's sacred FileStorageObserver and tools/reference/benchmarl_mappo.py write, and
log as JaxMARL's baselines do)."""
import json
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))

import bench_sample_efficiency as bse  # noqa: E402

from launch import require_extra  # noqa: E402

# EPyMARL's layout: <checkout>/src/main.py; sacred runs under <checkout>/results/sacred/<alg>/<env>/<n>/
FAKE_MAIN = '''
import json, os, sys
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a and not a.startswith("--"))
assert sys.argv[1:4] == ["--config=mappo", "--env-config=gymma", "with"], sys.argv
assert args["common_reward"] == "True" and args["reward_scalarisation"] == "sum" and args["use_cuda"] == "False"
assert args["save_model"] == "True"
base = os.path.join(os.path.dirname(os.getcwd()), "results", "sacred", "mappo", args["env_args.key"])
os.makedirs(base, exist_ok=True)
run = os.path.join(base, str(len(os.listdir(base)) + 1))
os.makedirs(run)
json.dump(args, open(os.path.join(run, "config.json"), "w"))  # sacred keeps the whole config
start = 0
if args.get("checkpoint_path"):  # EPyMARL's resume: the models saved at load_step, training on from there
    start = int(args["load_step"])
    assert os.path.isdir(os.path.join(args["checkpoint_path"], str(start)))
die = int(os.environ.get("FAKE_EPYMARL_DIE_AT", 0))
end = min(int(args["t_max"]), die) if die else int(args["t_max"])
steps = [s for s in range(250, end + 1, 10000) if s > start]
seed, piece = int(args["seed"]), 0.5 if start else 0.0  # a resumed piece's points are told apart by +0.5
json.dump({"return_mean": {"steps": steps, "values": [-100.0 + s / 10000 + seed + piece for s in steps]}},
          open(os.path.join(run, "metrics.json"), "w"))
every = int(args["save_model_interval"])
for t in range(start + every, end + 1, every):
    os.makedirs(os.path.join(args["local_results_path"], "models", "mappo_seed%d_%d" % (seed, start), str(t)))
sys.exit(9 if die else 0)
'''


@pytest.fixture
def checkout(tmp_path):
    src = tmp_path / "epymarl" / "src"
    src.mkdir(parents=True)
    (src / "main.py").write_text(FAKE_MAIN)
    return src


def args(tmp_path, src, reuse=False):
    return types.SimpleNamespace(epymarl=str(src), epymarl_python=sys.executable, out=str(tmp_path / "out"),
                                 epymarl_env="env_args.key=pz-mpe-simple-spread-v3 env_args.time_limit=25",
                                 reuse=reuse, timeout_h=0.05, epymarl_save_every=30_000)


def test_epymarl_runs_are_kept_per_seed_and_read_back(tmp_path, checkout):
    a = args(tmp_path, checkout)
    os.makedirs(a.out)
    x0, y0 = bse.run_epymarl(0, 100_000, a)
    x1, y1 = bse.run_epymarl(1, 100_000, a)  # a second sacred run beside the first: its own metrics are read
    assert x0[0] == 250 and x0[-1] == 100_250 and np.array_equal(x0, x1)
    assert np.allclose(y1 - y0, 1.0)
    assert json.load(open(os.path.join(a.out, "epymarl-s1.json")))["return_mean"]["values"][0] == pytest.approx(-98.975)
    (checkout / "main.py").write_text("raise SystemExit(3)")  # --reuse reads the kept copy, never runs EPyMARL again
    x, y = bse.run_epymarl(1, 100_000, args(tmp_path, checkout, reuse=True))
    assert np.array_equal(y, y1)
    with pytest.raises(subprocess.CalledProcessError):  # EPyMARL failing fails the benchmark
        bse.run_epymarl(2, 100_000, a)


def test_an_epymarl_run_cut_short_resumes_from_its_newest_checkpoint(tmp_path, checkout, monkeypatch):
    """Killed at 75k env steps (checkpoints at 30k and 60k): the same call with --reuse resumes EPyMARL from 60k;
    the curve keeps the first piece's points up to 60k and the resumed piece's after; a larger budget later goes
    on from the newest checkpoint again. Without --reuse a run starts afresh."""
    a = args(tmp_path, checkout)
    os.makedirs(a.out)
    monkeypatch.setenv("FAKE_EPYMARL_DIE_AT", "75000")
    with pytest.raises(subprocess.CalledProcessError):
        bse.run_epymarl(0, 100_000, a)
    monkeypatch.delenv("FAKE_EPYMARL_DIE_AT")
    r = args(tmp_path, checkout, reuse=True)
    x, y = bse.run_epymarl(0, 100_000, r)
    assert list(x) == list(range(250, 100_251, 10_000))
    first = x <= 60_000
    assert np.allclose(y[first], -100 + x[first] / 10000) and np.allclose(y[~first], -99.5 + x[~first] / 10000)
    x2, y2 = bse.run_epymarl(0, 160_000, r)  # a larger budget: on from the checkpoint at 90k
    assert x2[-1] == 160_250 and np.array_equal(y2[:10], y[:10]) and np.allclose(y2[-1], -99.5 + 16.025)
    fake = (checkout / "main.py").read_text()
    (checkout / "main.py").write_text("raise SystemExit(3)")
    assert np.array_equal(bse.run_epymarl(0, 160_000, r)[1], y2)  # finished: read back, not run again
    (checkout / "main.py").write_text(fake)
    x3, y3 = bse.run_epymarl(0, 100_000, a)  # no --reuse: from scratch, a piece of its own
    assert np.allclose(y3, -100 + x3 / 10000)
    assert sorted(os.listdir(os.path.join(a.out, "epymarl-s0"))) == ["run-001", "run-002"]


def test_returns_at_budgets_average_the_points_of_the_window_before():
    steps = np.arange(250, 1_000_251, 10_000, dtype=float)
    ret = steps / 1000.0
    at = bse.points_at(steps, ret, [100_000, 250_000, 2_000_000], 50_000, slack=1000)
    # the five points 60,250 .. 100,250: the training episodes of the 50k env steps before 100k
    assert at[100_000] == pytest.approx(np.mean([60.25, 70.25, 80.25, 90.25, 100.25]))
    assert at[250_000] == pytest.approx(np.mean([210.25, 220.25, 230.25, 240.25, 250.25]))
    assert np.isnan(at[2_000_000])  # not reached


# BenchMARL: tools/reference/benchmarl_mappo.py run by --benchmarl-python; the stand-in writes its curve
FAKE_BENCHMARL = '''
import json, os, sys
script, frames, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
assert script.endswith(os.path.join("tools", "reference", "benchmarl_mappo.py")), script
if os.environ.get("FAKE_BENCHMARL_FAIL"):
    raise SystemExit(3)
pts = list(range(6000, frames + 6000, 6000))  # BenchMARL's last iteration passes the budget
json.dump({"frames": pts, "return": [p / 1e6 + seed for p in pts]}, open(out, "w"))
'''


def test_benchmarl_runs_are_kept_per_seed_and_read_back(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\n" + FAKE_BENCHMARL)
    fake.chmod(0o755)
    a = types.SimpleNamespace(benchmarl_python=str(fake), out=str(tmp_path / "out"), reuse=False, timeout_h=0.05)
    os.makedirs(a.out)
    x0, y0 = bse.run_benchmarl(0, 100_000, a)
    x1, y1 = bse.run_benchmarl(1, 100_000, a)
    assert x0[0] == 6000 and x0[-1] == 102_000 and np.array_equal(x0, x1) and np.allclose(y1 - y0, 1.0)
    at = bse.points_at(x0, y0, [100_000, 250_000], 50_000)  # iterations 54k .. 96k: the 50k env steps before 100k
    assert at[100_000] == pytest.approx(np.mean(np.arange(54_000, 96_001, 6000) / 1e6)) and np.isnan(at[250_000])
    monkeypatch.setenv("FAKE_BENCHMARL_FAIL", "1")
    a.reuse = True  # --reuse reads the kept copy, never runs BenchMARL again
    assert np.array_equal(bse.run_benchmarl(1, 100_000, a)[1], y1)
    with pytest.raises(subprocess.CalledProcessError):  # BenchMARL failing fails the benchmark
        bse.run_benchmarl(2, 100_000, a)


def test_benchmarl_curve_pairs_frames_and_returns_by_iteration(tmp_path):
    import benchmarl_mappo

    scalars = tmp_path / "mappo_navigation_mlp__x" / "mappo_navigation_mlp__x" / "scalars"
    scalars.mkdir(parents=True)
    (scalars / "counters_total_frames.csv").write_text("0,6000.0\n1,12000.0\n2,18000.0\n")
    # iteration 1 ended no episode: BenchMARL logs no return for it
    (scalars / "collection_agents_reward_episode_reward_mean.csv").write_text("0,-0.5\n2,0.25\n")
    assert benchmarl_mappo.curve(str(tmp_path), 3) == {"frames": [6000, 18000], "return": [-1.5, 0.75]}
    with pytest.raises(SystemExit, match="expected one"):
        benchmarl_mappo.scalars(str(tmp_path), "missing")


# JaxMARL's SMAX baselines: tools/reference/jaxmarl_smax.py loads <baselines>/MAPPO/mappo_rnn_smax.py and its config;
# the stand-in logs through wandb.log from a jitted scan as the baseline does
FAKE_JAXMARL = '''
import jax
wandb = None
def make_train(config):
    assert config["MAP_NAME"] == "2s3z" and config["WANDB_MODE"] == "disabled" and config["LR"] == 0.002
    n = config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"] // config["NUM_ENVS"]
    def train(rng):
        def update(u, _):
            def log(m):
                wandb.log({"env_step": m["u"] * config["NUM_ENVS"] * config["NUM_STEPS"], "win_rate": m["u"] / 10,
                           "returns": m["r"], "loss": 0.0})
            jax.experimental.io_callback(log, None, {"u": u, "r": jax.random.uniform(rng)})
            return u + 1, None
        return jax.lax.scan(update, 0, None, n)[0]
    return train
'''


def jaxmarl_args(base, tmp_path):
    """bench_sample_efficiency's options for running the fake baselines under ``base`` on 2s3z."""
    a = types.SimpleNamespace(jaxmarl_baselines=str(base), jaxmarl_python=sys.executable, smax_map="2s3z",
                              out=str(tmp_path / "out"), reuse=False, timeout_h=0.1)
    os.makedirs(a.out)
    return a


def test_jaxmarl_smax_baseline_is_run_and_read_per_seed(tmp_path):
    require_extra("jax", "jax")
    import jax

    base = tmp_path / "baselines"
    (base / "MAPPO" / "config").mkdir(parents=True)
    (base / "MAPPO" / "config" / "mappo_homogenous_rnn_smax.yaml").write_text(
        '"LR": 0.002\n"NUM_ENVS": 4\n"NUM_STEPS": 5\n"TOTAL_TIMESTEPS": 1e7\n"MAP_NAME": "2s3z"\n"SEED": 0\n')
    (base / "MAPPO" / "mappo_rnn_smax.py").write_text(FAKE_JAXMARL)
    a = jaxmarl_args(base, tmp_path)
    x, y = bse.run_jaxmarl("mappo", 7, 50, a)  # 50 env steps: 3 updates of 4 x 5
    assert x.tolist() == [20, 40, 60] and y == pytest.approx([0.0, 0.1, 0.2])
    kept = json.load(open(os.path.join(a.out, "jaxmarl_mappo-2s3z-s7.json")))
    assert kept["return"] == pytest.approx([float(jax.random.uniform(jax.random.PRNGKey(7)))] * 3)  # its seed
    (base / "MAPPO" / "mappo_rnn_smax.py").write_text("raise SystemExit(3)")
    a.reuse = True  # --reuse reads the kept copy
    assert np.array_equal(bse.run_jaxmarl("mappo", 7, 50, a)[1], y)
    with pytest.raises(subprocess.CalledProcessError):  # the baseline failing fails the benchmark
        bse.run_jaxmarl("mappo", 8, 50, a)
    assert bse.points_at(x, y, [40, 60], 40) == pytest.approx({40: 0.05, 60: 0.15})


# QLearning/qmix_rnn.py: make_train(config, env) with the env from its env_from_config, vmapped over its seeds; logs
# (only when W&B is not disabled) through a debug callback that, with WANDB_LOG_ALL_SEEDS, also names the seed by the
# first word of its key; env_step already counts the update's env steps
FAKE_QMIX = '''
import jax
wandb = None
def env_from_config(config):
    return ("env", config["MAP_NAME"]), "HeuristicEnemySMAX_" + config["MAP_NAME"]
def make_train(config, env):
    assert env == ("env", "2s3z") and config["WANDB_MODE"] != "disabled" and config["NUM_EPOCHS"] == 8
    n = config["TOTAL_TIMESTEPS"] // config["NUM_STEPS"] // config["NUM_ENVS"]
    def train(rng):
        original_seed = rng[0]
        def update(u, _):
            metrics = {"env_step": (u + 1) * config["NUM_ENVS"] * config["NUM_STEPS"], "returned_won_episode": u / 10,
                       "returned_episode_returns": jax.random.uniform(rng) + u, "test_returned_won_episode": u / 20,
                       "loss": 0.0}
            def callback(metrics, original_seed):
                if config.get("WANDB_LOG_ALL_SEEDS", False):
                    metrics.update({f"rng{int(original_seed)}/{k}": v for k, v in metrics.items()})
                wandb.log(metrics)
            jax.debug.callback(callback, metrics, original_seed)
            return u + 1, None
        return jax.lax.scan(update, 0, None, n)[0]
    return train
'''


def fake_qmix(tmp_path):
    base = tmp_path / "baselines"
    (base / "QLearning" / "config" / "alg").mkdir(parents=True)
    (base / "QLearning" / "config" / "config.yaml").write_text('"NUM_SEEDS": 1\n"SEED": 0\n"WANDB_MODE": "disabled"\n')
    (base / "QLearning" / "config" / "alg" / "ql_rnn_smax.yaml").write_text(
        '"NUM_ENVS": 4\n"NUM_STEPS": 5\n"NUM_EPOCHS": 8\n"TOTAL_TIMESTEPS": 1e7\n"MAP_NAME": "3s_vs_5z"\n')
    (base / "QLearning" / "qmix_rnn.py").write_text(FAKE_QMIX)
    return base


def test_jaxmarl_qmix_baseline_merges_its_configs_and_reads_env_steps_as_logged(tmp_path):
    require_extra("jax", "jax")
    import jax

    a = jaxmarl_args(fake_qmix(tmp_path), tmp_path)
    x, y = bse.run_jaxmarl("qmix", 3, 45, a)  # 45 env steps: 3 updates of 4 x 5
    assert x.tolist() == [20, 40, 60] and y == pytest.approx([0.0, 0.1, 0.2])
    kept = json.load(open(os.path.join(a.out, "jaxmarl_qmix-2s3z-s3.json")))
    # its key: the first of split(PRNGKey(3), NUM_SEEDS), as its main() trains
    first = float(jax.random.uniform(jax.random.split(jax.random.PRNGKey(3), 1)[0]))
    assert kept["return"] == pytest.approx([first, first + 1, first + 2])
    assert kept["test_win_rate"] == pytest.approx([0, .05, .1])
    assert bse.run_jaxmarl("qmix", 3, 45, a, key="test_win_rate")[1] == pytest.approx([0, .05, .1])


def test_jaxmarl_qmix_seeds_vmapped_in_one_program_give_each_seeds_own_curve(tmp_path):
    require_extra("jax", "jax")
    a = jaxmarl_args(fake_qmix(tmp_path), tmp_path)
    script = os.path.join(bse.ROOT, "tools", "reference", "jaxmarl_smax.py")
    out = os.path.join(a.out, "both-s{seed}.json")
    r = subprocess.run([sys.executable, script, a.jaxmarl_baselines, "qmix", "2s3z", "45", "3,4", out],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(out.format(seed=3) + ".part")  # the curve so far, kept only while it runs
    for seed in (3, 4):
        bse.run_jaxmarl("qmix", seed, 45, a)  # the same seed alone
        alone = json.load(open(os.path.join(a.out, f"jaxmarl_qmix-2s3z-s{seed}.json")))
        both = json.load(open(out.format(seed=seed)))
        assert both.keys() == alone.keys() and all(both[k] == pytest.approx(alone[k]) for k in alone)
    assert json.load(open(out.format(seed=3)))["return"] != json.load(open(out.format(seed=4)))["return"]
    r = subprocess.run([sys.executable, script, a.jaxmarl_baselines, "qmix", "2s3z", "45", "3,4", "one.json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "OUT must name {seed}" in r.stderr
    r = subprocess.run([sys.executable, script, a.jaxmarl_baselines, "qmix", "2s3z", "45", "3,3", out],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "each seed once" in r.stderr


def test_windows_by_env_steps_average_the_episodes_that_ended_in_the_span():
    steps = np.arange(10, 1001, 10, dtype=float)  # an episode ends every 10 env steps
    won = (steps > 500).astype(float)
    _, _, by_episodes = bse.windowed(steps, won, 20, [500, 1000])
    _, _, by_steps = bse.windowed(steps, won, 20, [500, 600, 650, 1000], window_steps=100)
    assert by_episodes == {500: 0.0, 1000: 1.0}
    # episodes ending in (500, 600]: all won, where the last 20 episodes (410 .. 600) are half lost
    assert by_steps[600] == 1.0 and bse.windowed(steps, won, 20, [600])[2][600] == pytest.approx(0.5)
    assert by_steps[650] == 1.0 and by_steps[500] == 0.0 and by_steps[1000] == 1.0


def test_smax_arms_are_known_by_config_or_override():
    assert bse.is_smax(bse.ARMS["smax_mappo"]) and not bse.is_smax(bse.ARMS["mappo"])
    assert bse.is_smax(("qmix_spread.yaml", 3, ["env.name=jaxmarl:HeuristicEnemySMAX"]))
    assert not bse.is_smax(("smax_mappo.yaml", 2, ["env.name=jaxmarl:MPE_simple_spread_v3"]))


def write_run(run_dir, steps, checkpoint, rate=1000.0):
    """A run directory as hpcmarl writes it: an episode and a metrics row every 1,000 env steps up to ``steps`` (at
    ``rate`` env steps/s, the training FLOPs 1 per env step), and a checkpoint if asked."""
    from hpcmarl.storage.checkpoints import save_checkpoint
    from hpcmarl.storage.writers import RunWriter

    os.makedirs(run_dir, exist_ok=True)
    w = RunWriter(os.path.join(run_dir, "run.h5"), {}, ["agent"])
    k = steps // 1000
    w.add_episodes({"actor": np.zeros(k, "i4"), "env": np.zeros(k, "i4"), "length": np.full(k, 25, "i4"),
                    "policy_version": np.zeros(k, "i8"), "update": np.zeros(k, "i8"),
                    "env_steps": np.arange(1, k + 1, dtype="i8") * 1000, "wall_time": np.zeros(k),
                    "won": np.full(k, np.nan), "return/agent": np.full(k, -50.0)})
    for n in range(1000, steps + 1, 1000):
        w.log_metrics({"env_steps": float(n), "wall_time": n / rate, "update": n / 1000, "flops/train_total": n})
    w.close()
    if checkpoint:
        save_checkpoint(os.path.join(run_dir, "checkpoints"), 1, {"x": np.zeros(1)}, {"env_steps": steps}, keep=2)


def test_reuse_resumes_a_run_cut_short_and_reads_a_finished_one(tmp_path, monkeypatch):
    """--reuse: a run that reached the budget is read (up to the update where a run to the budget stops), one cut
    short resumes from its checkpoint (no --fresh), one without a checkpoint starts fresh; without --reuse every run
    starts fresh."""
    launched = []

    def fake_launch(ranks, config, argv, timeout, log_path):
        launched.append(argv)
        budget = int(next(x for x in argv if x.startswith("train.total_env_steps=")).split("=")[1])
        run_dir = next(x for x in argv if x.startswith("run_dir=")).split("=", 1)[1]
        if "--fresh" in argv:
            shutil.rmtree(run_dir, ignore_errors=True)
        write_run(run_dir, budget, checkpoint=True)
        return 1.0

    monkeypatch.setattr(bse, "launch", fake_launch)
    a = types.SimpleNamespace(out=str(tmp_path), reuse=True, timeout_h=0.1, set=[], smax_map="3m")
    arm = bse.ARMS["mappo"]
    write_run(str(tmp_path / "done-s0"), 100_000, checkpoint=True)
    write_run(str(tmp_path / "short-s0"), 40_000, checkpoint=True)
    write_run(str(tmp_path / "early-s0"), 5_000, checkpoint=False)

    steps, score, flops = bse.run_arm("done", arm, 0, 100_000, a)
    assert launched == [] and steps[-1] == 100_000 and len(steps) == 100 and set(score) == {-50.0}
    assert flops == 100_000
    steps, _, flops = bse.run_arm("done", arm, 0, 50_500, a)  # read up to where a run to 50,500 stops
    assert launched == [] and steps[-1] == 51_000 and len(steps) == 51 and flops == 51_000
    bse.run_arm("short", arm, 0, 100_000, a)
    assert "--fresh" not in launched[-1] and "run_dir=" + str(tmp_path / "short-s0") in launched[-1]
    bse.run_arm("early", arm, 0, 100_000, a)
    assert "--fresh" in launched[-1]
    a.reuse = False
    bse.run_arm("done", arm, 0, 100_000, a)
    assert "--fresh" in launched[-1] and len(launched) == 3


def test_greedy_scores_play_the_checkpoint_where_a_run_to_the_budget_stops(tmp_path, monkeypatch, capsys):
    """--greedy-episodes: the kept checkpoint at the budget plays greedily (win rate, or the return summed over
    groups where episodes have no outcome); no checkpoint there: NaN, said."""
    from hpcmarl.analysis import evaluate

    played = []

    def fake_evaluate(ckpt, episodes, seed, greedy, num_envs):
        played.append((os.path.basename(ckpt), episodes, greedy, num_envs))
        return {"win_rate": float("nan") if "nowin" in ckpt else 0.75,
                "groups": {"a": {"return_mean": -20.0}, "b": {"return_mean": -5.0}}}

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    a = types.SimpleNamespace(out=str(tmp_path), smax_map="3m", greedy_episodes=512)
    arm = bse.ARMS["mappo"]
    write_run(str(tmp_path / "done-s0"), 100_000, checkpoint=True)
    assert bse.greedy_score("done", arm, 0, 100_000, a) == 0.75
    assert played == [("ckpt-000000001.h5", 512, True, 512)]
    write_run(str(tmp_path / "nowin-s0"), 100_000, checkpoint=True)
    assert bse.greedy_score("nowin", arm, 0, 100_000, a) == -25.0
    # a run to 50,500 stops at 51,000: the run's only checkpoint is at 100,000
    assert np.isnan(bse.greedy_score("done", arm, 0, 50_500, a)) and len(played) == 2
    assert "no kept checkpoint at 50,500 env steps" in capsys.readouterr().out


def test_the_estimate_times_what_is_left_from_a_short_run(tmp_path, monkeypatch, capsys):
    """--estimate: the short run's rate (metrics after its first row) and start-up (the rest of its wall time) times
    every seed's run to the largest budget; with --reuse only what is left of each."""
    def fake_launch(ranks, config, argv, timeout, log_path):
        assert "train.total_env_steps=20000" in argv and "seed=3" in argv
        write_run(next(x for x in argv if x.startswith("run_dir=")).split("=", 1)[1], 20_000, False, rate=2000.0)
        return 20.0  # 10 s of start-up + 20,000 env steps at 2,000 env steps/s

    monkeypatch.setattr(bse, "launch", fake_launch)
    a = types.SimpleNamespace(out=str(tmp_path), reuse=False, timeout_h=0.1, set=[], smax_map="3m", estimate=20_000)
    arms = [("mappo", bse.ARMS["mappo"])]
    assert bse.estimate(arms, [3, 4], 100_000, a) == pytest.approx(2 * (10 + 50))
    assert "2,000 env steps/s after 10 s of start-up" in capsys.readouterr().out
    write_run(str(tmp_path / "mappo-s3"), 100_000, True)
    write_run(str(tmp_path / "mappo-s4"), 40_000, True)
    a.reuse = True  # seed 3 is done, seed 4 has 60,000 env steps left
    assert bse.estimate(arms, [3, 4], 100_000, a) == pytest.approx(10 + 30)
