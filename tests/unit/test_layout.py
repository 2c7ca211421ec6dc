"""The package's architecture as data: no import cycles inside hpcmarl/, MPI only below the entry point's roles."""
import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "hpcmarl")


def modules():
    """``{module name: (module-level hpcmarl imports, every import)}`` parsed with ast (nothing is imported)."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            name = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
            tree = ast.parse(open(path).read())
            top, every = set(), set()
            for node in ast.walk(tree):
                found = set()
                if isinstance(node, ast.Import):
                    found = {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                every |= found
                if node in tree.body:
                    top |= found
            out[name] = (top, every)
    names = set(out)
    return {m: ({i for i in top if i in names}, every) for m, (top, every) in out.items()}


def import_cycles(graph) -> list:
    """Every cycle found by a depth-first walk of ``{module: imported hpcmarl modules}``."""
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """No cycles in the import graph, counting imports inside functions too: a function-level import that closes a
    cycle is a hidden dependency the module layout does not show."""
    mods = modules()
    graph = {m: {i for i in every if i in mods} - {m} for m, (_, every) in mods.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


MAX_LINES = 450


def test_no_module_over_450_lines():
    """One concern per module: a file that grows past 450 lines holds several; split it before it grows."""
    long = []
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f)) as fh:
                    n = sum(1 for _ in fh)
                if n > MAX_LINES:
                    long.append(f"{os.path.relpath(os.path.join(dirpath, f), ROOT)} ({n} lines)")
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(long)


def imports_of(prefix: str) -> dict:
    """``{module: every import}`` of the modules named ``prefix`` or below it (function-level imports included)."""
    return {m: every for m, (_, every) in modules().items() if m == prefix or m.startswith(prefix + ".")}


SHELL_PREFIXES = ("mpi4py", "horovod", "hpcmarl.roles", "hpcmarl.launch", "hpcmarl.cli", "hpcmarl.comm.collective")


def shell_imports(every) -> list:
    return sorted(i for i in every if i.startswith(SHELL_PREFIXES))


def test_sizing_and_actor_construction_import_no_shell():
    """The sizing model and actor construction run without MPI and without the role shells (the profiler builds
    actors in a single process), so neither may import them, not even inside a function."""
    checked = {**imports_of("hpcmarl.sizing"), **imports_of("hpcmarl.actors")}
    assert "hpcmarl.sizing.kernel" in checked and "hpcmarl.actors" in checked
    bad = {m: shell_imports(every) for m, every in checked.items() if shell_imports(every)}
    assert not bad, bad


def test_the_off_policy_replay_is_shared():
    """The episode stitcher and replay serve any value-based plug-in: they know nothing of QMIX."""
    every = imports_of("hpcmarl.algos.offpolicy")["hpcmarl.algos.offpolicy"]
    assert not [i for i in every if i.startswith("hpcmarl.algos.qmix")]


def test_mpi_and_horovod_stay_in_the_shells():
    """Algorithms, envs, league logic, storage and analysis never import MPI or Horovod
    (docs/development/design.md#mpi-stays-in-the-shells)."""
    shells = ("hpcmarl.launch", "hpcmarl.cli", "hpcmarl.comm.", "hpcmarl.roles.")
    bad = {m: sorted(i for i in every if i.split(".")[0] in ("mpi4py", "horovod"))
           for m, (_, every) in modules().items() if not (m + ".").startswith(shells) and m not in shells}
    assert not {m: v for m, v in bad.items() if v}


# lower layers never import higher ones, not even inside a function: {module or package: packages it may not import}
NO_UPWARD = {
    "hpcmarl.envs": ("hpcmarl.algos", "hpcmarl.league", "hpcmarl.analysis", "hpcmarl.roles", "hpcmarl.sizing"),
    "hpcmarl.models": ("hpcmarl.algos", "hpcmarl.league", "hpcmarl.analysis", "hpcmarl.roles"),
    "hpcmarl.storage": ("hpcmarl.algos", "hpcmarl.league", "hpcmarl.analysis", "hpcmarl.roles"),
    "hpcmarl.typedconfig": ("hpcmarl.",),
    "hpcmarl.trust": ("hpcmarl.",),
    "hpcmarl.preflight": ("hpcmarl.analysis",),
}


def upward_imports(mods) -> dict:
    """``{module: [imports NO_UPWARD forbids it]}`` over ``{module: (top, every import)}``; and every production
    module that imports :mod:`hpcmarl.testing` (the test envs are registered by the tests, not by hpcmarl)."""
    bad = {}
    for m, (_, every) in mods.items():
        banned = [b for layer, bans in NO_UPWARD.items() if m == layer or m.startswith(layer + ".") for b in bans]
        if m != "hpcmarl.testing":
            banned.append("hpcmarl.testing")
        prefixes = [b if b.endswith(".") else b + "." for b in banned]
        found = sorted(i for i in every if i in banned or i.startswith(tuple(prefixes)))
        if found:
            bad[m] = found
    return bad


def test_the_upward_scan_finds_upward_imports():
    mods = {"hpcmarl.envs.x": (set(), {"hpcmarl.algos.base", "numpy"}), "hpcmarl.trust": (set(), {"hpcmarl.config"}),
            "hpcmarl.algos.y": (set(), {"hpcmarl.testing"}), "hpcmarl.testing": (set(), {"hpcmarl.envs.registry"})}
    assert upward_imports(mods) == {"hpcmarl.envs.x": ["hpcmarl.algos.base"], "hpcmarl.trust": ["hpcmarl.config"],
                                    "hpcmarl.algos.y": ["hpcmarl.testing"]}


def test_no_upward_imports():
    """Envs, models and storage know nothing of algorithms, leagues or analysis; the config types and the trust
    check import nothing of hpcmarl; pre-flight does not reach into analysis; no production module imports the
    test envs (``hpcmarl.testing``, which tests and a run's ``plugins`` import) and the registry does not name them."""
    from hpcmarl.envs.registry import BUILTIN_ENVS, REGISTRY

    assert not upward_imports(modules())
    assert not [n for n in BUILTIN_ENVS if REGISTRY[n].factory.startswith("hpcmarl.testing:")]


def calls_of(names):
    """``{module: sorted attribute/function names from ``names`` it calls}`` over hpcmarl/ (ast)."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                tree = ast.parse(open(os.path.join(dirpath, f)).read())
                found = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
                         for n in ast.walk(tree) if isinstance(n, ast.Call)} & set(names)
                if found:
                    out[os.path.relpath(os.path.join(dirpath, f), ROOT)] = sorted(found)
    return out


def test_one_learner_loop():
    """Resume, the stop vote, preemption, checkpoints and shutdown are written once (roles/loop.py); the flows
    plug into it, and the synchronous flow reaches the league through hooks (no league state in its module)."""
    skeleton = ("load_checkpoint", "vote", "preempted", "final_checkpoint_due", "checkpoint_due", "finish", "advance")
    where = calls_of(skeleton)
    loop = os.path.join("roles", "loop.py")
    assert set(where.get(loop, ())) == set(skeleton)
    others = {m: v for m, v in where.items() if m.startswith("roles" + os.sep) and m != loop}
    # the league rank reads its own state from a checkpoint; no other role shell repeats the skeleton
    assert others in ({}, {os.path.join("roles", "league.py"): ["load_checkpoint"]}), others
    tree = ast.parse(open(os.path.join(ROOT, "roles", "rollouts.py")).read())
    flow = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RolloutFlow")
    names = {n.id for n in ast.walk(flow) if isinstance(n, ast.Name)} | {n.attr for n in ast.walk(flow)
                                                                         if isinstance(n, ast.Attribute)}
    assert not [n for n in names if "league" in n.lower()], "league conditionals in the synchronous learner"


def test_one_actor_loop():
    """An actor rank's life (start-up agreement, the learner's hello, the goodbye) is written once
    (roles/actor_work.py: run_actor); each flow's role module hands it its ActorWork and repeats none of it."""
    where = calls_of(("send_bye", "recv_control", "run_actor"))
    work = os.path.join("roles", "actor_work.py")
    assert set(where.get(work, ())) == {"send_bye", "recv_control"}, where
    flows = {os.path.join("roles", f) for f in ("rollouts.py", "async_rollouts.py", "gradients.py")}
    assert {m for m, v in where.items() if v == ["run_actor"]} == flows, where
    assert set(where) == flows | {work}, where


