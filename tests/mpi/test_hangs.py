"""A hung rank never hangs the job: flows x roles x phases with ``HPCMARL_INJECT_FAULT=<rank>:hang:<when>``.

Every case runs with short bounds (``runtime.timeout_s=3``, ``runtime.startup_timeout_s=10``) and must end by itself,
non-zero, within 2 x the phase's bound + 30 s, with one line that names a rank and what it waited for. The launch's
own hard timeout (tests/launch.py) kills the whole process group, so a regression fails here instead of hanging CI.
"""
import re
import time

import pytest

from launch import mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

TIMEOUT, STARTUP = 3.0, 10.0
BOUNDS = ["runtime.timeout_s=3", "runtime.startup_timeout_s=10", "output.progress_s=60", "output.trajectories=false"]
TINY = ["configs/test_tiny.yaml", "train.total_env_steps=100000000"]
NIGT = ["configs/nigt_spread.yaml", "env.num_envs=2", "algo.batch=6", "algo.init_batch=6", "algo.hidden=16",
        "train.total_env_steps=100000000", "train.max_wall_s=0"]
MATRACE = ["configs/matrace_spread.yaml", "env.num_envs=2", "algo.hidden=16", "train.total_env_steps=100000000",
           "train.max_wall_s=0"]
LEAGUE = ["configs/league_c4.yaml", "env.num_envs=2", "algo.unroll_length=8", "algo.hidden=16", "algo.epochs=1",
          "algo.minibatches=1", "league.groups.0.snapshot_every=2", "league.eval_games=2", "league.eval_pool=2",
          "league.pool_baselines=[]", "train.max_wall_s=0", "train.total_env_steps=100000000"]

# name: (config + overrides, ranks, role of the hung rank, when); "final" cases stop by train.max_updates
CASES = {
    "rollouts-actor-startup": (TINY, 3, "actor", "startup"),
    "rollouts-actor-update": (TINY, 3, "actor", "3"),
    "rollouts-actor-final": (TINY + ["train.max_updates=4"], 3, "actor", "final"),
    "rollouts-learner-startup": (TINY, 3, "learner", "startup"),
    "rollouts-learner-update": (TINY, 3, "learner", "3"),
    "rollouts-learner-final": (TINY + ["train.max_updates=4"], 3, "learner", "final"),
    "rollouts-2learners-learner1-update": (TINY + ["topology.learners=2"], 4, "learner1", "3"),
    "overlap-actor-update": (TINY + ["actors.overlap=true"], 3, "actor", "3"),
    "overlap-learner-update": (TINY + ["actors.overlap=true"], 3, "learner", "3"),
    "matrace-wait-actor-update": (MATRACE + ["algo.queue_full=wait"], 3, "actor", "3"),
    "matrace-drop-actor-update": (MATRACE + ["algo.queue_full=drop"], 3, "actor", "3"),
    "matrace-drop-learner-update": (MATRACE + ["algo.queue_full=drop"], 3, "learner", "3"),
    "matrace-actor-final": (MATRACE + ["train.max_updates=6"], 3, "actor", "final"),
    "nigt-rennala-actor-update": (NIGT + ["algo.aggregation=rennala"], 4, "actor", "2"),
    "nigt-malenia-actor-update": (NIGT + ["algo.aggregation=malenia"], 4, "actor", "2"),
    "nigt-allreduce-actor-update": (NIGT + ["algo.aggregation=allreduce"], 4, "actor", "2"),
    "nigt-malenia-2learners-actor-update": (NIGT + ["algo.aggregation=malenia", "topology.learners=2"], 4, "actor",
                                            "2"),
    "nigt-learner-update": (NIGT + ["algo.aggregation=rennala"], 3, "learner", "2"),
    "nigt-actor-startup": (NIGT + ["algo.aggregation=malenia"], 3, "actor", "startup"),
    "nigt-learner-final": (NIGT + ["algo.aggregation=malenia", "train.max_updates=4"], 3, "learner", "final"),
    "league-league-startup": (LEAGUE, 4, "league", "startup"),
    "league-league-update": (LEAGUE, 4, "league", "2"),
    "league-league-final": (LEAGUE + ["train.max_updates=4"], 4, "league", "final"),
    "league-actor-update": (LEAGUE, 4, "actor", "2"),
    "league-learner-final": (LEAGUE + ["train.max_updates=4"], 4, "learner", "final"),
}
LINE = re.compile(r"hpcmarl: (rank \d+ .*(waited|waiting for)|.*rank \d+.*timed out after \d+s waiting for)")


def rank_of(args, n: int, role: str) -> int:
    """The rank of ``role`` (``learner1``: the second learner) in the layout of ``args`` on ``n`` ranks."""
    from hpcmarl.config import load_config
    from hpcmarl.launch import layout_for

    layout = layout_for(load_config(args[0], [a for a in args[1:] if "=" in a]), n)
    which = int(role[-1]) if role[-1].isdigit() else 0
    return [r for r, rl in layout.roles() if rl == role.rstrip("0123456789")][which]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hung_rank_ends_the_job_within_its_bound(tmp_path, case):
    args, n, role, when = CASES[case]
    rank = rank_of(args, n, role)
    bound = STARTUP if when == "startup" else TIMEOUT
    t0 = time.monotonic()
    p = mpirun(n, ["train"] + args + BOUNDS + [f"run_dir={tmp_path / 'run'}"],
               env={"HPCMARL_INJECT_FAULT": f"{rank}:hang:{when}"}, timeout=2 * bound + 30 + 60)
    elapsed = time.monotonic() - t0
    assert p.returncode != 0, f"{case}: exited 0\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    lines = [ln for ln in p.stderr.splitlines() if LINE.search(ln)]
    assert lines, f"{case}: no line naming a rank and what it waited for\n{p.stderr[-3000:]}"
    # the job's own bound, plus the launch and Python start-up of every rank before the watchdogs exist
    assert elapsed <= 2 * bound + 30 + 15, f"{case}: took {elapsed:.0f}s\n{p.stderr[-2000:]}"
    assert "Traceback" not in p.stderr, f"{case}: a timeout is one line, not a traceback\n{p.stderr[-3000:]}"
