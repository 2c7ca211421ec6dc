"""The sizing model: its event engine, predictions checked against closed forms, the node profile, the CLI."""
import json
import os

import pytest

from hpcmarl.config import load_config
from hpcmarl.sizing import ASYNC, GRADIENTS, SYNC, Machine, Node, Profile, Sim, measure, predict, ring_allreduce_s

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


def test_cyclic_placement_keeps_actors_beside_their_learner():
    """Round robin (``--distribution cyclic``): with L learners on L nodes, actor i (rank L + i) lands on node
    i mod L, its learner's; blocks put every learner on node 1 and the actors elsewhere, behind the network."""
    big = profile(unroll_bytes=10**8)
    kw = dict(cores_per_node=64, ranks_per_node=3, **{**FAST, "net_bw": 1e9})
    cyclic = predict(big, Machine(placement="cyclic", **kw), actors=6, learners=3)
    block = predict(big, Machine(**kw), actors=6, learners=3)
    assert cyclic.nodes == block.nodes == 3
    # cyclic: 2 unrolls per learner over shared memory (FAST), update 0.02 + 2 x 0.01
    assert cyclic.env_steps_per_s == pytest.approx(6 * 400 / (0.1 + 0.04), rel=1e-3)
    assert block.env_steps_per_s < 0.5 * cyclic.env_steps_per_s and block.bottleneck.startswith("learner ingress")


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
    cfg = load_config(os.path.join(ROOT, "configs", "test_tiny.yaml"),
                      ["env.num_envs=3", "actors.step_delay_s=0.2", "learner.update_delay_s=2", "actors.delay=sqrt"])
    p = measure(cfg, unrolls=3, envs=[1, 6])
    # the injected costs are recorded, not slept (the profile holds the real costs: an unroll of 5 steps and an
    # update would take >= 1 s and >= 2 s with them)
    assert (p.step_delay_s, p.update_delay_s, p.delay, p.unroll_length, p.num_envs) == (0.2, 2.0, "sqrt", 5, 3)
    assert p.collect_s < 0.5 and p.update_s(1) < 1.0
    assert [int(r[0]) for r in p.envs_curve] == [1, 3, 6] and all(r[1] > 0 for r in p.envs_curve)
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
    r = hpcmarl(["validate", "configs/test_tiny.yaml", "topology.learners=4", "--np", "12", "--predict", "--profile",
                 str(prof), "--ranks-per-node", "3", "--distribution", "cyclic"])
    assert r.returncode == 0, r.stderr
    assert "3 ranks per node (cyclic)" in r.stdout and "8 actors and 4 learner(s) on 4 node(s)" in r.stdout
    # a profile of another unroll length is another config's costs: refused in one line
    r = hpcmarl(["validate", "configs/test_tiny.yaml", "algo.unroll_length=7", "--np", "3", "--predict", "--profile",
                 str(prof)])
    assert r.returncode == 2 and "measured with algo.unroll_length 5 (config: 7)" in r.stderr, r.stderr
    r = hpcmarl(["validate", "configs/test_tiny.yaml", "--np", "3", "--predict", "--profile",
                 str(tmp_path / "none.json")])
    assert r.returncode == 2 and "cannot read the node profile" in r.stderr
    r = hpcmarl(["validate", "configs/league_kuhn.yaml", "--np", "4", "--predict"])
    assert r.returncode == 2 and "league mode" in r.stderr


def delayed(**kw):
    return profile(unroll_length=25, num_envs=16, **kw)


