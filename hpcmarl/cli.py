"""``hpcmarl`` command line: train, validate, inspect, plot, export, compare, index, watch, league, match,
exploitability, evaluate.

Exit status: 0 success, 1 a failure during the run, 2 bad input (config, topology, paths, files).

Nothing a file names is imported: ``evaluate``, ``exploitability`` and ``match`` build an unregistered env (or import
a stored config's plug-ins) only when ``--env-import MODULE:CALLABLE`` / ``--plugins MODULE`` name it (hpcmarl.trust);
``train``/``validate`` allow what the person's own config file names.
"""
from __future__ import annotations

import argparse
import json
import sys


def _config(args):
    from hpcmarl.config import load_config

    return load_config(args.config, args.overrides)


def cmd_train(args) -> int:
    cfg = _config(args)  # ConfigError -> exit 2 before any MPI work
    from hpcmarl.launch import abort_on_exception, run_training

    return abort_on_exception(run_training, cfg, fresh=args.fresh, argv=sys.argv, run_dir=cfg.resolved_run_dir)


def cmd_validate(args) -> int:
    from hpcmarl.envs import describe_env
    from hpcmarl.launch import layout_for

    cfg = _config(args)
    layout = layout_for(cfg, args.np)
    print(f"config OK: env {cfg.env.name}, algo {cfg.algo.name}, run_dir {cfg.resolved_run_dir}")
    if args.probe_env:
        for line in describe_env(cfg.env.name, cfg.env.kwargs, cfg.policy_map):
            print(f"  {line}")
    print(layout.describe())
    if args.predict or args.save_profile:
        from hpcmarl.sizing.report import validate_predict

        return validate_predict(cfg, layout, args)
    return 0


def cmd_inspect(args) -> int:
    from hpcmarl.analysis.summary import run_summary
    from hpcmarl.storage import Run

    s = run_summary(Run(args.run_dir), window=args.window)
    if args.json:
        print(json.dumps(s, indent=None))
        return 0
    print(f"run        {s['run_dir']}  (schema {s['schema_version']}, env {s['env']}, algo {s['algo']})")
    print(f"progress   {s['updates']} updates, {s['env_steps']:,} env steps, {s['episodes']:,} episodes, "
          f"{s['wall_time_s']:.1f}s wall")
    hosts = s.get("hosts") or {}
    if hosts:
        shown = "; ".join(f"{h}: " + ", ".join(f"{r} {role}" for r, role in ranks[:6])
                          + (" …" if len(ranks) > 6 else "") for h, ranks in list(hosts.items())[:8])
        print(f"hosts      {len(hosts)} ({shown}{'; …' if len(hosts) > 8 else ''})")
    for g, r in s["groups"].items():
        if r["episodes"]:
            print(f"group {g:<10} return first {r['return_first']:.2f}  last {r['return_last']:.2f}  "
                  f"best {r['return_best']:.2f}  ({r['episodes']} episodes)")
    if "win_rate" in s:
        w = s["win_rate"]
        print(f"win rate   first {w['first']:.3f}  last {w['last']:.3f}  ({w['episodes']} battles)")
    for g, e in s.get("eval", {}).items():
        if e["evaluations"]:
            absolute = ("" if e["absolute"] is None
                        else f"  absolute {e['absolute']:.2f} ({e['absolute_episodes']} episodes)")
            print(f"eval {g:<11} last {e['last']:.2f} at {e['last_env_steps']:,}  best {e['best']:.2f} at "
                  f"{e['best_env_steps']:,} env steps{absolute}  ({e['evaluations']} evaluations)")
    for role, phases in s.get("timings_mean_s", {}).items():
        if phases:
            unit = "update" if role == "learner" else "unroll"
            print(f"{role:<10} " + "  ".join(f"{k} {v * 1e3:.1f}" for k, v in phases.items()) + f"  (ms per {unit})")
    if "lag" in s:
        print(f"lag        mean {s['lag']['mean']:.2f}  max {s['lag']['max']:.0f} policy versions")
    if "rounds" in s:
        r = s["rounds"]
        print(f"rounds     {r['rounds']} (gradient flow), round time mean {r['round_time_mean_s'] * 1e3:.1f} ms, "
              f"median {r['round_time_median_s'] * 1e3:.1f} ms; {r['abandoned']} trajectories abandoned")
        for a in r["accepted"]:
            print(f"gradients  {a}: accepted {r['accepted'][a]}, dropped {r['dropped'][a]}")
    if "value" in s:
        v = s["value"]
        print(f"value      epsilon {v['epsilon']:.3f}  sparsity {v['sparsity']:.3f}  "
              f"replay {v['replay_episodes']} episodes  "
              f"train FLOPs {v['train_flops']:.3e} (per learner)  "
              f"inference {v['inference_flops_per_step']:.3e} FLOPs/step")
    if "league" in s:
        from hpcmarl.league.server import member_name

        names = list(s["groups"])
        live = "  ".join(f"{member_name(m, names, {})} Elo {r['elo']:.0f}"
                         for m, r in sorted(s["league"]["ratings"].items(), reverse=True))
        print(f"league     {s['league']['pool']} pool member(s); {live}  (hpcmarl league RUN for ratings and payoff)")
    if s.get("env_errors"):
        print(f"env errors {s['env_errors']} env copies re-created after an exception (their episodes discarded)")
    if "discarded_episodes" in s:
        print(f"discarded  {s['discarded_episodes']} episode(s) cut off by stops")
    mb = {k: v / 2 ** 20 for k, v in s.get("file_sizes_bytes", {}).items()}
    print("files      " + "  ".join(f"{k} {v:.1f} MiB" for k, v in mb.items()))
    print(f"checkpoints {len(s['checkpoints'])}: " + ", ".join(p.split('/')[-1] for p in s["checkpoints"]))
    for p, n in s["trajectory_files"].items():
        print(f"trajectory {p}: {n} episodes")
    return 0


