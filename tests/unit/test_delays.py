"""Injected costs: ``actors.step_delay_s`` (x ``actors.delay``'s per-actor factor) slept after every env step by the
rollout flows' sampler, counted as env time; ``learner.update_delay_s`` slept in every learner update, counted in
time/update (the sizing model's check runs on them: tools/scale_model.py --injected)."""
import os
import time

import numpy as np
import pytest

from hpcmarl.actors import ActorPlan, make_sampler
from hpcmarl.comm.spec import META_INDEX
from hpcmarl.config import ConfigError, load_config

from launch import ROOT, hpcmarl

TINY = os.path.join(ROOT, "configs", "test_tiny.yaml")


def test_sampler_sleeps_each_actors_delay_as_env_time():
    cfg = load_config(TINY, ["actors.step_delay_s=0.01", "actors.delay=straggler:3"])
    T = cfg.algo.unroll_length
    assert [ActorPlan(cfg, i, 3).step_delay_s for i in range(3)] == pytest.approx([0.01, 0.01, 0.03])
    for idx, h in ((0, 1.0), (2, 3.0)):
        sampler = make_sampler(ActorPlan(cfg, idx, 3))[0]
        assert sampler.delay_s == pytest.approx(0.01 * h)
        sampler.collect(sampler.spec.alloc())  # warm-up (first forward pass)
        rec = sampler.spec.alloc()
        t0 = time.perf_counter()
        sampler.collect(rec)
        took = time.perf_counter() - t0
        want = T * 0.01 * h
        assert want <= took < want + 0.5
        m = rec["meta"]
        assert m[META_INDEX["t_env"]] >= want and m[META_INDEX["t_collect"]] >= want
    # no delay configured: no sleep
    none = make_sampler(ActorPlan(load_config(TINY, []), 2, 3))[0]
    assert none.delay_s == 0.0


def test_update_delay_is_validated():
    with pytest.raises(ConfigError, match="learner.update_delay_s"):
        load_config(TINY, ["learner.update_delay_s=-0.1"])


@pytest.mark.parametrize("config,extra,unrolls", [
    ("test_tiny.yaml", [], 1),  # the synchronous flow: one unroll per update
    ("matrace_spread.yaml", ["env.num_envs=2", "algo.unroll_length=5", "algo.hidden=16"], 2),  # asynchronous: 2
    # the gradient flow (NIGT): time/update is the step, with the delay
    ("nigt_spread.yaml", ["algo.batch=2", "algo.init_batch=2", "algo.hidden=16", "train.total_env_steps=250"], 0),
])
def test_serial_run_sleeps_both_delays(tmp_path, config, extra, unrolls):
    from hpcmarl.storage import Run

    run_dir = str(tmp_path / "run")
    r = hpcmarl(["train", os.path.join("configs", config), f"run_dir={run_dir}", "train.total_env_steps=100",
                 "actors.step_delay_s=0.01", "learner.update_delay_s=0.05", "output.trajectories=false", "--fresh"]
                + extra, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    m = Run(run_dir).metrics()
    steps, wall = np.asarray(m["env_steps"], float), np.asarray(m["wall_time"], float)
    assert len(steps) >= 4 and np.all(np.asarray(m["time/update"]) >= 0.05)
    # serial: an update's unrolls (5 steps of 2 copies, >= 10 ms each), then the update (>= 50 ms)
    assert not unrolls or (steps[-1] - steps[0]) / (wall[-1] - wall[0]) <= unrolls * 10 / (unrolls * 5 * 0.01 + 0.05)
    if "time/actor_env" in m:
        assert np.all(np.asarray(m["time/actor_env"]) >= 5 * 0.01)