def test_injected_delays_are_sleeps_the_model_adds():
    """Actor i sleeps T x step_delay_s x h_i per unroll, a learner update_delay_s per update; sleeping takes no CPU."""
    p = delayed(step_delay_s=0.01, update_delay_s=0.2)
    assert p.actor_sleep_s(0, 1) == pytest.approx(0.25)
    one = predict(p, Machine(cores_per_node=2, **FAST), actors=1, learners=1)
    assert one.env_steps_per_s == pytest.approx(400 / (0.1 + 0.25 + 0.03 + 0.2), rel=1e-6)
    # two actors on one core share it while they compute (0.2 s), then sleep side by side (0.25 s)
    two = predict(p, Machine(cores_per_node=1, **FAST), actors=2, learners=1)
    assert two.env_steps_per_s == pytest.approx(800 / (0.2 + 0.25 + 0.04 + 0.2), rel=1e-6)
    # heterogeneous actors (actors.delay): the synchronous round waits for the slowest, h = 3
    slow = predict(delayed(step_delay_s=0.01, update_delay_s=0.2, delay="straggler:3"),
                   Machine(cores_per_node=4, **FAST), actors=2, learners=1)
    assert slow.env_steps_per_s == pytest.approx(800 / (0.1 + 0.75 + 0.04 + 0.2), rel=1e-6)
    # doubling every delay of a delay-dominated config nearly halves the rate
    big = delayed(collect_s=0.01, update_fixed_s=0.001, update_per_unroll_s=0.0)
    r1 = predict(big.with_delays(0.02, 0.5), Machine(cores_per_node=2, **FAST), actors=3, learners=1)
    r2 = predict(big.with_delays(0.04, 1.0), Machine(cores_per_node=2, **FAST), actors=3, learners=1)
    assert r1.env_steps_per_s / r2.env_steps_per_s == pytest.approx(2.0, rel=0.03)
    # asynchronous, actor-bound: each actor delivers an unroll every collect + sleep
    a = delayed(flow=ASYNC, step_delay_s=0.01, update_fixed_s=0.001, update_per_unroll_s=0.0)
    got = predict(a, Machine(cores_per_node=4, **FAST), actors=2, learners=1)
    assert got.env_steps_per_s == pytest.approx(2 * 400 / (0.1 + 0.25), rel=0.03)
    assert got.bottleneck.startswith("actor compute")


def test_batched_env_cost_curve():
    """A step's cost as a function of E: piecewise linear through the measured points, the end segments beyond."""
    curve = [[16, 0.001, 0.0006, 0.0003], [256, 0.004, 0.002, 0.0015], [2048, 0.03, 0.015, 0.012]]
    p = delayed(envs_curve=curve)
    assert p.step_cost(16) == pytest.approx(0.001) and p.step_cost(2048) == pytest.approx(0.03)
    assert p.step_cost(1024) == pytest.approx(0.004 + 0.026 * 768 / 1792)
    assert p.step_cost(4096) == pytest.approx(0.03 + 0.026 * 2048 / 1792)  # the last segment extended
    assert p.step_cost(64) == pytest.approx(0.001 + 0.003 * 48 / 240)
    assert p.step_cost(1024, 2) == pytest.approx(0.002 + 0.013 * 768 / 1792)
    q = p.at_envs(1024)
    assert q.steps_per_unroll == 25 * 1024 and q.num_envs == 1024
    assert q.collect_s == pytest.approx(25 * p.step_cost(1024))
    assert q.infer_s == pytest.approx(25 * p.step_cost(1024, 3))
    assert q.update_per_unroll_s == pytest.approx(p.update_per_unroll_s * 64) and q.unroll_bytes == 64000
    assert p.at_envs(16) is p
    # predict(num_envs=E) plays the profile at E: one actor, free update and messages -> E steps per step cost
    fast = delayed(envs_curve=curve, update_fixed_s=0.0, update_per_unroll_s=0.0, flow=ASYNC)
    for E in (64, 1024):
        got = predict(fast, Machine(cores_per_node=4, **FAST), actors=1, learners=1, num_envs=E)
        assert got.env_steps_per_s == pytest.approx(E / fast.step_cost(E), rel=0.02)
    # without a curve: the measured cost in proportion to E; an old profile without T cannot be rescaled
    assert delayed().step_cost(32) == pytest.approx(2 * 0.1 / 25)
    with pytest.raises(ValueError, match="measure it again"):
        profile().at_envs(32)


def test_a_profile_plays_only_the_config_it_was_measured_for():
    """``Profile.for_config``: the config's delays and env copies; another env, algorithm, unroll length or env.parts
    is refused; copies that do not split into the profile's parts cannot be played or timed."""
    cfg = load_config(os.path.join(ROOT, "configs", "test_tiny.yaml"), ["actors.step_delay_s=0.01", "env.num_envs=8"])
    p = profile(env=cfg.env.name, algo=cfg.algo.name, unroll_length=cfg.algo.unroll_length, num_envs=4, parts=2)
    with pytest.raises(ValueError, match=r"measured with env.parts 2 \(config: 1\)"):
        p.for_config(cfg)
    cfg.env.parts = 2  # as a jaxmarl: config would have it (not checked by the model)
    q = p.for_config(cfg)
    assert (q.step_delay_s, q.num_envs, q.steps_per_unroll) == (0.01, 8, 8 * cfg.algo.unroll_length)
    for key, value in (("env", "other"), ("algo", "qmix")):
        with pytest.raises(ValueError, match=f"measured with {key}.name {value} "):
            delayed(**{**dict(env=cfg.env.name, algo=cfg.algo.name, parts=2), key: value}).for_config(cfg)
    with pytest.raises(ValueError, match="do not split into the profile's env.parts=2"):
        p.at_envs(7)
    with pytest.raises(ValueError, match=r"must divide every number of env copies timed \(not \[3\]\)"):
        measure(cfg, envs=[4, 3])  # refused before any timing