def cmd_evaluate(args) -> int:
    from hpcmarl.analysis.evaluate import evaluate

    if args.episodes < 1:
        raise ValueError("--episodes must be >= 1")
    if args.num_envs < 1:
        raise ValueError("--num-envs must be >= 1")
    r = evaluate(args.checkpoint, episodes=args.episodes, seed=args.seed, greedy=args.greedy,
                 num_envs=args.num_envs, render_gif=args.render_gif)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['checkpoint']} (update {r['update']}, {r['env']}, {r['algo']}): {r['episodes']} episodes, "
          f"seed {r['seed']}, {'greedy' if r['greedy'] else 'sampled'} actions, mean length {r['length_mean']:.1f}")
    for g, v in r["groups"].items():
        print(f"group {g:<10} return {v['return_mean']:.2f} +- {v['return_std']:.2f}")
    if r["win_rate"] == r["win_rate"]:  # (not NaN: battles)
        print(f"win rate   {r['win_rate']:.3f}")
    if r.get("gif"):
        print(f"wrote {r['gif']}")
    return 0


def cmd_plot(args) -> int:
    from hpcmarl.analysis.plot import plot_runs

    print(f"wrote {plot_runs(args.runs, args.out, metric=args.metric, x=args.x, smooth=args.smooth)}")
    return 0


def cmd_export(args) -> int:
    from hpcmarl.analysis.export import export_run

    r = export_run(args.run_dir, args.out, trajectories=not args.no_trajectories, chunk_episodes=args.chunk_episodes)
    print(json.dumps(r, indent=1, default=str))
    if "tensorboard" in r["skipped"]:
        print(f"hpcmarl: note: no TensorBoard files: {r['skipped']['tensorboard']}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from hpcmarl.analysis.compare import compare_runs, format_compare

    if args.by:
        from hpcmarl.analysis import aggregate as agg

        try:
            agg.load_rliable()
        except ImportError:
            print(agg.MISSING, file=sys.stderr)
            return 2
        r = agg.aggregate_runs(args.runs, by=args.by, group=args.group, window=args.window,
                               at_env_steps=args.at_env_steps, reps=args.reps, seed=args.seed)
        files = agg.write_outputs(r, args.out) if args.out else []
        if args.json:
            print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}))
        else:
            print(agg.format_aggregate(r) + "".join(f"wrote {p}\n" for p in files), end="")
        return 0
    r = compare_runs(args.runs)
    print(json.dumps(r, default=str) if args.json else format_compare(r))
    return 0


