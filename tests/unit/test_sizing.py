"""The sizing model: its event engine, predictions checked against closed forms, the node profile, the CLI."""
import json
import os

import pytest

from hpcmarl.config import load_config
from hpcmarl.sizing import ASYNC, SYNC, Machine, Node, Profile, Sim, measure, predict, ring_allreduce_s

from launch import ROOT, hpcmarl


def profile(**kw):
    base = dict(env="e", algo="a", flow=SYNC, steps_per_unroll=400, collect_s=0.1, collect_cv=0.0, env_s=0.09,
                infer_s=0.01, update_fixed_s=0.02, update_per_unroll_s=0.01, overhead_s=0.0, grad_steps=1,
                unroll_bytes=1000, weight_bytes=1000, grad_bytes=1000)
    base.update(kw)
    return Profile(**base)


FAST = dict(shm_bw=1e15, shm_latency_s=0.0, net_bw=1e15, net_latency_s=0.0, allreduce_call_s=0.0, poll_s=0.0)


def test_processor_sharing():
    """k jobs on c cores each run at min(1, c/k): 3 unit jobs on 2 cores end together at 1.5 s."""
    for cores, jobs, end in ((1, 2, 2.0), (2, 2, 1.0), (2, 3, 1.5), (4, 1, 1.0)):
        sim, done = Sim(), []
        node = Node(sim, cores)

        def job():
            yield node.compute(1.0)
            done.append(sim.now)
        for _ in range(jobs):
            sim.start(job())
        sim.run(100)
        assert done == pytest.approx([end] * jobs)
    sim, done = Sim(), []  # a job that arrives later: the first runs alone, then both share one core
    node = Node(sim, 1)

    def late(t0, work):
        yield lambda s, k: s.at(t0, k)  # a request: resume at t0
        yield node.compute(work)
        done.append(round(sim.now, 9))
    sim.start(late(0.0, 1.0))
    sim.start(late(0.5, 1.0))
    sim.run(100)
    assert done == [1.5, 2.0]


def test_sync_one_actor_matches_closed_form():
    """One learner, one actor, one core each, free messages: a round is collect + update, nothing overlaps."""
    p = profile()
    got = predict(p, Machine(cores_per_node=2, **FAST), actors=1, learners=1)
    assert got.env_steps_per_s == pytest.approx(400 / (0.1 + 0.03), rel=1e-6)
    assert got.lag_mean == 0
    # on one core the same; with two actors on one core collecting shares it: 2 x 400 steps per (0.2 + 0.04)
    one = predict(p, Machine(cores_per_node=1, **FAST), actors=1, learners=1)
    assert one.env_steps_per_s == pytest.approx(got.env_steps_per_s, rel=1e-6)
    two = predict(p, Machine(cores_per_node=1, **FAST), actors=2, learners=1)
    assert two.env_steps_per_s == pytest.approx(800 / (0.2 + 0.04), rel=1e-6)
    assert "CPU cores" in two.bottleneck


def test_sync_overlap_hides_the_update():
    """actors.overlap: an actor collects its next unroll during the update; with collect > update the round is
    the collect time alone, and every unroll is one version old."""
    p = profile(overlap=True)
    got = predict(p, Machine(cores_per_node=8, **FAST), actors=2, learners=1)
    assert got.env_steps_per_s == pytest.approx(800 / 0.1, rel=1e-3)
    assert got.lag_mean == pytest.approx(1.0, abs=0.05)


def test_allreduce_and_network():
    m = Machine(cores_per_node=64, **{**FAST, "allreduce_call_s": 0.01})
    assert ring_allreduce_s(m, 1, 10**6, True) == 0
    assert ring_allreduce_s(m, 4, 0, True) == pytest.approx(0.01)
    p = profile(grad_steps=3)
    got = predict(p, m, actors=4, learners=4)  # each learner: 1 unroll, update 0.03 + 3 all-reduces of 0.01
    assert got.env_steps_per_s == pytest.approx(1600 / (0.1 + 0.03 + 0.03), rel=1e-6)
    # a slow network across nodes and big unrolls: the learner's serial ingress is the bottleneck
    big = profile(unroll_bytes=10**8)
    slow = Machine(cores_per_node=64, ranks_per_node=1, **{**FAST, "net_bw": 1e9})
    got = predict(big, slow, actors=8, learners=1)
    # collect, 8 serial receives, update
    assert got.env_steps_per_s == pytest.approx(8 * 400 / (0.1 + 8 * 0.1 + 0.02 + 8 * 0.01), rel=1e-3)
    assert got.bottleneck.startswith("learner ingress") and got.ingress_utilisation > 0.7


