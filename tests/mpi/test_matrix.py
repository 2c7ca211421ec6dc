"""Switch-combination smoke matrix: every algorithm in serial, 1 learner + 1 actor and 2 learners + 2 actors layouts
with its main switches. Each short run must exit 0, leave readable outputs (`hpcmarl inspect`) and a checkpoint in
which every learner reports the same parameter checksum. The longer variant (300 updates per case) runs by hand:
``HPCMARL_LONG_MATRIX=1 .venv/bin/python -m pytest tests/mpi/test_matrix.py -k long``."""
import glob
import json
import os

import h5py
import pytest

from launch import hpcmarl, mpirun, requires_mpirun

pytestmark = [requires_mpirun, pytest.mark.mpi]

SMALL = ["env.num_envs=2", "algo.hidden=16", "output.progress_s=5", "runtime.timeout_s=60", "output.checkpoint_every=3"]
PPO = ["configs/test_tiny.yaml"] + SMALL
MAT = ["configs/matrace_spread.yaml", "algo.unroll_length=5"] + SMALL
QMX = ["configs/qmix_spread.yaml", "algo.unroll_length=25", "algo.batch_episodes=4", "algo.learning_starts=4",
       "algo.eps_anneal_steps=1000"] + SMALL
NIG = ["configs/nigt_spread.yaml", "algo.batch=2", "algo.init_batch=2", "env.kwargs.max_cycles=10"] + SMALL[1:]

# (id, ranks, learners, args); ranks 1 = serial
CASES = [
    ("mappo-serial", 1, 1, PPO),
    ("mappo-1l1a", 2, 1, PPO),
    ("mappo-2l2a", 4, 2, PPO),
    ("mappo-2l2a-state-individual", 4, 2, PPO + ["algo.critic_input=state", "algo.reward=individual",
                                                 "algo.bootstrap_truncated=false"]),
    ("ippo-2l2a-continuous", 4, 2, PPO + ["algo.name=ippo", "env.kwargs.continuous_actions=true"]),
    ("mappo-1l1a-conv", 2, 1, PPO + ["env.name=pursuit_v5", "env.kwargs.max_cycles=5", "algo.encoder=conv",
                                     "env.num_envs=1"]),
    ("mappo-1l1a-user-env", 2, 1, PPO + ["env.name=mpe2.simple_adversary_v3:parallel_env"]),
    ("mappo-1l1a-lbf", 2, 1, PPO + ["env.name=lbf", "env.kwargs.max_cycles=5"]),
    ("matrace-serial", 1, 1, MAT),
    ("matrace-2l2a-joint-fixed-entropy", 4, 2, MAT + ["algo.entropy_adaptive=false"]),
    ("matrace-2l2a-per_agent-drop", 4, 2, MAT + ["algo.correction=per_agent", "algo.queue_full=drop"]),
    ("matrace-1l1a-none", 2, 1, MAT + ["algo.correction=none", "algo.entropy_adaptive=false"]),
    ("qmix-serial", 1, 1, QMX),
    ("qmix-2l2a-sparse-hard-tdlambda", 4, 2, QMX + ["algo.sparsity=0.9", "algo.target_tau=0", "algo.target_update=5",
                                                  "algo.td_lambda=0.6", "algo.topology_every=2"]),
    ("vdn-1l1a-dual-replay", 2, 1, QMX + ["algo.name=vdn", "algo.recent_episodes=8", "algo.mellowmax_omega=5"]),
    ("mast-2l2a", 4, 2, ["configs/mast_spread.yaml", "algo.unroll_length=25", "algo.batch_episodes=4",
                         "algo.learning_starts=4"] + SMALL),
    ("nigt-serial-rennala", 1, 1, NIG),
    ("nigt-2l2a-malenia", 4, 2, NIG + ["algo.aggregation=malenia"]),
    ("nigt-1l1a-allreduce", 2, 1, NIG + ["algo.aggregation=allreduce"]),
    # the benchmark task families of issue 16 (EPyMARL's): every algorithm on RWARE, VDN on LBF
    ("mappo-serial-rware", 1, 1, PPO + ["env.name=rware", "env.kwargs.max_cycles=5"]),
    ("matrace-serial-rware", 1, 1, MAT + ["env.name=rware", "env.kwargs.max_cycles=10"]),
    ("qmix-serial-rware", 1, 1, QMX + ["env.name=rware", "env.kwargs.max_cycles=25"]),
    ("vdn-serial-lbf", 1, 1, QMX + ["algo.name=vdn", "env.name=lbf", "env.kwargs.max_cycles=25"]),
    ("nigt-serial-rware", 1, 1, NIG + ["env.name=rware"]),
    # the shipped LBF QMIX config: recurrent agents, TD(lambda), bootstrapping at time limits, hard target copies
    ("qmix-1l1a-lbf-config", 2, 1, ["configs/lbf_qmix.yaml", "algo.batch_episodes=4", "algo.learning_starts=4",
                                    "algo.target_update=3"] + SMALL),
]


def check_case(tmp_path, ranks, learners, args, updates, timeout):
    run = tmp_path / "run"
    cmd = ["train"] + args + [f"run_dir={run}", f"topology.learners={learners}", f"train.max_updates={updates}"]
    p = mpirun(ranks, cmd, timeout=timeout) if ranks > 1 else hpcmarl(cmd, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    out = hpcmarl(["inspect", str(run), "--json"])
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["updates"] >= updates and s["env_steps"] > 0
    with h5py.File(sorted(glob.glob(os.path.join(run, "checkpoints", "ckpt-*.h5")))[-1], "r") as f:
        sums = f.attrs["learner_param_checksums"]
    sums = json.loads(sums) if isinstance(sums, str) else list(sums)
    assert len(sums) == learners and len(set(sums)) == 1, sums


@pytest.mark.parametrize("ranks,learners,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_combination_runs(tmp_path, ranks, learners, args):
    check_case(tmp_path, ranks, learners, args, 6, 240)


@pytest.mark.skipif(not os.environ.get("HPCMARL_LONG_MATRIX"), reason="by hand: HPCMARL_LONG_MATRIX=1")
@pytest.mark.parametrize("ranks,learners,args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_combination_runs_long(tmp_path, ranks, learners, args):
    check_case(tmp_path, ranks, learners, args, 300, 1200)
