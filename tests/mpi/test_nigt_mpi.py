"""The gradient flow (NIGT) under mpirun, each launch with a hard timeout."""
import glob
import json
import os

import h5py
import numpy as np
import pytest
import torch

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

SPREAD = ["configs/nigt_spread.yaml", "algo.hidden=16", "output.progress_s=1", "runtime.timeout_s=60",
          "learner.backend=mpi", "algo.batch=6", "algo.init_batch=6", "output.checkpoint_every=5"]


def metrics(run):
    from hpcmarl.storage import Run

    m = Run(run).metrics()
    return m, {k[len("grads/"):]: v for k, v in m.items() if k.startswith("grads/")}


def greedy_actions(run):
    """The greedy (tanh-squashed mean) action on target_v0 of each checkpoint's policy, oldest first."""
    from hpcmarl import trust
    from hpcmarl.analysis.evaluate import load_policy
    from hpcmarl.models import squash

    out = []
    for ckpt in sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5"))):
        with trust.allowing(["hpcmarl.testing"]):  # the checkpoint's config names the test envs' module as a plugin
            _, policy = load_policy(ckpt)
        g = policy.spec.groups[0]
        with torch.no_grad():
            mu = policy.policies[g.name].net(torch.ones(1, 1)).numpy()
        out.append(float(squash(g, mu)[0, 0]))
    return np.array(out)