def gradients_profile(kind, M, **kw):
    """NIGT: a batch of 1 trajectory of 10 steps costs 0.1 s to collect and 0.02 s for its gradient."""
    return profile(flow=GRADIENTS, steps_per_unroll=10, unroll_length=10, num_envs=1, collect_s=0.1, grad_s=0.02,
                   update_fixed_s=0.0, overhead_s=0.0, aggregation=kind, batch=M, **kw)


def test_gradients_closed_forms():
    """Free messages, a core per rank. Rennala, 2 equal actors, M = 2: each round takes one batch (0.12 s) from each
    actor, and each actor loses the first step (0.01 s) of the batch it began before the next query point came.
    allreduce with actor 1 slower (sleeps): a round waits for the slow actor's quota, the fast one waits idle.
    Rennala with the same slow actor: the fast actor fills every round, the slow one's batches are abandoned (their
    steps still count): more rounds and more steps per second than allreduce."""
    m = Machine(cores_per_node=3, **FAST)
    eq = predict(gradients_profile("rennala", 2), m, actors=2, learners=1)
    assert eq.updates_per_s == pytest.approx(1 / 0.13, rel=1e-6)
    assert eq.env_steps_per_s == pytest.approx((2 * 10 + 2 * 1) / 0.13, rel=1e-6)
    assert eq.detail["abandoned_per_round"] == pytest.approx(2, abs=0.1)
    # actor 1 sleeps 0.15 s more per batch (step_delay 0.015 s x 10 steps x h = 1 for it, 0 for actor 0)
    slow = dict(step_delay_s=0.015, delay=[0, 1])
    ar = predict(gradients_profile("allreduce", 2, **slow), m, actors=2, learners=1)
    assert ar.updates_per_s == pytest.approx(1 / 0.27, rel=1e-6)  # the slow actor's 0.1 + 0.15 + 0.02
    assert ar.env_steps_per_s == pytest.approx(20 / 0.27, rel=1e-6)  # no batch abandoned: quota, then wait
    rn = predict(gradients_profile("rennala", 2, **slow), m, actors=2, learners=1)
    assert rn.updates_per_s > 1.05 * ar.updates_per_s and rn.env_steps_per_s > ar.env_steps_per_s
    assert rn.detail["abandoned_per_round"] >= 1
    ml = predict(gradients_profile("malenia", 2, **slow), m, actors=2, learners=1)
    assert ml.updates_per_s == pytest.approx(ar.updates_per_s, rel=0.1)  # Malenia needs one from each actor too


def test_measure_and_predict_the_gradient_flow(tmp_path):
    cfg = load_config(os.path.join(ROOT, "configs", "nigt_spread.yaml"),
                      ["algo.aggregation=malenia", "algo.batch=6", "actors.step_delay_s=0.01"])
    p = measure(cfg, unrolls=3)
    assert p.flow == GRADIENTS and p.aggregation == "malenia" and p.batch == 6 and p.step_delay_s == 0.01
    assert p.steps_per_unroll == 25 and p.collect_s > 0 and p.grad_s > 0 and p.grad_bytes > p.weight_bytes > 0
    r = predict(p, Machine(cores_per_node=8, ranks_per_node=4, placement="cyclic"), actors=6, learners=2)
    assert r.nodes == 2 and 0 < r.env_steps_per_s < 6 * 25 / (25 * 0.01)  # below 6 actors that only sleep
    prof = tmp_path / "nigt.json"
    p.save(str(prof))
    out = hpcmarl(["validate", "configs/nigt_spread.yaml", "algo.aggregation=rennala", "--np", "5", "--predict",
                   "--profile", str(prof)])
    assert out.returncode == 0, out.stderr
    assert "rennala, M=20" in out.stdout and "4 actors and 1 learner(s)" in out.stdout