def cmd_index(args) -> int:
    from hpcmarl.analysis.trajectories import agent_stats
    from hpcmarl.analysis.trajectory_index import build_index

    print(f"wrote {build_index(args.run_dir, args.out)}")
    if args.stats:
        print(json.dumps(agent_stats(args.run_dir), indent=1, default=str))
    return 0


def cmd_watch(args) -> int:
    from hpcmarl.analysis.watch import watch

    try:
        watch(args.run_dir, interval=args.interval, count=args.count, plot=args.plot)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_league(args) -> int:
    from hpcmarl.analysis.league import format_league, league_summary

    s = league_summary(args.run_dir)
    print(json.dumps(s, default=str) if args.json else format_league(s, args.members))
    return 0


def cmd_match(args) -> int:
    from hpcmarl.league.match import match

    r = match(args.a, args.b, args.episodes, env=args.env, group_a=args.group_a, group_b=args.group_b, seed=args.seed,
              sampled=args.sampled, opening=args.opening, mixture=args.mixture)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['a']} vs {r['b']} on {r['env']}: {r['episodes']} games (seats alternated, seed {r['seed']}, "
          f"{'sampled' if r['sampled'] else 'greedy'} policies"
          + (f", run directories play their pool's {r['mixture']} mixture" if "mixture" in r else "")
          + (f", {r['opening']} random opening moves" if r["opening"] else "") + ")")
    print(f"win {r['wins']}  draw {r['draws']}  loss {r['losses']}  "
          f"(win rate {r['win_rate']:.3f}, score {r['score']:.3f})")
    return 0


def cmd_exploitability(args) -> int:
    from hpcmarl.analysis.exploitability import exploitability, format_exploitability

    r = exploitability(args.path, None if args.mixture == "all" else (args.mixture,), args.group)
    print(json.dumps(r) if args.json else "\n".join(format_exploitability(r)))
    return 0