def test_faults_are_acted_out_by_the_loops_only():
    """A test's injected fault (hpcmarl/faults.py) is parsed and bound per rank by the launcher (``ctx.faults``) and
    acted out only by the three loops: the learner's (roles/loop.py), the actor's (roles/actor_work.py) and the
    league rank's; no other module imports it or reaches for the hook."""
    importers = {m for m, (_, every) in modules().items() if "hpcmarl.faults" in every}
    assert importers == {"hpcmarl.launch"}, importers
    users = set()
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py") and f != "faults.py":
                tree = ast.parse(open(os.path.join(dirpath, f)).read())
                if any(isinstance(n, ast.Attribute) and n.attr == "faults" for n in ast.walk(tree)):
                    users.add(os.path.relpath(os.path.join(dirpath, f), ROOT))
    assert users == {"launch.py"} | {os.path.join("roles", f) for f in ("loop.py", "actor_work.py", "league.py")}, users


BUILTIN_ALGORITHMS = ("mappo", "ippo", "qmix", "vdn", "matrace", "nigt")


def algorithm_names_in(source: str) -> list:
    """``(line, name)`` of every string constant in ``source`` that equals a built-in algorithm's name. Only exact
    equality counts: a docstring or comment that mentions MAPPO is prose (never equal to a bare name), while
    ``algo == "qmix"``, ``name in ("ippo", "mappo")`` or a default ``"mappo"`` are the core deciding by name."""
    return [(n.lineno, n.value) for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in BUILTIN_ALGORITHMS]


