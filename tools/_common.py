"""Helpers shared by the benchmark scripts in tools/ (launching runs, reading their outputs, recording results)."""
import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_steps(text: str) -> int:
    """An env-step count as benchmarks take it: 250000, 500k, 1m, 1.5m."""
    m = re.fullmatch(r"([\d.]+)([km]?)", text.strip().lower())
    if not m:
        raise SystemExit(f"bad env-step budget {text!r} (e.g. 500k, 1m, 250000)")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2)])


def parse_arm_spec(text: str):
    """A custom arm as benchmarks take it, ``label=config.yaml[@ranks][:key=value,...]`` -> ``(label, config, ranks
    or None, [overrides])``."""
    label, _, rest = text.partition("=")
    spec, _, overrides = rest.partition(":")
    config, _, ranks = spec.partition("@")
    if not label or not config:
        raise SystemExit(f"arm {text!r} is not label=config.yaml[@ranks][:key=value,...]")
    return label, config, int(ranks) if ranks else None, [o for o in overrides.split(",") if o]


def launch(np_, config, overrides, timeout, log_path=None, cluster=None, nodes=0, env=None):
    """Run ``hpcmarl train`` under mpirun (or directly for one rank) with a hard timeout; with ``cluster`` (a
    ``tools/cluster.py`` Cluster), across its first ``nodes`` simulated nodes, ranks round robin over them; ``env``:
    variables to set for the run (on the local node)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1", PYTHONUNBUFFERED="1",
               HOROVOD_LOG_LEVEL="error", **(env or {}))
    cmd = [sys.executable, "-m", "hpcmarl.cli", "train", config] + list(overrides)
    if cluster is not None:
        cmd = cluster.mpirun_command(np_, cmd, nodes=nodes, forward=("PYTHONUNBUFFERED", "HOROVOD_LOG_LEVEL"))
    elif np_ > 1:
        cmd = [shutil.which("mpirun") or "mpirun", "-n", str(np_), "--bind-to", "none"] + cmd
    t0 = time.monotonic()
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    out = open(log_path, "w") if log_path else subprocess.DEVNULL
    try:
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout,
                           start_new_session=True)
    finally:
        if log_path:
            out.close()
    if p.returncode != 0:
        tail = open(log_path).read()[-3000:] if log_path else ""
        raise SystemExit(f"run failed (exit {p.returncode}): {' '.join(cmd)}\n{tail}")
    return time.monotonic() - t0


def trained_steps(run_dir):
    """The env steps a run directory's ``run.h5`` has logged (-1: no run there yet)."""
    from hpcmarl.storage import Run

    if not os.path.exists(os.path.join(run_dir, "run.h5")):
        return -1
    steps = Run(run_dir).metrics().get("env_steps")
    return int(steps[-1]) if steps is not None and len(steps) else 0


def random_return(name, episodes):
    """Mean return (summed over agents) of uniformly random actions over ``episodes`` episodes."""
    from hpcmarl.envs import make_parallel_env

    env = make_parallel_env(name)
    total = 0.0
    for ep in range(episodes):
        env.reset(seed=10_000 + ep)
        while env.agents:
            _, rew, _, _, _ = env.step({a: env.action_space(a).sample() for a in env.agents})
            total += sum(rew.values())
    return total / episodes


# held-out evaluation seeds: no config or benchmark setting is tuned on them; headline numbers come from them
EVAL_SEEDS = (1000, 1001, 1002)


def seed_list(text: str) -> list:
    """``"1000,1001"`` -> ``[1000, 1001]`` (argparse type of a ``--seeds`` option); a bad list is one line."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer seeds, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def timed_run_parser(description, out, budget_s=600.0, ranks=4, windows=5):
    """Arguments of a benchmark that trains one config for a wall-clock budget and reports it in time windows."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--budget-s", type=float, default=budget_s, help="training wall-clock seconds")
    ap.add_argument("--ranks", type=int, default=ranks)
    ap.add_argument("--windows", type=int, default=windows, help="report in this many equal parts of the run")
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", out))
    ap.add_argument("--skip-train", action="store_true", help="report the run already in --out")
    return ap