def test_heterogeneous_environments_malenia_vs_pooled(tmp_path):
    """docs/algorithms/nigt.md#heterogeneous-environments on real ranks: actor 0 is rewarded for a = +1,
    actor 1 (20x the delay) for a = -1. Malenia weights both actors' means 1/2 and ends near the equal-weight
    optimum a = 0 with the better average objective; pooled Rennala aggregation takes most gradients from the
    fast actor and ends near a speed-weighted optimum on its side."""
    from hpcmarl.storage import Run

    actions, objective, fast, greedys = {}, {}, {}, {}
    for agg in ("malenia", "rennala"):
        run = str(tmp_path / agg)
        p = mpirun(3, ["train", "configs/nigt_hetero.yaml", f"run_dir={run}", f"algo.aggregation={agg}",
                       "learner.backend=mpi", "output.checkpoint_every=10",
                       "output.keep_checkpoints=30"], timeout=240)
        assert p.returncode == 0, p.stderr[-3000:]
        greedy = greedy_actions(run)  # rounds 10, 20, ..., 200
        assert len(greedy) >= 20, greedy
        greedys[agg] = np.round(greedy, 2).tolist()
        actions[agg] = float(greedy[len(greedy) // 2:].mean())  # the iterate average over the last half
        _, grads = metrics(run)
        acc = np.array([grads["actor-00000/accepted"][-1], grads["actor-00001/accepted"][-1]])
        if agg == "malenia":  # every actor contributes to every round
            assert acc[1] >= 200, acc
        else:  # the fast actor supplies most of the pooled gradients
            assert acc[0] > 2 * acc[1], acc
        eps = Run(run).episodes()  # per-actor mean return over the last third of the run
        k = len(eps["actor"]) * 2 // 3
        a, r = eps["actor"][k:], eps["return/agent"][k:]
        per_actor = [float(r[a == i].mean()) for i in (0, 1)]
        objective[agg], fast[agg] = float(np.mean(per_actor)), per_actor[0]
    print("greedy actions per checkpoint:", greedys)
    print("greedy actions (mean of the last half's checkpoints):", actions, "average objective:", objective)
    # one iterate of a fixed-length-step method jitters around its optimum (a single final point fell to
    # -0.53 in one CI run), so the bounds hold the average of the last 10 checkpoints' greedy actions;
    # the objectives are averages over ~2,000 episodes
    assert abs(actions["malenia"]) < 0.5, actions
    assert actions["rennala"] > 0.5, actions
    assert actions["rennala"] - actions["malenia"] > 0.5, actions
    assert objective["malenia"] > objective["rennala"], objective  # Malenia optimises the equal-weight average
    assert fast["rennala"] > fast["malenia"], fast  # pooling favours the fast actor's objective


@pytest.mark.parametrize("kind", ["rennala", "malenia", "allreduce"])
def test_two_learners_agree_and_record_rounds(tmp_path, kind):
    """2 learners + 2 actors: Rennala takes exactly M gradients per round (the one-sided counter),
    Malenia at least one per actor, synchronous allreduce M/n per actor; the learners' parameters
    are compared every round (the run aborts otherwise) and at checkpoints; run.h5 records rounds,
    accepted/dropped gradients per actor and round times, and inspect shows them."""
    run = str(tmp_path / kind)
    p = mpirun(4, ["train"] + SPREAD + [f"run_dir={run}", "topology.learners=2", f"algo.aggregation={kind}",
                                        "train.max_updates=12", "learner.backend=horovod"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    m, grads = metrics(run)
    assert m["round"].tolist() == list(range(12))
    per_round = m["grads/accepted"]
    if kind == "rennala":
        assert per_round.tolist() == [6] * 12
    elif kind == "allreduce":
        assert per_round.tolist() == [6] * 12
        assert grads["actor-00000/accepted"][-1] == grads["actor-00001/accepted"][-1] == 36
    else:
        assert (per_round >= 6).all()
    assert (m["round_time"] > 0).all()
    total = grads["actor-00000/accepted"][-1] + grads["actor-00001/accepted"][-1]
    assert total == per_round.sum()
    with h5py.File(sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1], "r") as f:
        sums = f.attrs["learner_param_checksums"]
    sums = json.loads(sums) if isinstance(sums, str) else list(sums)
    assert len(sums) == 2 and sums[0] == sums[1]
    out = hpcmarl(["inspect", run])
    assert out.returncode == 0, out.stderr
    assert "rounds" in out.stdout and "accepted" in out.stdout, out.stdout


@pytest.mark.parametrize("kind", ["rennala", "malenia"])
def test_a_slow_actor_is_not_taken_for_a_lost_one(tmp_path, kind):
    """Actor 1 is 100x slower than actor 0: a trajectory of it (25 steps of 0.5 s) outlasts runtime.timeout_s (4 s).
    Rennala overtakes every one of them (the fast actor fills each round), Malenia waits for one per round; both
    keep training, because the slow actor sends signs of life between its gradients, and its abandoned
    trajectories are counted."""
    run = str(tmp_path / kind)
    rounds = 16 if kind == "rennala" else 1
    p = mpirun(3, ["train"] + SPREAD + [f"run_dir={run}", f"algo.aggregation={kind}", "runtime.timeout_s=4",
                                        "actors.step_delay_s=0.005", "actors.delay=[1,100]",
                                        f"train.max_updates={rounds}", "output.checkpoint_every=1000"], timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    m, grads = metrics(run)
    assert m["round"].tolist() == list(range(rounds))
    if kind == "rennala":
        assert grads["actor-00001/accepted"][-1] == 0, grads
        assert m["round_time"].sum() > 8, m["round_time"]  # the run outlasted runtime.timeout_s twice
        assert m["grads/abandoned"].sum() >= 1, m["grads/abandoned"]
    else:
        assert grads["actor-00001/accepted"][-1] >= 1, grads
        assert m["round_time"][0] > 8, m["round_time"]


def test_serial_and_resume(tmp_path):
    """One rank (the learner computes its own gradients), then a resumed run continues the rounds."""
    run = str(tmp_path / "serial")
    p = hpcmarl(["train"] + SPREAD + [f"run_dir={run}", "train.max_updates=5"], timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    p = hpcmarl(["train"] + SPREAD + [f"run_dir={run}", "train.max_updates=9"], timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from ckpt-000000005.h5, update 5" in p.stdout
    m, _ = metrics(run)
    assert m["round"].tolist() == list(range(9))


def test_failing_actor_ends_the_job(tmp_path):
    p = mpirun(3, ["train"] + SPREAD + [f"run_dir={tmp_path / 'f'}", "train.max_updates=50"],
               env={"HPCMARL_INJECT_FAULT": "2:raise:3"}, timeout=120)
    assert p.returncode != 0
    assert "injected fault on rank 2" in p.stderr


def test_continuous_actions_serial(tmp_path):
    """MPE with continuous actions: Gaussian policy with softplus std, tanh-squashed into the box."""
    run = str(tmp_path / "cont")
    p = hpcmarl(["train"] + SPREAD + [f"run_dir={run}", "train.max_updates=3", "env.kwargs.continuous_actions=true",
                                      "algo.batch=2", "algo.init_batch=2"], timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    m, _ = metrics(run)
    assert m["grads/accepted"].tolist() == [2, 2, 2]
    with h5py.File(sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1], "r") as f:
        assert "model/policies.agent.std_raw" in f


def test_a_plugin_aggregation_rule_across_two_learners(tmp_path):
    """examples/capped_rule.py (docs/extending/aggregation.md), listed in ``plugins``: 2 learners share its round
    counters, its quota stops each actor at ceil(M / 2) although actor 1 is 4x slower, so every round takes exactly 3
    gradients from each actor (Rennala would take more from the fast one); nothing under hpcmarl/ names it."""
    run = str(tmp_path / "capped")
    p = mpirun(4, ["train"] + SPREAD + [f"run_dir={run}", "topology.learners=2", "plugins=[examples.capped_rule]",
                                        "algo.aggregation=capped", "actors.delay=[1, 4]", "actors.step_delay_s=0.002",
                                        "train.max_updates=8"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "capped aggregation" in p.stdout, p.stdout[-2000:]
    m, grads = metrics(run)
    assert m["round"].tolist() == list(range(8)) and m["grads/accepted"].tolist() == [6] * 8
    for actor in ("actor-00000", "actor-00001"):
        assert np.diff(grads[f"{actor}/accepted"], prepend=0).tolist() == [3] * 8, grads
