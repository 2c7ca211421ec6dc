"""Compiled learner updates (``torch.compile``, ``learner.compile``) and the one place Inductor's cache may live.

Inductor writes generated C++/Triton code and the shared objects built from it into its cache and loads them in later
runs: whoever can write there can run code in the user's next job. By default that is ``/tmp/torchinductor_<user>``,
which any local user can create first. hpcmarl points Inductor at ``$XDG_CACHE_HOME/hpcmarl/inductor`` (default
``~/.cache/hpcmarl/inductor``), a directory it creates with mode 0700, and checks before every use that it, its
parent and everything in it are owned by the user, are not group- or world-writable and are no symbolic links. Where
that does not hold (a tampered or foreign-owned cache), the run compiles in a new private temporary directory with
the caches off (nothing is loaded from disk, everything is compiled afresh) and says so in one line. The path never
comes from a file, and a config or environment variable cannot move it elsewhere (``TORCHINDUCTOR_CACHE_DIR`` is
overridden).
"""
from __future__ import annotations

import atexit
import os
import shutil
import stat
import sys
import tempfile
from typing import Callable, Optional

# where the cache lives: a subdirectory of XDG's per-user cache directory
CACHE_PARENT, CACHE_NAME = "hpcmarl", "inductor"
# learner.compile: auto compiles a run with at least this many gradient steps (compilation costs about 20-30 s with
# an empty cache and 3 s with a warm one on the 2-core VM; the compiled PPO step saves 2-3 ms per gradient step there:
# docs/development/benchmarks.md#compiled-updates)
AUTO_MIN_GRAD_STEPS = 10_000
# ... and no stop at a target return (a time-to-target run: make demo reaches -60 in under 300 updates) nor within
# this many seconds of wall time
AUTO_MIN_WALL_S = 600.0


def cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), CACHE_PARENT, CACHE_NAME)


def unsafe(path: str, uid: Optional[int] = None) -> Optional[str]:
    """Why ``path`` (a directory) may not hold Inductor's cache, or None where it may: it, its parent and every entry
    below it must be the user's own (``uid``, default the effective uid), neither group- nor world-writable, and no
    symbolic link."""
    uid = os.geteuid() if uid is None else uid

    def bad(p: str) -> Optional[str]:
        try:
            st = os.lstat(p)
        except FileNotFoundError:  # gone since listed: another rank's compiler renamed or removed a temporary file
            return None
        except OSError as e:
            return f"{p}: {e.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return f"{p} is a symbolic link"
        if st.st_uid != uid:
            return f"{p} is owned by uid {st.st_uid}, not {uid}"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{p} is writable by its group or by others (mode {stat.S_IMODE(st.st_mode):o})"
        return None

    for p in (os.path.dirname(path), path):
        why = bad(p)
        if why:
            return why
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            why = bad(os.path.join(root, name))
            if why:
                return why
    return None


def _private_cache() -> Optional[str]:
    """Create (mode 0700) and check the user's cache directory; its path, or None after saying why not."""
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    except OSError as e:
        why = f"cannot create {path}: {e.strerror}"
    else:
        why = unsafe(path)
    if why is None:
        return path
    print(f"hpcmarl: warning: compile cache not used ({why}): compiling without a cache", file=sys.stderr,
          flush=True)
    return None


_CONFIGURED = []


def configure_cache() -> bool:
    """Point Inductor at the checked cache (once per process; before the first compilation); False where it is
    unsafe and compilation goes on uncached in a private temporary directory, removed at exit."""
    if _CONFIGURED:
        return _CONFIGURED[0]
    path = _private_cache()
    safe = path is not None
    if not safe:
        path = tempfile.mkdtemp(prefix="hpcmarl-inductor-")  # mode 0700, new
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = False
        functorch_config.enable_autograd_cache = False
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ.pop("TRITON_CACHE_DIR", None)  # Triton's cache goes below Inductor's
    _CONFIGURED.append(safe)
    return _CONFIGURED[0]