def test_async_learner_bound_and_actor_bound():
    """Asynchronous flow: throughput is the smaller of what actors make and what learners consume."""
    m = Machine(cores_per_node=64, **FAST)
    slow_learner = profile(flow=ASYNC, update_fixed_s=0.5, update_per_unroll_s=0.0, batch_unrolls=2, queue_size=4)
    got = predict(slow_learner, m, actors=8, learners=1, updates=100)
    assert got.env_steps_per_s == pytest.approx(2 * 400 / 0.5, rel=0.02)
    assert got.bottleneck.startswith("learner compute") and got.lag_mean > 1
    fast_learner = profile(flow=ASYNC, update_fixed_s=0.001, update_per_unroll_s=0.0, batch_unrolls=1)
    got = predict(fast_learner, m, actors=4, learners=1, updates=200)
    assert got.env_steps_per_s == pytest.approx(4 * 400 / 0.1, rel=0.02)
    # every unroll is trained at once; meanwhile the other actors' unrolls (about one each) were trained
    assert got.bottleneck.startswith("actor compute") and 3 <= got.lag_mean <= 8


def test_profile_round_trip_and_bad_files(tmp_path):
    p = profile(host="n1")
    f = tmp_path / "p.json"
    p.save(str(f))
    assert Profile.load(str(f)) == p
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"env": "x"}))
    with pytest.raises(ValueError, match="not a node profile"):
        Profile.load(str(bad))
    with pytest.raises(ValueError):
        predict(p, Machine(), actors=0, learners=1)


def test_measure_tiny_config():
    cfg = load_config(os.path.join(ROOT, "configs", "test_tiny.yaml"), ["env.num_envs=3"])
    p = measure(cfg, unrolls=3)
    assert p.flow == SYNC and p.steps_per_unroll == 5 * 3 and p.grad_steps == 2 * cfg.algo.minibatches
    assert p.collect_s > 0 and p.env_s > 0 and p.infer_s > 0 and p.collect_s >= p.env_s
    assert p.update_s(4) > 0 and p.update_per_unroll_s >= 0
    assert p.unroll_bytes > p.weight_bytes > 0
    q = measure(load_config(os.path.join(ROOT, "configs", "matrace_spread.yaml"), ["env.num_envs=2"]), unrolls=3,
                busy=0)
    assert q.flow == ASYNC and q.batch_unrolls == 2 and q.queue_size == 4
    # every core collecting at once (skipped for q): a slowdown factor >= 1; a polling rank's share of a core
    assert p.cores_measured == min(os.cpu_count(), 32) and (p.busy_slowdown >= 1.0 or p.cores_measured == 1)
    assert q.cores_measured == 1 and q.busy_slowdown == 1.0 and 0 <= p.wait_load < 0.5


def test_validate_predict_cli(tmp_path):
    prof = tmp_path / "node.json"
    r = hpcmarl(["validate", "configs/test_tiny.yaml", "--np", "3", "--predict", "--save-profile", str(prof)])
    assert r.returncode == 0, r.stderr
    assert "predicted:" in r.stdout and "bottleneck:" in r.stdout and prof.exists()
    r = hpcmarl(["validate", "configs/test_tiny.yaml", "topology.learners=4", "--np", "132", "--predict", "--profile",
                 str(prof), "--ranks-per-node", "33", "--cores-per-node", "32"])
    assert r.returncode == 0, r.stderr
    assert "128 actors and 4 learner(s) on 4 node(s)" in r.stdout
    r = hpcmarl(["validate", "configs/test_tiny.yaml", "--np", "3", "--predict", "--profile",
                 str(tmp_path / "none.json")])
    assert r.returncode == 2 and "cannot read the node profile" in r.stderr
    r = hpcmarl(["validate", "configs/league_kuhn.yaml", "--np", "4", "--predict"])
    assert r.returncode == 2 and "league mode" in r.stderr