def test_the_scan_finds_names_and_leaves_prose():
    assert algorithm_names_in('if algo.name in ("qmix", "vdn"):\n    pass\n') == [(1, "qmix"), (1, "vdn")]
    assert algorithm_names_in('"""Like mappo, but local."""\nx = f"{n} is not mappo"\n') == []


def test_only_the_algorithm_registry_names_algorithms():
    """Outside hpcmarl/algos/ the core asks an algorithm's registry entry what it can do (league, overlap, action
    kinds, critic) and never tests its name: no string constant there equals a built-in algorithm's name."""
    from hpcmarl.algos import base

    builtins = {n for n, a in base.ALGORITHMS.items() if str(a.config).startswith("hpcmarl.algos.")}
    assert builtins == set(BUILTIN_ALGORITHMS)  # the list above follows the registry's built-ins
    hits = []
    for dirpath, _, files in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel == "algos" or rel.startswith("algos" + os.sep):
            continue
        for f in sorted(files):
            if f.endswith(".py"):
                with open(os.path.join(dirpath, f)) as fh:
                    hits += [f"{os.path.join(rel, f)}:{line}: {name!r}" for line, name in algorithm_names_in(fh.read())]
    assert not hits, "algorithm names outside hpcmarl/algos/ (ask the registry entry instead): " + "; ".join(hits)


def compared_names(source: str, names) -> list:
    """``(line, name)`` of every string constant among ``names`` that a comparison tests (``x == "gradients"``,
    ``kind in ("rennala", "malenia")``, ``!=``, ``not in``): the code deciding by a name. Declarations (a default, a
    registration's argument) and prose are not comparisons."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left] + node.comparators:
                consts = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                hits += [(c.lineno, c.value) for c in consts
                         if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in names]
    return hits


def test_the_comparison_scan_finds_tests_and_leaves_declarations():
    names = {"gradients", "rennala"}
    assert compared_names('if f != "gradients" or k in ("rennala", "x"):\n    pass\n', names) == [
        (1, "gradients"), (1, "rennala")]
    assert compared_names('flow: str = "gradients"\nregister("rennala")\n"""gradients"""\n', names) == []


def test_flows_and_aggregation_rules_are_asked_not_named():
    """No module but a flow's or a rule's own registry (hpcmarl/flows.py, hpcmarl/algos/aggregation.py) tests a
    built-in flow's or aggregation rule's name, in hpcmarl/ or tools/: the core asks the registered object
    (capabilities, quota, closing rule, sizing model), so a plug-in's flow or rule is served like a built-in.
    tools/bench_aggregation.py is the one exception: it compares the rules by name (Rennala and Malenia against
    the synchronous allreduce, the seed paper's claim)."""
    from hpcmarl import flows
    from hpcmarl.algos import aggregation

    names = set(flows.FLOWS) | set(aggregation.RULES)
    assert {"rollouts", "rollouts_async", "gradients", "rennala", "malenia", "allreduce"} <= names
    own = {os.path.join(ROOT, "flows.py"), os.path.join(ROOT, "algos", "aggregation.py"),
           os.path.join(os.path.dirname(ROOT), "tools", "bench_aggregation.py")}
    hits = []
    for top in (ROOT, os.path.join(os.path.dirname(ROOT), "tools")):
        for dirpath, _, files in os.walk(top):
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                if f.endswith(".py") and path not in own:
                    with open(path) as fh:
                        hits += [f"{os.path.relpath(path, os.path.dirname(ROOT))}:{line}: {name!r}"
                                 for line, name in compared_names(fh.read(), names)]
    assert not hits, "flow or rule names tested outside their registries (ask the object): " + "; ".join(hits)


def test_no_context_below_the_role_shells():
    """The launch context (communicators, layout, run directory, mutable run state) stops at the role shells:
    compute modules (actors, samplers, algorithms, evaluation, sizing) take plain values, an actor an ActorPlan
    (docs/development/design.md). No function outside hpcmarl/roles/ and hpcmarl/launch.py has a ``ctx`` parameter."""
    hits = []
    for dirpath, _, files in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        if rel == "roles":
            continue
        for f in sorted(files):
            if f.endswith(".py") and not (rel == "." and f == "launch.py"):
                tree = ast.parse(open(os.path.join(dirpath, f)).read())
                hits += [f"{os.path.join(rel, f)}:{n.lineno}: {n.name}" for n in ast.walk(tree)
                         if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                         and "ctx" in [a.arg for a in n.args.args + n.args.kwonlyargs]]
    assert not hits, "functions taking the launch context outside the role shells: " + "; ".join(hits)