def wanted(setting, grad_steps: int, may_end_early: bool = False) -> bool:
    """``learner.compile`` resolved for a run of ``grad_steps`` gradient steps (``auto``: long runs only, and not a
    run that ``may_end_early``: one that stops at a target return or within 10 minutes of wall time; never where the
    environment sets ``HPCMARL_NO_COMPILE=1``, e.g. a site whose nodes have no C++ compiler, or the test suite,
    whose long runs are stopped after seconds)."""
    if setting == "auto":
        return grad_steps >= AUTO_MIN_GRAD_STEPS and not may_end_early and os.environ.get("HPCMARL_NO_COMPILE") != "1"
    return bool(setting)


def compiled(fn: Callable, what: str) -> Callable:
    """``fn`` compiled by ``torch.compile`` (static shapes), falling back to ``fn`` itself for good, with one line,
    where compilation fails (e.g. no C++ compiler on the node)."""
    import torch

    configure_cache()
    fast = torch.compile(fn, dynamic=False)
    state = {"fn": fast}

    def call(*args, **kwargs):
        if state["fn"] is fn:
            return fn(*args, **kwargs)
        try:
            return state["fn"](*args, **kwargs)
        except (RuntimeError, OSError) as e:  # torch._dynamo's and Inductor's failures are RuntimeErrors; an
            # error of fn's own comes back from the eager call below
            state["fn"] = fn
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"hpcmarl: warning: compiling {what} failed ({type(e).__name__}: {msg[:200]}): running it "
                  f"uncompiled", file=sys.stderr, flush=True)
            return fn(*args, **kwargs)

    return call


def prepare(learner, cfg, actors: int, say: Callable[[str], None] = lambda msg: None) -> bool:
    """Compile ``learner``'s update where ``learner.compile`` wants it and the learner has a compiled form
    (``compile_update``); ``actors``: the ranks whose unrolls make one update (gradient steps are estimated from
    ``train.total_env_steps``, or ``train.max_updates`` where that comes first; ``train.target_return`` and a short
    ``train.max_wall_s`` may end it early)."""
    hook = getattr(learner, "compile_update", None)
    if hook is None or not first_update_compiles(cfg, actors) or not hook():
        return False
    say(f"[hpcmarl] learner update compiled (learner.compile={str(cfg.learner.compile).lower()}, about "
        f"{grad_steps(cfg, actors)[0]:,} gradient steps; the first update compiles it)")
    return True


def grad_steps(cfg, actors: int):
    """``(gradient steps, may end early)`` of a rollout-flow run: updates from ``train.total_env_steps`` (or
    ``train.max_updates`` where that comes first) x ``algo.epochs`` x ``algo.minibatches``; it may end early with
    ``train.target_return`` or a ``train.max_wall_s`` under 10 minutes."""
    a, t = cfg.algo, cfg.train
    updates = -(-t.total_env_steps // (a.unroll_length * cfg.env.num_envs * max(1, actors)))
    if t.max_updates:
        updates = min(updates, t.max_updates)
    return (updates * getattr(a, "epochs", 1) * getattr(a, "minibatches", 1),
            t.target_return is not None or 0 < t.max_wall_s < AUTO_MIN_WALL_S)


def first_update_compiles(cfg, actors: int) -> bool:
    """Whether the learners may compile their update during this session's first update, from the config alone,
    so that every rank can tell (learners, actors, the league rank): ``learner.compile`` wants it for a flow that
    sends unrolls. The waits that span that update get the start-up bound (``runtime.startup_timeout_s``) instead
    of ``runtime.timeout_s``: compiling takes 10-60 s on a CPU, longer than a short ``timeout_s`` (where the
    algorithm's learner has no compiled form, that one wait is merely bounded more loosely)."""
    if cfg.learner.compile is False or not getattr(cfg.algo, "unroll_length", 0):
        return False
    return wanted(cfg.learner.compile, *grad_steps(cfg, actors))


def first_update_bound(cfg, actors: int) -> float:
    """The bound of a wait that spans the learners' first update: ``runtime.startup_timeout_s`` where they may
    compile it (:func:`first_update_compiles`; never below ``runtime.timeout_s``), else ``runtime.timeout_s``."""
    r = cfg.runtime
    return max(r.startup_timeout_s, r.timeout_s) if first_update_compiles(cfg, actors) else r.timeout_s
