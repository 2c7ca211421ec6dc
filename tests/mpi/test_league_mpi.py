"""League mode under mpirun (learner groups + actors + the league rank), each launch with a hard timeout."""
import glob
import json
import os

import numpy as np
import pytest

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

C4 = ["configs/league_c4.yaml", "env.num_envs=4", "algo.unroll_length=8", "algo.hidden=16", "algo.epochs=1",
      "algo.minibatches=1", "league.groups.0.snapshot_every=4", "league.eval_games=4", "league.eval_pool=2",
      "league.pool_baselines=[]", "output.checkpoint_every=10", "output.progress_s=1", "runtime.timeout_s=60",
      "train.max_wall_s=0"]


def tables(run):
    from hpcmarl.storage import Run

    r = Run(run)
    return {t: r._table(f"league/{t}") for t in ("pool", "matches", "ratings", "eval")}, r.episodes()


def test_connect_four_league_adds_snapshots_writes_ratings_and_resumes(tmp_path):
    """1 learner group + 2 actors + the league rank on connect_four_v3: snapshots land in the pool (HDF5 files,
    no pickle), reported games and evaluation games reach the payoff table and ratings in run.h5 /league, the
    checkpoint holds the league state and the policy; `league` and `match` read them; a resumed run keeps
    the pool and goes on numbering it."""
    run = str(tmp_path / "c4")
    p = mpirun(4, ["train"] + C4 + [f"run_dir={run}", "train.max_updates=20"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    t, eps = tables(run)
    pool = sorted(glob.glob(os.path.join(run, "pool", "main-v*.h5")))
    assert len(pool) == 5 and list(t["pool"]["version"]) == [1, 5, 9, 13, 17]  # first update, then every 4
    assert list(t["pool"]["member"]) == [0, 1, 2, 3, 4]
    m = t["matches"]
    played = m["wins"] + m["draws"] + m["losses"]
    assert played.sum() > 50 and set(m["member"]) <= {0, 1, 2, 3, 4} and set(m["group"]) == {0}
    ev = t["eval"]
    assert np.all(ev["wins"] + ev["draws"] + ev["losses"] == 4)
    assert {-100, -101} <= set(ev["b"]) and set(ev["a"]) <= {0, 1, 2, 3, 4}
    r = t["ratings"]
    assert {-1, 0, -100, -101} <= set(r["member"]) and np.all(np.diff(r["update"]) >= 0)
    live = r["member"] == -1
    assert r["games"][live][-1] == pytest.approx(played.sum())  # every reported non-self-play game was rated
    assert np.all(np.isfinite(eps["return/main"])) and len(eps["return/main"]) > 100
    from hpcmarl.storage import load_checkpoint

    ckpt = sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1]
    arrays, attrs = load_checkpoint(ckpt)
    assert arrays["league/members"].shape == (5, 5) and "policy/main" in arrays
    assert json.loads(attrs["policy_meta"])["main"]["obs_dim"] == 84
    out = hpcmarl(["league", run])
    assert out.returncode == 0 and "main(live)" in out.stdout and "lookahead" in out.stdout, out.stderr
    assert "payoff" in out.stdout and "main-v17" in out.stdout
    mt = hpcmarl(["match", ckpt, pool[0], "--episodes", "6", "--json"])
    assert mt.returncode == 0, mt.stderr
    res = json.loads(mt.stdout)
    assert res["wins"] + res["draws"] + res["losses"] == 6 and res["env"] == "connect_four_v3"
    mt = hpcmarl(["match", run, "random", "--episodes", "4", "--mixture", "meta_nash", "--json"])  # win-rate meta-game
    assert mt.returncode == 0, mt.stderr
    assert json.loads(mt.stdout)["mixture"] == "meta_nash"
    # resume: the pool and the ratings come back from the checkpoint, new snapshots get new ids
    p = mpirun(4, ["train"] + C4 + [f"run_dir={run}", "train.max_updates=26"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    t2, _ = tables(run)
    assert list(t2["pool"]["member"]) == [0, 1, 2, 3, 4, 5, 6] and list(t2["pool"]["version"][-2:]) == [21, 25]
    assert t2["ratings"]["games"][t2["ratings"]["member"] == -1][-1] > r["games"][live][-1]


def test_simple_tag_two_learner_groups(tmp_path):
    """Asymmetric roles: predators and prey are two policies trained by two learner groups (the predator group
    with 2 learners and Horovod inside the group, whose parameters must stay identical); each group's actors
    play the other lineage's snapshots; both groups' returns and ratings are written over time."""
    run = str(tmp_path / "tag")
    groups = ("[{name: predator, policy_group: adversary, learners: 2, actors: 2, snapshot_every: 3}, "
              "{name: prey, policy_group: agent, snapshot_every: 3}]")
    p = mpirun(7, ["train", "configs/league_tag.yaml", f"run_dir={run}", f"league.groups={groups}", "env.num_envs=2",
                   "algo.hidden=16", "algo.epochs=1", "train.max_updates=7", "train.max_wall_s=0",
                   "output.checkpoint_every=3", "runtime.timeout_s=60", "learner.backend=horovod",
                   "league.eval_games=3"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rank    6: league" in p.stdout
    t, eps = tables(run)
    assert sorted(t["pool"]["group"]) == [0, 0, 0, 1, 1, 1]
    pred, prey = eps["return/predator"], eps["return/prey"]
    assert np.isfinite(pred).sum() > 0 and np.isfinite(prey).sum() > 0
    assert np.all(np.isfinite(pred) != np.isfinite(prey))  # an episode row belongs to one group
    assert {-1, -2} <= set(t["ratings"]["member"])
    ev = t["eval"]  # evaluation episodes of simultaneous games: snapshots against random and the other side
    assert np.all(ev["wins"] + ev["draws"] + ev["losses"] == 3) and -100 in set(ev["b"])
    grp = dict(zip(t["pool"]["member"], t["pool"]["group"]))
    assert any(b >= 0 and grp[a] != grp[b] for a, b in zip(ev["a"], ev["b"]))
    from hpcmarl.storage import Run, load_checkpoint

    m = Run(run).metrics()
    assert np.isfinite(m["return_window/predator"][-1]) and np.isfinite(m["return_window/prey"][-1])
    assert m["env_steps"][-1] == 7 * 3 * 2 * 25  # every group's actors are counted: 3 actors x 2 envs x T=25
    assert np.all(np.isfinite(m["predator/entropy"])) and np.all(np.isfinite(m["prey/entropy"]))
    arrays, attrs = load_checkpoint(sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1])
    assert {"policy/predator", "policy/prey"} <= set(arrays)
    sums = attrs["learner_param_checksums"]
    sums = json.loads(sums) if isinstance(sums, str) else list(sums)
    assert len(sums) == 3 and sums[0] == sums[1] != sums[2]  # learners 0, 1: predator group; 2: prey


@pytest.mark.parametrize("rank", [1, 3])
def test_a_failing_actor_or_league_rank_ends_the_job(tmp_path, rank):
    """An exception on an actor (rank 1) or on the league rank (rank 3) aborts the whole job, non-zero."""
    run = str(tmp_path / "fail")
    p = mpirun(4, ["train"] + C4 + [f"run_dir={run}", "train.max_updates=50"], timeout=180,
               env={"HPCMARL_INJECT_FAULT": f"{rank}:raise:3"})
    assert p.returncode != 0
    assert f"rank {rank}" in p.stderr and "injected fault" in p.stderr


def test_cooperative_league_with_pool_partners(tmp_path):
    """simple_spread_v3: the trained policy takes one seat, its partners come from the pool; the league records
    team returns per partner (cross-play) instead of ratings."""
    run = str(tmp_path / "spread")
    p = mpirun(3, ["train", "configs/league_spread.yaml", f"run_dir={run}", "env.num_envs=2", "algo.hidden=16",
                   "algo.epochs=1", "league.groups.0.snapshot_every=2", "league.groups.0.self_play=0",
                   "league.eval_games=2", "train.max_updates=6", "runtime.timeout_s=60"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    t, eps = tables(run)
    m = t["matches"]
    games = m["wins"] + m["draws"] + m["losses"]
    assert games.sum() > 0 and np.all(m["draws"] == games)  # partners neither win nor lose
    assert np.all(m["return_sum"] < 0) and len(t["ratings"]["member"]) == 0
    assert len(t["eval"]["a"]) > 0 and np.all(t["eval"]["return_sum"] < 0)
    out = hpcmarl(["league", run])
    assert out.returncode == 0 and "cross-play" in out.stdout and "ratings" not in out.stdout, out.stdout


def test_two_team_battle_league(tmp_path):
    """battle_v4 (2 vs 2 on the 12x12 map): one policy plays a team per episode (per_team), the other team comes
    from the pool or the scripted charge player; games are decided by survivors; snapshots are evaluated
    against random and charge."""
    run = str(tmp_path / "battle")
    p = mpirun(4, ["train", "configs/league_battle.yaml", f"run_dir={run}", "env.kwargs={map_size: 12, max_cycles: 40}",
                   "env.num_envs=2", "algo.hidden=16", "algo.epochs=1", "algo.unroll_length=10",
                   "league.groups.0.snapshot_every=3", "league.eval_games=2", "league.pool_baselines=[charge]",
                   "train.max_updates=9", "runtime.timeout_s=60"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    t, eps = tables(run)
    assert list(t["pool"]["version"]) == [1, 4, 7]
    m = t["matches"]
    assert -102 in set(m["member"])  # the charge player was a training opponent
    ev = t["eval"]
    assert {-100, -102} <= set(ev["b"]) and np.all(ev["wins"] + ev["draws"] + ev["losses"] == 2)
    charge = ev["b"] == -102
    assert ev["losses"][charge].sum() > ev["wins"][charge].sum()  # an untrained team is no match for it
    assert {-1, -102} <= set(t["ratings"]["member"])
    out = hpcmarl(["league", run])
    assert out.returncode == 0 and "charge" in out.stdout and "main-v7" in out.stdout, out.stdout
    ckpt = sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1]
    snap = os.path.join(run, "pool", "main-v0000001.h5")
    res = {}
    for a, b in ((ckpt, "charge"), ("charge", ckpt), (ckpt, snap)):  # the game as trained: 12x12 map, 40 steps
        mt = hpcmarl(["match", a, b, "--episodes", "4", "--opening", "2", "--json"])
        assert mt.returncode == 0, mt.stderr
        res[a, b] = json.loads(mt.stdout)
        assert res[a, b]["env"] == "battle_v4" and res[a, b]["wins"] + res[a, b]["draws"] + res[a, b]["losses"] == 4
    assert res[ckpt, "charge"]["wins"] == res["charge", ckpt]["losses"]  # the same games, seen from either side
    assert res[ckpt, "charge"]["losses"] > res[ckpt, "charge"]["wins"]


def test_kuhn_poker_psro_league_measures_exploitability_and_resumes(tmp_path):
    """Kuhn poker, PSRO-style: the meta-Nash matchmaker over exact payoffs, a 2-learner group that restarts its
    policy after every snapshot (on both learners: equal checksums; the checkpoint right after a restart holds the
    initial weights), NashConv rows in run.h5 /league/exploitability, `exploitability` and `plot --metric
    exploitability` read the run, and a resumed run keeps the exact payoffs."""
    from hpcmarl.algos import base as algos
    from hpcmarl.config import load_config
    from hpcmarl.envs import build_spec, make_env
    from hpcmarl.league.seats import trained_spec
    from hpcmarl.storage import Run, load_checkpoint

    run = str(tmp_path / "kuhn")
    groups = ("[{name: main, learners: 2, actors: 2, strategy: meta_nash, snapshot_every: 3, restart: true, "
              "self_play: 0}]")
    args = ["configs/league_kuhn.yaml", f"run_dir={run}", f"league.groups={groups}", "env.num_envs=8",
            "algo.unroll_length=4", "algo.hidden=16", "output.checkpoint_every=100", "runtime.timeout_s=60",
            "league.eval_games=4", "train.max_wall_s=0"]
    # snapshots after updates 1 and 4; each is followed by one more update, then the restart (after updates 2, 5)
    p = mpirun(5, ["train"] + args + ["train.max_updates=5"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1]
    arrays, attrs = load_checkpoint(ckpt)
    sums = attrs["learner_param_checksums"]
    sums = json.loads(sums) if isinstance(sums, str) else list(sums)
    assert len(sums) == 2 and sums[0] == sums[1]
    cfg = load_config(args[0], args[1:])
    env = make_env("kuhn_poker")
    spec = trained_spec(build_spec(env, "kuhn_poker", None), "player", "main", cfg.league.seats)
    fresh = algos.get("ippo").make_learner(spec, cfg.algo, "cpu", seed=0, init_seed=cfg.seed)
    assert np.array_equal(arrays["policy/main"], fresh.policy_flat())  # restarted after update 5
    snap = sorted(glob.glob(os.path.join(run, "pool", "main-v*.h5")))
    assert len(snap) == 2
    t = Run(run)._table("league/exploitability")
    assert 1 <= len(t["member"]) <= 2 and t["member"][0] == 0
    for k in ("latest", "uniform", "meta_nash"):
        assert np.all((t[k] > 0) & (t[k] < 1.5))  # 0 at a Nash equilibrium, 0.917 for uniform random play
    out = hpcmarl(["exploitability", run, "--json"])
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["members"] == 2 and r["latest_from"] == os.path.basename(ckpt)
    assert 0 < r["uniform"] < 1.5 and 0 < r["meta_nash"] < 1.5 and 0 < r["latest"] < 1.5
    png = str(tmp_path / "x.png")
    out = hpcmarl(["plot", run, "-o", png, "--metric", "exploitability"])
    assert out.returncode == 0 and os.path.getsize(png) > 1000, out.stderr
    out = hpcmarl(["match", run, "random", "--episodes", "20", "--json"])  # the pool's meta-Nash mixture plays
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["mixture"] == "meta_nash" and r["wins"] + r["draws"] + r["losses"] == 20
    p = mpirun(5, ["train"] + args + ["train.max_updates=9"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    arrays, _ = load_checkpoint(sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1])
    assert len(glob.glob(os.path.join(run, "pool", "main-v*.h5"))) == 3  # + the snapshot after update 7
    assert {0, 1} <= set(arrays["league/measured"].tolist())
    assert arrays["league/exact"].shape[0] >= 2  # (0, 1) and (1, 0) at least