def train_timed(args, config):
    """Train ``configs/<config>`` for ``args.budget_s`` seconds into ``args.out`` (unless ``--skip-train``)."""
    if args.skip_train:
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    t = launch(args.ranks, os.path.join(ROOT, "configs", config),
               [f"run_dir={args.out}", f"train.max_wall_s={args.budget_s}", "train.total_env_steps=1000000000",
                "--fresh"],
               timeout=args.budget_s + 600, log_path=args.out + ".log")
    print(f"trained {args.budget_s:.0f}s ({t:.0f}s with startup); log {args.out}.log", flush=True)


# --------------------------------------------------------------------------------------------------
# results kept as data: results/<script>--<hash of the arguments>.json (tools/render_results.py renders them)
# --------------------------------------------------------------------------------------------------
RECORD_SCHEMA = 1
# what a record's numbers depend on: a commit whose files here equal HEAD's measured the code of HEAD
CODE_PATHS = ("hpcmarl", "configs", "tools", "setup.py", ":(exclude)tools/render_results.py")
ENV_SPS_ENV = "simple_spread_v3"  # the raw env speed every record carries (machines compared by it)


_ABS_PATH = re.compile(r"(?<![\w:/.~…-])(/(?:[\w.+-]+/)+[\w.+-]*)")


def portable(text) -> str:
    """``text`` without the machine's paths: an absolute path (a record's reference virtualenv, checkout or output
    folder on the machine it ran on) becomes a placeholder naming what it is: ``…/epymarl/bin/python`` ->
    ``<epymarl venv>/bin/python``, any other but the system's (``/usr/…``) -> ``<…/its last two components>``."""
    def sub(m):
        parts = [x for x in m.group(1).split("/") if x]
        if parts[0] in ("usr", "bin", "etc", "dev", "proc"):  # the system's own, the same everywhere
            return m.group(1)
        if "bin" in parts[1:] and parts[-1].startswith("python"):
            i = len(parts) - 1 - parts[::-1].index("bin")
            return f"<{parts[i - 1]} venv>/" + "/".join(parts[i:])
        return "<…/" + "/".join(parts[-2:]) + ">"

    return _ABS_PATH.sub(sub, str(text))


def normalize_args(argv) -> list:
    """A benchmark's arguments as its record keys them: ``--opt=value`` split into ``--opt value``, an absolute path
    inside the repository made relative to it and any other one a placeholder (:func:`portable`: the same record on
    any checkout and machine), ``--fresh`` left out (it redoes kept runs: the same record whether or not they were
    redone); nothing else changes."""
    out = []
    for a in map(str, argv):
        if a == "--fresh":
            continue
        parts = a.split("=", 1) if a.startswith("--") and "=" in a else [a]
        for p in parts:
            if os.path.isabs(p):
                p = os.path.relpath(p, ROOT) if (p + os.sep).startswith(ROOT + os.sep) else portable(p)
            out.append(p)
    return out


def record_key(script: str, args) -> str:
    """``<script>--<10 hex digits>``: the record's file name (without ``.json``), from the script's name and its
    normalized argument list. Re-running a benchmark with the same arguments writes a new record beside it
    (:func:`record_id`): nothing measured is lost or rewritten."""
    digest = hashlib.sha256(json.dumps(list(args), separators=(",", ":")).encode()).hexdigest()[:10]
    return f"{script}--{digest}"


def parse_result(line: str) -> dict:
    """``RESULT a=1 b=0.5 c=8/12`` -> ``{"a": 1, "b": 0.5, "c": "8/12"}`` (numbers where a value is one; ``nan`` and
    ``inf`` stay text: JSON has no such numbers)."""
    out = {}
    for tok in line.split()[1 if line.startswith("RESULT") else 0:]:
        k, _, v = tok.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                f = float(v)
                out[k] = f if math.isfinite(f) else v
            except ValueError:
                out[k] = v
    return out


