"""evaluate and the extended inspect, on a short real run made in the test session."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from launch import hpcmarl


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ev") / "run"
    p = hpcmarl(["train", "configs/test_tiny.yaml", f"run_dir={d}", "train.max_updates=10", "env.kwargs.max_cycles=10"])
    assert p.returncode == 0, p.stderr[-2000:]
    return d


def ckpt(run):
    return sorted((run / "checkpoints").glob("ckpt-*.h5"))[-1]


def test_evaluate_matches_a_reference_loop_and_is_reproducible(run):
    from hpcmarl.analysis.evaluate import evaluate, load_policy
    from hpcmarl.envs import VecEnv

    a = evaluate(str(ckpt(run)), episodes=6, seed=3, num_envs=2)
    b = evaluate(str(run), episodes=6, seed=3, num_envs=2)  # a run directory: its newest checkpoint
    assert b["checkpoint"] == str(ckpt(run))
    assert json.dumps(a) == json.dumps(b)  # (NaN: the win rate of an env without outcomes)
    assert a["groups"]["agent"]["episodes"] == 6 and a["length_mean"] == 10 and np.isnan(a["win_rate"])
    # reference: the same policy and seeds stepped by hand (every episode here has the same length)
    cfg, policy = load_policy(str(ckpt(run)))
    torch.manual_seed(3)
    v = VecEnv(cfg.env.name, 2, 3, cfg.env.kwargs)
    v.reset()
    rets = []
    while len(rets) < 6:
        acts, _ = policy.act(v.obs, v.action_mask)
        rets += [e.returns["agent"] for e in v.step(acts)[3]]
    assert a["groups"]["agent"]["returns"] == rets[:6]
    assert a["groups"]["agent"]["return_mean"] == pytest.approx(np.mean(rets[:6]))
    assert a["groups"]["agent"]["return_std"] == pytest.approx(np.std(rets[:6]))


def test_evaluate_cli_json_and_gif(run, tmp_path):
    gif = tmp_path / "ep.gif"
    p = hpcmarl(["evaluate", str(ckpt(run)), "--episodes", "4", "--json", "--render-gif", str(gif)])
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert set(r["groups"]["agent"]) == {"return_mean", "return_std", "episodes", "returns"}
    assert len(r["groups"]["agent"]["returns"]) == len(r["episode_lengths"]) == len(r["episode_won"]) == 4
    from PIL import Image

    with Image.open(gif) as im:
        assert 2 <= im.n_frames <= 10  # a frame per step of a 10-step episode (PIL merges identical ones)


def test_evaluate_and_inspect_bad_paths(run, tmp_path):
    bad = tmp_path / "ckpt-000000001.h5"
    shutil.copy(ckpt(run), bad)
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) // 3)
    for args in (["evaluate", str(tmp_path / "missing.h5")], ["evaluate", str(bad)],
                 ["inspect", str(tmp_path / "nope")], ["evaluate", str(run / "config.yaml")],
                 ["evaluate", str(tmp_path)]):  # a directory without checkpoints
        p = hpcmarl(args)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpcmarl: error:"), p.stderr


def test_inspect_json_reports_timings_lag_and_sizes(run):
    p = hpcmarl(["inspect", str(run), "--json"])
    s = json.loads(p.stdout)
    assert s["schema_version"] == 1
    assert {"receive", "update", "send"} <= set(s["timings_mean_s"]["learner"])
    assert {"env_step", "inference", "receive", "send"} <= set(s["timings_mean_s"]["actor"])
    assert s["timings_mean_s"]["actor"]["env_step"] > 0 and s["lag"]["max"] == 0
    assert s["file_sizes_bytes"]["run.h5"] == os.path.getsize(run / "run.h5")
    p = hpcmarl(["inspect", str(run)])
    assert "learner" in p.stdout and "env_step" in p.stdout


def test_inspect_into_a_closed_pipe_ends_quietly(run):
    """`hpcmarl inspect RUN | head -1`: the reader goes away, the command ends with 141 (a closed pipe) and no
    traceback."""
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "hpcmarl")
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes its first line
    p = subprocess.Popen([exe, "inspect", str(run)], stdout=w, stderr=subprocess.PIPE, text=True)
    os.close(w)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 141 and err == "", (p.returncode, err[-2000:])