def _import_flags(p: argparse.ArgumentParser, plugins: bool = False) -> None:
    """``--env-import``/``--plugins``: the code a command that builds envs (or algorithms) from a file may import; a
    file's own ``env``/``plugins`` strings are never imported unless named here (hpcmarl.trust)."""
    p.add_argument("--env-import", action="append", default=[], metavar="MODULE:CALLABLE",
                   help="allow the file's unregistered env (or module-qualified gymnasium task) MODULE:CALLABLE to be "
                        "imported and called (repeatable); nothing a file names is imported otherwise")
    if plugins:
        p.add_argument("--plugins", action="append", default=[], metavar="MODULE",
                       help="allow the stored config's plug-in MODULE to be imported (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpcmarl",
                                description="Multi-agent RL on HPC clusters (MPI actors + Horovod learners).")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train (run under mpirun/srun; one rank = serial mode)")
    t.add_argument("config", help="YAML config file (see configs/)")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. algo.lr=3e-4")
    t.add_argument("--fresh", action="store_true", help="start fresh even if the run directory holds a run")
    t.set_defaults(fn=cmd_train)

    v = sub.add_parser("validate", help="check a config and print the rank layout (no MPI needed)")
    v.add_argument("config", help="YAML config file (see configs/)")
    v.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. algo.lr=3e-4")
    v.add_argument("--np", type=int, required=True, help="number of MPI ranks the job will have")
    v.add_argument("--probe-env", action="store_true", help="also build the environment and print its groups")
    v.add_argument("--predict", action="store_true",
                   help="predict env steps/s, learner ingress, policy lag and the bottleneck of this layout from costs "
                        "measured on this node (hpcmarl.sizing; see slurm/README.md)")
    v.add_argument("--profile", help="--predict from a node profile saved earlier (instead of measuring here)")
    v.add_argument("--save-profile", metavar="FILE", help="measure this node and save its profile (JSON) to FILE")
    v.add_argument("--ranks-per-node", type=int, default=0, help="--predict: ranks per node (0 = all on one node)")
    v.add_argument("--cores-per-node", type=int, default=0, help="--predict: cores per node (0 = this node's)")
    v.add_argument("--net-gbps", type=float, default=100.0, help="--predict: network bandwidth between nodes, Gb/s")
    v.add_argument("--net-latency-us", type=float, default=2.0, help="--predict: network latency between nodes, us")
    v.add_argument("--distribution", choices=["block", "cyclic"], default="block", help="--predict: ranks on nodes in "
                   "blocks (Slurm's default) or round robin (srun --distribution=cyclic, mpirun --map-by node)")
    v.set_defaults(fn=cmd_validate)

    i = sub.add_parser("inspect", help="summarise a run directory")
    i.add_argument("run_dir", help="run directory")
    i.add_argument("--json", action="store_true", help="one JSON object on stdout")
    i.add_argument("--window", type=int, default=500, help="episodes averaged for the returns (default 500)")
    i.set_defaults(fn=cmd_inspect)
    pl = sub.add_parser("plot", help="learning curves (or any metric) of one or more runs to PNG/SVG")
    pl.add_argument("runs", nargs="+", help="run directories (seeds of one config are drawn as a band)")
    pl.add_argument("-o", "--out", required=True, help="output file, .png or .svg")
    pl.add_argument("--metric", help="a /metrics series (e.g. agent/entropy, sps), 'lag', 'league' or "
                                     "'exploitability'; default: returns")
    pl.add_argument("--x", choices=["env_steps", "wall_time"], default="env_steps", help="x axis")
    pl.add_argument("--smooth", type=int, default=0, help="moving-average window in episodes (0 = automatic)")
    pl.set_defaults(fn=cmd_plot)

    ex = sub.add_parser("export", help="metrics/episodes to CSV (+Parquet), trajectories to .npz, marl-eval JSON, "
                                           "TensorBoard (with the tracking extra)")
    ex.add_argument("run_dir", help="run directory")
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--no-trajectories", action="store_true", help="export metrics and episodes only")
    ex.add_argument("--chunk-episodes", type=int, default=1000, help="episodes per .npz file")
    ex.set_defaults(fn=cmd_export)

    co = sub.add_parser("compare", help="several runs side by side: config differences and final metrics")
    co.add_argument("runs", nargs="+", help="run directories")
    co.add_argument("--json", action="store_true", help="one JSON object on stdout")
    co.add_argument("--by", metavar="KEY", help="group the runs by a dotted config key (algo = algo.name, env.name, "
                    "...) and aggregate one score per run with rliable (IQM, mean, median with bootstrap CIs, "
                    "performance profiles, probability of improvement); needs the .[stats] extra")
    co.add_argument("--group", help="--by: the policy group scored (default: each run's first)")
    co.add_argument("--window", type=int, help="--by: training episodes averaged when a run has no evaluation "
                    "(default: the run's output.episode_window)")
    co.add_argument("--at-env-steps", type=int, metavar="S", help="--by: score the training window ending at S "
                    "env steps (evaluations ignored)")
    co.add_argument("--reps", type=int, default=2000, help="--by: bootstrap replications")
    co.add_argument("--seed", type=int, default=0, help="--by: bootstrap seed")
    co.add_argument("--out", metavar="DIR", help="--by: write compare.md, compare.json, marl_eval.json (all runs) "
                    "and the PNG plots there")
    co.set_defaults(fn=cmd_compare)

    ix = sub.add_parser("index", help="one HDF5 virtual-dataset view over all actor trajectory files")
    ix.add_argument("run_dir", help="run directory")
    ix.add_argument("-o", "--out", help="index file (default RUN/trajectories/index.h5)")
    ix.add_argument("--stats", action="store_true", help="also print per-agent statistics")
    ix.set_defaults(fn=cmd_index)

    wa = sub.add_parser("watch", help="follow a running (or finished) run: summary every few seconds (SWMR)")
    wa.add_argument("run_dir", help="run directory")
    wa.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    wa.add_argument("--count", type=int, default=0, help="refreshes (0 = until Ctrl-C)")
    wa.add_argument("--plot", help="also refresh a learning-curve PNG at this path")
    wa.set_defaults(fn=cmd_watch)

    lg = sub.add_parser("league", help="a league run's pool, ratings and payoff matrix")
    lg.add_argument("run_dir", help="run directory of a league run")
    lg.add_argument("--members", type=int, default=12, help="newest pool members shown in the payoff matrix")
    lg.add_argument("--json", action="store_true", help="one JSON object on stdout (everything)")
    lg.set_defaults(fn=cmd_league)

    mt = sub.add_parser("match", help="play two saved policies (or baselines) against each other: win/draw/loss")
    mt.add_argument("a", help="pool snapshot (RUN/pool/*.h5), league checkpoint, league run directory (its pool's "
                                 "--mixture), or random | lookahead | charge")
    mt.add_argument("b", help="the opponent, same forms")
    mt.add_argument("--episodes", type=int, default=200, help="games to play")
    mt.add_argument("--env", help="the game, when both players are baselines")
    mt.add_argument("--group-a", help="learner group of a checkpoint holding several policies")
    mt.add_argument("--group-b", help="the same for b")
    mt.add_argument("--seed", type=int, default=0, help="game i resets with seed + i")
    mt.add_argument("--sampled", action="store_true", help="sample the policies' actions instead of the most likely")
    mt.add_argument("--opening", type=int, default=0, help="random legal moves at the start of every game")
    mt.add_argument("--mixture", choices=["meta_nash", "uniform"], default="meta_nash",
                    help="what a run directory plays: one pool snapshot per game, drawn from this mixture")
    mt.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _import_flags(mt)
    mt.set_defaults(fn=cmd_match)

    xp = sub.add_parser("exploitability",
                        help="exact NashConv of league policies on OpenSpiel games (Kuhn, Leduc poker)")
    xp.add_argument("path", help="a run directory, a pool snapshot (RUN/pool/*.h5) or a league checkpoint")
    xp.add_argument("--mixture", choices=["all", "latest", "uniform", "meta_nash"], default="all",
                    help="the newest policy, the uniform or the meta-Nash mixture over the pool (default: all; "
                         "a single file: latest)")
    xp.add_argument("--group", help="the learner group (default: the first)")
    xp.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _import_flags(xp)
    xp.set_defaults(fn=cmd_exploitability)

    e = sub.add_parser("evaluate", help="play a checkpoint's policies on its environment (no MPI)")
    e.add_argument("checkpoint", help="checkpoints/ckpt-*.h5 of a run, or a run directory (its newest checkpoint)")
    e.add_argument("--episodes", type=int, default=100, help="episodes to play (>= 1)")
    e.add_argument("--seed", type=int, default=12345, help="fixed seed, so evaluations are comparable")
    e.add_argument("--greedy", action="store_true", help="most likely actions instead of sampled ones")
    e.add_argument("--num-envs", type=int, default=8, help="env copies stepped together (a run's eval.num_envs)")
    e.add_argument("--render-gif", metavar="OUT.gif", help="also render the first episode to a GIF (rgb_array envs)")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _import_flags(e, plugins=True)
    e.set_defaults(fn=cmd_evaluate)
    return p


def _launcher_rank() -> int:
    import os

    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def main(argv=None) -> int:
    from hpcmarl import stopsignals

    # first (`python -m hpcmarl.cli`; the hpcmarl command did it already): a signal at start-up still ends in 75
    stopsignals.install_for(sys.argv[1:] if argv is None else argv)
    from hpcmarl.envs import EnvError
    from hpcmarl.storage import StorageError
    from hpcmarl.topology import TopologyError
    from hpcmarl.typedconfig import ConfigError

    parser = build_parser()
    # overrides may come after options (`train cfg --fresh k=v`); argparse leaves those over
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        from hpcmarl import trust

        trust.allow_cli(getattr(args, "env_import", ()), getattr(args, "plugins", ()))  # before anything is read
        code = args.fn(args)
    except (ConfigError, TopologyError, StorageError, EnvError, ValueError, RecursionError) as e:
        if _launcher_rank() == 0:  # under mpirun every rank fails the same way; one line is enough
            why = "an input is nested too deeply to be read" if isinstance(e, RecursionError) else e  # a backstop
            print(f"hpcmarl: error: {why}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