def plain(x):
    """``x`` as plain JSON: numpy scalars and arrays to numbers and lists, tuple keys joined with ``/``, non-finite
    floats to ``None``."""
    if isinstance(x, dict):
        return {("/".join(map(str, k)) if isinstance(k, tuple) else str(k)): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if hasattr(x, "tolist"):  # numpy array or scalar
        return plain(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


def _git(*args) -> str:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout.strip() if p.returncode == 0 else ""


def env_speed(seconds: float = 2.0, name: str = ENV_SPS_ENV, checks: bool = False) -> float:
    """Env steps/s of ``name`` as hpcmarl makes it (:func:`hpcmarl.envs.make_parallel_env`; ``checks``: with
    PettingZoo's checking wrappers, as its package makes it), random actions, one env, this process, for ``seconds``:
    the machine's raw speed, so records from different machines can be compared."""
    from hpcmarl.envs import make_parallel_env

    env = make_parallel_env(name, checks=checks)
    env.reset(seed=0)
    spaces = {a: env.action_space(a) for a in env.possible_agents}
    for i, s in enumerate(spaces.values()):
        s.seed(i)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step({a: spaces[a].sample() for a in env.agents})
        n += 1
        if not env.agents:
            env.reset()
    return n / (time.perf_counter() - t0)


def machine() -> dict:
    """What the numbers were measured on (no host name): CPU model, cores, memory, OS, versions, raw env speed."""
    from importlib import metadata

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        mem = round(kib / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for pkg in ("torch", "numpy", "pettingzoo"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(), "usable_cores": usable,
            "memory_gib": mem, "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            **versions, "env_sps": round(env_speed(), 1),
            "env_sps_measure": f"{ENV_SPS_ENV} (hpcmarl.envs.make_parallel_env), random actions, one env, one "
                               f"process, 2 s, measured right after the benchmark"}


def record_id(script: str, args, out_dir: str = "") -> str:
    """The name (without ``.json``) the next record of ``script`` run with ``args`` gets in ``out_dir`` (default: the
    records' folder): :func:`record_key` for its first invocation, ``<key>-2``, ``<key>-3``, ... for later ones. A
    record is never overwritten; a benchmark names the image it draws after it."""
    out_dir = out_dir or _records_dir()
    key = record_key(os.path.splitext(os.path.basename(script))[0], normalize_args(args))
    n = 1
    while os.path.lexists(os.path.join(out_dir, (key if n == 1 else f"{key}-{n}") + ".json")):
        n += 1
    return key if n == 1 else f"{key}-{n}"


def _records_dir() -> str:
    return os.environ.get("HPCMARL_RESULTS_DIR") or os.path.join(ROOT, "results")


def record(script: str, argv, result, seeds=None, per_seed=None, medians=None, extra=None) -> str:
    """Write the JSON record of one benchmark invocation to a new file ``results/<record id>.json`` (see
    :func:`record_id`; ``HPCMARL_RESULTS_DIR`` writes elsewhere, ``HPCMARL_NO_RECORD=1`` writes nothing) and
    return its path. ``script``: the benchmark's ``__file__``; ``argv``: its arguments (``sys.argv[1:]``);
    ``result``: its ``RESULT`` line (or the fields as a dict); ``seeds``: the seeds, in the order of every per-seed
    list in ``per_seed`` (``{quantity: [value per seed]}``, nested dicts allowed); ``medians``: ``{quantity: median
    over seeds}``; ``extra``: anything else worth keeping (``{"tables": {name: {"columns": [...], "rows": [[...]]}}}``
    renders as tables). Each invocation writes a new file (:func:`record_id`): an earlier record is never rewritten.
    Also records the command, the git commit (``dirty``: the code in :data:`CODE_PATHS` differed
    from it), the date (UTC) and the machine (:func:`machine`). Prints the path to stderr (the RESULT line stays the
    last line of stdout)."""
    if os.environ.get("HPCMARL_NO_RECORD", "") not in ("", "0"):
        return ""
    name = os.path.splitext(os.path.basename(script))[0]
    args = normalize_args(argv)
    line = result if isinstance(result, str) else None
    commit = _git("rev-parse", "HEAD")
    rec = {
        "schema": RECORD_SCHEMA,
        "script": name,
        "args": args,
        "command": " ".join(["python", f"tools/{name}.py"] + [shlex.quote(a) for a in args]),
        "commit": commit or "unknown",
        # the code differs from the commit (what tools/render_results.py compares: hpcmarl/, configs/, tools/, setup.py)
        "dirty": bool(commit) and bool(_git("status", "--porcelain", "--", *CODE_PATHS)),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "result": plain(parse_result(line) if line is not None else result),
        "result_line": line,
        "seeds": plain(seeds),
        "per_seed": plain(per_seed),
        "medians": plain(medians),
        "extra": plain(extra),
    }
    out_dir = _records_dir()
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1, allow_nan=False)
        f.write("\n")
    try:
        while True:  # link, not rename: a record that appeared meanwhile is not overwritten either
            path = os.path.join(out_dir, record_id(name, args, out_dir) + ".json")
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                continue
    finally:
        os.unlink(tmp)
    print(f"recorded {os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path}", file=sys.stderr)
    return path
