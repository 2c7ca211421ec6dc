"""Every flow across nodes, and what a node fault does: ranks on 3 simulated nodes (``tools/cluster.py``: a network,
UTS and mount namespace per node, Open MPI over TCP between them, shared memory within one), launched by ``mpirun``
from a hostfile on node01 as a batch script would. Ranks are placed round-robin over the nodes (``--map-by node``),
so with 2 learners the learners sit on node01 and node02 and the actors on all three. Every launch has a hard
timeout that kills the whole process group; the cluster is removed when the module ends, or by its keeper when
pytest itself dies."""
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from launch import PY, ROOT, hpcmarl, require_extra, requires_mpirun, run_cmd

sys.path.insert(0, os.path.join(ROOT, "tools"))
import cluster as cluster_tool  # noqa: E402

pytestmark = [requires_mpirun, pytest.mark.mpi, pytest.mark.cluster]

NODES = 3
SMALL = ["env.num_envs=2", "algo.hidden=16", "output.progress_s=2", "runtime.timeout_s=30", "output.checkpoint_every=3"]
PPO = ["configs/test_tiny.yaml"] + SMALL
MAT = ["configs/matrace_spread.yaml", "algo.unroll_length=5"] + SMALL
QMX = ["configs/qmix_spread.yaml", "algo.unroll_length=25", "algo.batch_episodes=4", "algo.learning_starts=4",
       "algo.eps_anneal_steps=1000"] + SMALL
NIG = ["configs/nigt_spread.yaml", "algo.batch=4", "algo.init_batch=4", "env.kwargs.max_cycles=10"] + SMALL[1:]


def cluster_unavailable() -> str:
    if os.geteuid() != 0:
        return "the simulated cluster needs root"
    for tool in ("ip", "nsenter", "unshare", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.isdir("/sys/fs/cgroup/freezer"):
        return "no cgroup v1 freezer"
    return ""


@pytest.fixture(scope="module")
def cluster():
    why = cluster_unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the multi-node tests: {why}")
        pytest.skip(why)
    with fresh_cluster("/var/tmp/hpcmarl-test-cluster", NODES, "10.213.48.0/24", "hct") as c:
        yield c


@contextlib.contextmanager
def fresh_cluster(state, nodes, subnet, tag):
    """A cluster with Slurm started from nothing in ``state`` (not under /tmp: each node has its own), removed on
    exit."""
    c = cluster_tool.Cluster(state, nodes=nodes, subnet=subnet, tag=tag)
    c.stop()  # what a run killed with its keeper may have left (stop removes by name, idempotent)
    shutil.rmtree(state, ignore_errors=True)
    c = cluster_tool.Cluster(state, nodes=nodes, subnet=subnet, tag=tag)
    c.start(owner=os.getpid(), slurm=True)  # the keeper removes it should pytest die
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(state, ignore_errors=True)


def train_command(c, name, np, args, env=None):
    """``(mpirun of hpcmarl train across the cluster, its run directory on shared storage)``."""
    run = os.path.join(c.shared, name)
    argv = [PY, "-m", "hpcmarl.cli", "train"] + list(args) + [f"run_dir={run}"]
    # (launch.mpi_env sets PYTHONUNBUFFERED and HOROVOD_LOG_LEVEL for mpirun; -x passes them on to every node)
    fault = tuple(k for k in ("HPCMARL_INJECT_FAULT",) if k in os.environ or k in (env or {}))
    return c.mpirun_command(np, argv, forward=("PYTHONUNBUFFERED", "HOROVOD_LOG_LEVEL") + fault), run


def train(c, name, np, args, timeout=180, env=None):
    """Run :func:`train_command` to its end; returns (process, run directory)."""
    cmd, run = train_command(c, name, np, args, env)
    return run_cmd(cmd, timeout=timeout, env=dict(env or {}, HOROVOD_LOG_LEVEL="error")), run


def summary(run):
    out = hpcmarl(["inspect", run, "--json"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def hosts_of(s):
    """``{rank: host}`` from an inspect summary (run.h5's rank map)."""
    return {rank: host for host, ranks in s["hosts"].items() for rank, _ in ranks}


def check_run(run, updates, learners):
    s = summary(run)
    assert s["updates"] >= updates and s["env_steps"] > 0, s
    hosts = hosts_of(s)
    assert set(hosts.values()) == {f"node{i + 1:02d}" for i in range(NODES)}, hosts
    assert len({hosts[r] for r in range(learners)}) == learners, hosts  # the learners on different nodes
    from hpcmarl.storage import list_checkpoints, load_checkpoint

    ckpts = list_checkpoints(os.path.join(run, "checkpoints"))
    assert ckpts, os.listdir(run)
    _, attrs = load_checkpoint(ckpts[-1])
    sums = attrs["learner_param_checksums"]
    sums = json.loads(sums) if isinstance(sums, str) else list(sums)
    assert len(sums) == learners and len(set(sums)) == 1, sums


# (id, ranks, learners, args)
FLOWS = [
    ("mappo-horovod", 5, 2, PPO + ["learner.backend=horovod"]),
    ("mappo-mpi-overlap", 5, 2, PPO + ["learner.backend=mpi", "actors.overlap=true"]),
    ("rmappo-horovod", 5, 2, PPO + ["algo.recurrent=true"]),
    ("matrace-wait", 5, 2, MAT),
    ("matrace-drop", 5, 2, MAT + ["algo.queue_full=drop"]),
    ("qmix", 5, 2, QMX),
    ("nigt-allreduce", 5, 2, NIG + ["algo.aggregation=allreduce"]),
    ("nigt-rennala", 5, 2, NIG + ["algo.aggregation=rennala"]),
    ("nigt-malenia", 5, 2, NIG + ["algo.aggregation=malenia"]),
    # a batched simulator's env (JaxMARL's MPE port, 2 copies per actor), each actor with its own JAX
    ("mappo-batched-jaxmarl", 5, 2, PPO + ["env.name=jaxmarl:MPE_simple_spread_v3", "env.kwargs.max_steps=4",
                                           "algo.unroll_length=5", "learner.backend=mpi"]),
]


@pytest.mark.parametrize("ranks,learners,args", [f[1:] for f in FLOWS], ids=[f[0] for f in FLOWS])
def test_flow_across_nodes(cluster, ranks, learners, args, request):
    """Each flow trains with its ranks on 3 nodes and its 2 learners on 2 of them: exit 0, run.h5's rank map names
    the 3 hosts, the learners end with the same parameters."""
    name = request.node.callspec.id
    if "jaxmarl:" in " ".join(args):
        require_extra("jaxmarl", "jax")
    p, run = train(cluster, name, ranks, args + ["train.max_updates=6", f"topology.learners={learners}"])
    assert p.returncode == 0, p.stderr[-3000:]
    check_run(run, 6, learners)


def test_horovod_learners_on_two_nodes_keep_going(cluster):
    """300 updates with Horovod's learners on node01 and node02: an mpi4py collective of the main thread beside
    Horovod's background thread deadlocked within 1-300 updates over TCP (every learner collective now goes
    through Horovod)."""
    p, run = train(cluster, "horovod-long", 6, PPO + ["learner.backend=horovod", "topology.learners=2",
                                                      "train.max_updates=300", "output.checkpoint_every=50",
                                                      "train.total_env_steps=100000000"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    check_run(run, 300, 2)


def test_nigt_rennala_takes_exactly_m_per_round_across_nodes(cluster):
    """Rennala's counter on learner 0 is reached over TCP by the learner on node02: exactly M gradients per round."""
    from hpcmarl.storage import Run

    p, run = train(cluster, "rennala-exact", 5,
                   NIG + ["algo.aggregation=rennala", "train.max_updates=10", "topology.learners=2"])
    assert p.returncode == 0, p.stderr[-3000:]
    m = Run(run).metrics()
    assert m["grads/accepted"].tolist() == [4] * 10
    assert m["round"].tolist() == list(range(10))


def test_league_across_nodes(cluster):
    """A league (learner, league rank, actors) on 3 nodes."""
    p, run = train(cluster, "league", 4, ["configs/league_kuhn.yaml", "env.num_envs=4", "algo.hidden=16",
                                          "train.max_updates=6", "output.progress_s=2", "runtime.timeout_s=30",
                                          "league.groups.0.snapshot_every=2", "league.eval_games=4"], timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    hosts = hosts_of(summary(run))
    assert len(set(hosts.values())) == 3, hosts


def test_exact_resume_across_nodes(cluster):
    """Stopped by a signal at update 3 and resumed to 6 on 3 nodes: the same parameters, bit for bit, as one
    uninterrupted run of 6 updates on the same nodes. (A run on one host is another sample: each node gives its
    learner the threads of its own cores, so the sums are ordered differently.)"""
    import numpy as np

    from launch import final_arrays

    # as tests/e2e/test_exact_resume.py: every unroll ends with its episodes; 2 learners on node01 and node02
    args = ["configs/test_tiny.yaml", "topology.learners=2", "env.num_envs=2", "algo.unroll_length=5",
            "env.kwargs.max_cycles=5", "algo.hidden=16", "algo.epochs=2", "algo.minibatches=2", "runtime.timeout_s=30",
            "output.checkpoint_every=1000", "train.total_env_steps=100000000", "train.max_updates=6"]
    p, whole = train(cluster, "resume-whole", 4, args)
    assert p.returncode == 0, p.stderr[-3000:]
    p, run = train(cluster, "resume", 4, args, env={"HPCMARL_INJECT_FAULT": "0:sigterm:3"})
    assert p.returncode == 75, p.stderr[-3000:]
    p, run = train(cluster, "resume", 4, args)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from" in p.stdout, p.stdout[-2000:]
    (want, a), (got, b) = final_arrays(whole), final_arrays(run)
    assert a["update"] == b["update"] == 6 and sorted(want) == sorted(got)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)


def test_resume_on_more_nodes_and_actors(cluster):
    """Stopped by a signal early with 2 ranks on node01 and node02, resumed with 5 ranks on all 3 nodes (3 actors more):
    the run continues from its checkpoint to update 6 and every actor file, old and new, is readable."""
    args = PPO + ["learner.backend=mpi", "train.max_updates=6", "train.total_env_steps=100000000"]
    p, run = train(cluster, "resize", 2, args, env={"HPCMARL_INJECT_FAULT": "0:sigterm:3"})
    assert p.returncode == 75, p.stderr[-3000:]
    p, run = train(cluster, "resize", 5, args)
    assert p.returncode == 0, p.stderr[-3000:]
    import re

    m = re.search(r"resumed from ckpt-\d+\.h5, update (\d+)", p.stdout)
    assert m and 0 < int(m.group(1)) < 6, p.stdout[-2000:]  # the stop came during update 3 or 4
    s = summary(run)
    assert s["updates"] == 6 and len(s["hosts"]) == 3, s
    assert len(s["trajectory_files"]) == 4, s["trajectory_files"]


# --------------------------------------------------------------------------------------------------
# node faults
# --------------------------------------------------------------------------------------------------
def start_train(c, name, np, args):
    """:func:`train_command` started in the background (its own session); returns (process, run directory)."""
    from launch import mpi_env

    cmd, run = train_command(c, name, np, args)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=mpi_env({"HOROVOD_LOG_LEVEL": "error"}), cwd=ROOT, start_new_session=True)
    return p, run


def wait_for_update(run, update, timeout):
    from hpcmarl.storage import list_checkpoints

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list_checkpoints(os.path.join(run, "checkpoints"))) >= update:
            return
        time.sleep(0.5)
    pytest.fail(f"the run did not write {update} checkpoints in {timeout}s")


@pytest.mark.parametrize("fault", ["freeze", "cut", "kill"])
def test_node_fault_ends_the_job_within_its_bound(cluster, fault):
    """Synchronous MAPPO on 3 nodes; every process of node03 (actors only) is frozen, its link cut, or killed once
    checkpoints are being written. The job (mpirun included) ends within 2 x timeout_s + 60 s of the fault with a
    line naming the waiting rank and what it waited for, non-zero, the newest checkpoint readable; the same command
    then resumes once the node is back."""
    from hpcmarl.storage import list_checkpoints, load_checkpoint

    from launch import kill_group

    timeout_s = 15
    args = ["configs/test_tiny.yaml", "learner.backend=mpi", "env.num_envs=2", "algo.hidden=16", "output.progress_s=2",
            f"runtime.timeout_s={timeout_s}", "output.checkpoint_every=2", "actors.step_delay_s=0.002",
            "train.max_updates=100000", "train.total_env_steps=100000000"]
    p, run = start_train(cluster, f"fault-{fault}", 6, args)  # node03 holds ranks 2 and 5: actors
    try:
        wait_for_update(run, 2, 120)
        t0 = time.monotonic()
        {"freeze": cluster.freeze, "cut": cluster.cut, "kill": cluster.kill}[fault]("node03")
        try:
            out, _ = p.communicate(timeout=2 * timeout_s + 60)
        except subprocess.TimeoutExpired:
            kill_group(p)
            out, _ = p.communicate()
            pytest.fail(f"mpirun still running {2 * timeout_s + 60}s after node03 was hit ({fault}):\n{out[-3000:]}")
        took = time.monotonic() - t0
    finally:
        cluster.reboot("node03")  # thawed, linked, what the fault left of the job killed, its slurmd started again
        if p.poll() is None:
            kill_group(p)
    print(f"{fault}: the job ended {took:.1f}s after the fault, exit {p.returncode}")
    assert p.returncode != 0, out[-3000:]
    if fault != "kill":  # a killed node's daemon is seen gone by mpirun itself; the others wait for a rank's bound
        assert "timed out after" in out and "node0" in out, out[-3000:]
    ckpts = list_checkpoints(os.path.join(run, "checkpoints"))
    arrays, attrs = load_checkpoint(ckpts[-1])
    assert arrays and attrs["update"] >= 2
    # the node is back: the same command resumes from that checkpoint
    p2, _ = train(cluster, f"fault-{fault}", 6, args[:-2] + [f"train.max_updates={attrs['update'] + 2}"])
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert f"resumed from {os.path.basename(ckpts[-1])}" in p2.stdout, p2.stdout[-2000:]


# --------------------------------------------------------------------------------------------------
# the tool itself
# --------------------------------------------------------------------------------------------------
def test_cluster_refuses_a_subnet_in_use_and_leaves_with_its_owner(cluster):
    tmp_path = os.path.join(cluster.state, "more")  # (not under /tmp: the tool refuses that)
    """A second cluster on the first one's subnet is refused with one line; a cluster whose owner process dies is
    removed by its keeper (namespaces, links, cgroups), however the owner ended."""
    with pytest.raises(cluster_tool.ClusterError, match="is under /tmp"):
        cluster_tool.Cluster("/tmp/hpcmarl-cluster-x")
    with pytest.raises(cluster_tool.ClusterError, match="already in use"):
        cluster_tool.Cluster(os.path.join(tmp_path, "second"), nodes=2, subnet="10.213.48.0/24", tag="hcx").start()
    assert not os.path.exists(os.path.join(tmp_path, "second", "cluster.json"))
    owner = subprocess.Popen(["sleep", "3"])
    c = cluster_tool.Cluster(os.path.join(tmp_path, "owned"), nodes=2, subnet="10.213.49.0/24", tag="hco")
    c.start(owner=owner.pid)
    try:
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert "hco-node01" in netns and "hco-node02" in netns
        assert subprocess.run(c.node_command("node02", ["hostname"]), capture_output=True,
                              text=True).stdout.strip() == "node02"
        owner.kill()  # as a SIGKILLed test run would
        owner.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and c.running:
            time.sleep(0.2)
        assert not c.running
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        assert "hco-" not in netns and "hcobr0" not in links
        assert not os.path.exists("/sys/fs/cgroup/freezer/hpcmarl-cluster-hco")
    finally:
        c.stop()


# --------------------------------------------------------------------------------------------------
# Slurm across the nodes
# --------------------------------------------------------------------------------------------------
def sbatch(c, args, out):
    env = dict(c.slurm_env, PATH=os.path.dirname(PY) + os.pathsep + os.environ["PATH"], HPCMARL_ROOT=ROOT,
               HOROVOD_LOG_LEVEL="error", PYTHONUNBUFFERED="1")
    p = subprocess.run(["sbatch", "--parsable", f"--chdir={ROOT}", f"--output={out}/%j.out"] + args,
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().split(";")[0]


def job(c, jid):
    import re

    out = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True, env=c.slurm_env).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(c, jid, timeout, until=lambda info: info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED",
                                                                              "TIMEOUT", "NODE_FAIL")):
    deadline = time.monotonic() + timeout
    info = {}
    while time.monotonic() < deadline:
        info = job(c, jid)
        if until(info):
            return info
        time.sleep(1)
    return info


SLURM_TINY = ["configs/test_tiny.yaml", "env.num_envs=2", "algo.hidden=16", "output.progress_s=5",
              "runtime.timeout_s=15", "topology.learners=2"]


SLURM_FLOWS = {  # id: (arguments, learners, updates)
    "mappo": (SLURM_TINY, 2, 6),
    "matrace-drop": (MAT + ["algo.queue_full=drop", "runtime.timeout_s=15", "topology.learners=2"], 2, 6),
    "qmix": (QMX + ["runtime.timeout_s=15", "topology.learners=2"], 2, 6),
    "nigt-malenia": (NIG + ["algo.aggregation=malenia", "runtime.timeout_s=15", "topology.learners=2"], 2, 6),
    "league": (["configs/league_kuhn.yaml", "env.num_envs=4", "algo.hidden=16", "output.progress_s=5",
                "runtime.timeout_s=30", "league.groups.0.snapshot_every=2", "league.eval_games=4"], 1, 6),
}


@pytest.mark.parametrize("flow", list(SLURM_FLOWS))
def test_sbatch_spreads_a_run_over_three_nodes(cluster, flow):
    """``sbatch --nodes=3 slurm/train.sbatch`` in each flow: srun places 6 ranks on 3 nodes (cyclic: 2 learners on
    two nodes; the league's learner, league rank and actors on all three)."""
    args, learners, updates = SLURM_FLOWS[flow]
    out = os.path.join(cluster.shared, f"slurm-spread-{flow}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    jid = sbatch(cluster, ["--nodes=3", "--ntasks-per-node=2", "--distribution=cyclic", "slurm/train.sbatch"]
                 + args + [f"output.root={out}/runs", f"train.max_updates={updates}"], out)
    info = wait_job(cluster, jid, 240)
    log = open(os.path.join(out, f"{jid}.out")).read()
    assert info.get("JobState") == "COMPLETED", (info.get("JobState"), log[-3000:])
    runs = glob.glob(os.path.join(out, "runs", f"*-{jid}"))
    assert len(runs) == 1, os.listdir(os.path.join(out, "runs"))
    if flow == "league":
        s = summary(runs[0])
        assert s["updates"] >= updates and len(set(hosts_of(s).values())) == NODES, s
    else:
        check_run(runs[0], updates, learners)


def test_hetjob_puts_the_learners_on_one_node_and_the_actors_on_the_others(cluster):
    """``slurm/hetjob.sbatch`` as shipped, but for nodes without GPUs: component 0 (2 learners) on one node,
    component 1 (4 actors) on the two others; srun launches both as one MPI world and topology.learners comes from
    component 0's task count."""
    out = os.path.join(cluster.shared, "slurm-het")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(ROOT, "slurm", "hetjob.sbatch")) as f:
        text = f.read()
    lines = {"#SBATCH --nodes=1 --ntasks=2 --cpus-per-task=4 --gpus-per-task=1":
             "#SBATCH --nodes=1 --ntasks=2 --cpus-per-task=1",
             "#SBATCH --nodes=1 --ntasks=8 --cpus-per-task=1": "#SBATCH --nodes=2 --ntasks=4 --cpus-per-task=1"}
    for old, new in lines.items():
        assert old in text, old  # the shipped script still asks for what this test replaces
        text = text.replace(old, new)
    script = os.path.join(out, "hetjob-cpu.sbatch")
    with open(script, "w") as f:
        f.write(text)
    jid = sbatch(cluster, [script] + [a for a in SLURM_TINY if a != "topology.learners=2"]
                 + [f"output.root={out}/runs", "train.max_updates=6"], out)
    info = wait_job(cluster, jid, 180)
    log = open(os.path.join(out, f"{jid}.out")).read()
    assert info.get("JobState") == "COMPLETED", (info.get("JobState"), log[-3000:])
    run = os.path.join(out, "runs", f"tiny-{jid}")
    s = summary(run)
    assert s["updates"] >= 6, s
    hosts = hosts_of(s)
    learner_hosts = {hosts[r] for r in (0, 1)}
    actor_hosts = {hosts[r] for r in range(2, 6)}
    assert len(learner_hosts) == 1 and len(actor_hosts) == 2 and not learner_hosts & actor_hosts, hosts


REQUEUE_TOTAL = 120  # updates of the requeue tests: the fault lands at update 20 (2 checkpoints), the next incarnation
# trains the rest


def requeue_job(c, out):
    """A 3-node synchronous job under ``sbatch`` whose fault can land once 2 checkpoints are written: (job id, run
    directory)."""
    from hpcmarl.storage import list_checkpoints

    os.makedirs(out, exist_ok=True)
    jid = sbatch(c, ["--nodes=3", "--ntasks-per-node=2", "--distribution=cyclic", "slurm/train.sbatch"]
                 + SLURM_TINY + [f"output.root={out}/runs", f"train.max_updates={REQUEUE_TOTAL}",
                                 "output.checkpoint_every=10", "actors.step_delay_s=0.002",
                                 "train.total_env_steps=100000000"], out)
    run = os.path.join(out, "runs", f"tiny-{jid}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list_checkpoints(os.path.join(run, "checkpoints"))) < 2:
        time.sleep(0.5)
    assert list_checkpoints(os.path.join(run, "checkpoints")), job(c, jid)
    return jid, run


def assert_every_row_once(run):
    """/metrics holds every update once and /episodes the same rows per update, as an uninterrupted run."""
    import h5py
    import numpy as np

    with h5py.File(os.path.join(run, "run.h5"), "r") as f:
        np.testing.assert_array_equal(f["metrics/update"][()], np.arange(1, REQUEUE_TOTAL + 1))
        upd = f["episodes/update"][()]
    counts = np.unique(upd, return_counts=True)[1]
    assert len(set(counts.tolist())) == 1, np.unique(counts)  # every update the same number of episode rows


def test_sbatch_job_that_loses_a_node_is_requeued_and_resumes_without_a_lost_row(cluster):
    """Every process of node03 (slurmd included) frozen mid-run: the job exits 69 (a rank lost: the
    learner's bounded wait names the actor and its node, or a peer's connection failed); slurm/step.sh requeues it
    (not a config or code error), or Slurm does first, having marked the node down. Once Slurm holds the requeued job
    pending, the node is rebooted (its processes killed, /tmp emptied, slurmd restarted), the requeued incarnation
    resumes from the newest checkpoint
    and finishes: /metrics has every update exactly once and /episodes the same rows per update as an uninterrupted
    run."""
    out = os.path.join(cluster.shared, "slurm-requeue")
    jid, run = requeue_job(cluster, out)
    cluster.freeze("node03")
    try:  # the node stays down until Slurm has requeued the job and released it (no longer COMPLETING: it waited for
        # node03 to confirm the end of its part; a node back before that loses the request, resent 70 s later)
        info = wait_job(cluster, jid, 120, until=lambda i: int(i.get("Restarts") or 0) >= 1
                        and i.get("JobState") != "COMPLETING")
        assert int(info.get("Restarts") or 0) == 1 and info.get("JobState") == "PENDING", info
    finally:
        cluster.reboot("node03")
    info = wait_job(cluster, jid, 300)
    log = open(os.path.join(out, f"{jid}.out")).read()
    assert info.get("JobState") == "COMPLETED" and int(info["Restarts"]) == 1, (info.get("JobState"), log[-3000:])
    assert "exit 69: slurm/step.sh requeues the job, requeue 1 of runtime.max_requeues=3" in log, log[-3000:]
    # the first rank to give up names the rank it waited for and that rank's node: the learner waiting for node03's
    # actor, or an actor waiting for its learner (their bounds are equal: whichever began to wait first)
    assert re.search(r"waiting for .*rank \d+ \(node0[123]\)", log), log[-3000:]
    # who requeues: slurm/step.sh on the step's exit 69, or Slurm itself when it marks node03 down (SlurmdTimeout)
    # while srun still waits for node03's tasks; then step.sh is signalled and forwards it (a race: both happen)
    assert ("a rank was lost or did not answer (a node failure): requeueing job" in log
            or "DUE TO NODE FAILURE" in log), log[-3000:]
    assert "resumed from ckpt-" in log, log[-3000:]
    assert_every_row_once(run)


@pytest.fixture
def spare_cluster(cluster):
    """4 nodes beside the module's cluster (a 3-node job has a spare), removed after the test."""
    with fresh_cluster("/var/tmp/hpcmarl-test-cluster-spare", 4, "10.213.49.0/24", "hcs") as c:
        yield c


def test_sbatch_job_that_loses_its_batch_host_is_requeued_on_a_spare_node(spare_cluster):
    """Every process of node01 killed mid-run: the batch host of a 3-node job (the batch script, srun, the lead
    learner), left down, with node04 spare. Slurm marks node01 down and requeues the job itself; the new incarnation
    runs on node02-node04, takes over its dead predecessor's run lock, resumes from the newest checkpoint and
    finishes with every row once."""
    c = spare_cluster
    out = os.path.join(c.shared, "slurm-requeue")
    jid, run = requeue_job(c, out)
    info = job(c, jid)
    assert (info.get("NodeList"), info.get("BatchHost")) == ("node[01-03]", "node01"), info
    c.kill("node01")
    info = wait_job(c, jid, 300)
    log = open(os.path.join(out, f"{jid}.out")).read()
    assert (info.get("JobState"), info.get("Restarts"), info.get("NodeList")) == ("COMPLETED", "1", "node[02-04]"), \
        (info, log[-3000:])
    assert "took over the stale lock" in log and "resumed from ckpt-" in log, log[-3000:]
    assert_every_row_once(run)


def test_slow_and_cap_a_node(cluster):
    """``slow NODE 4``: a CPU-bound loop on that node takes about 4x its wall time elsewhere (the whole node gets a
    quarter of one core); ``cap NODE RATE`` puts a tbf qdisc on both ends of its link; both are lifted again."""
    spin = [PY, "-c", "import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
            "import sys; sys.stdout.write(str(time.perf_counter()))"]

    def wall(node):
        t0 = time.perf_counter()
        subprocess.run(cluster.node_command(node, spin), check=True, capture_output=True, timeout=60)
        return time.perf_counter() - t0

    cluster.slow("node02", 4)
    try:
        slow, fast = wall("node02"), wall("node01")
    finally:
        cluster.slow("node02", 1)
    assert slow > 2.0 * fast and slow > 1.0, (slow, fast)
    assert wall("node02") < 0.6 * slow
    cluster.cap("node02", "100mbit")
    try:
        inside = subprocess.run(cluster.node_command("node02", ["tc", "qdisc", "show", "dev", "eth0"]),
                                capture_output=True, text=True).stdout
        outside = subprocess.run(["tc", "qdisc", "show", "dev", cluster.veth("node02")], capture_output=True,
                                 text=True).stdout
        assert "tbf" in inside and "100Mbit" in inside and "tbf" in outside, (inside, outside)
    finally:
        cluster.cap("node02", "0")
    assert "tbf" not in subprocess.run(["tc", "qdisc", "show", "dev", cluster.veth("node02")], capture_output=True,
                                       text=True).stdout
