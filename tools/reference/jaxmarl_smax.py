"""JaxMARL's own SMAX baselines, their configs unchanged but for the map, the seed and the budget, run by a Python
with jaxmarl, flax, optax, distrax, hydra-core, wandb and PyYAML (and flashbax for qmix): the SMAX reference of the
benchmarks in tools/.

    PYTHON tools/reference/jaxmarl_smax.py BASELINES ALG MAP ENV_STEPS SEED OUT.json
    PYTHON tools/reference/jaxmarl_smax.py BASELINES qmix MAP ENV_STEPS 0,1,2 OUT-s{seed}.json

``BASELINES``: a checkout's ``baselines`` directory. ``ALG``: ``mappo`` (``MAPPO/mappo_rnn_smax.py`` with
``config/mappo_homogenous_rnn_smax.yaml``), ``ippo`` (``IPPO/ippo_rnn_smax.py`` with ``config/ippo_rnn_smax.yaml``)
or ``qmix`` (``QLearning/qmix_rnn.py`` with ``config/config.yaml`` and ``config/alg/ql_rnn_smax.yaml``, as
``qmix_rnn.py +alg=ql_rnn_smax`` runs it). The baseline logs once per update through ``wandb.log``; here that is a
list instead, so nothing goes to W&B. Writes ``OUT.json``: ``{"env_steps": [...], "win_rate": [...], "return":
[...]}``, one point per update (its ``NUM_ENVS`` x ``NUM_STEPS`` env steps; ``env_steps`` counts those collected up
to the end of the update; as many updates as pass ENV_STEPS), as its W&B charts show: for mappo and ippo the win
rate and mean return of the episodes that ended in the update; for qmix its ``returned_won_episode`` and
``returned_episode_returns`` (each env copy's last finished episode, averaged over the update's steps and copies),
plus ``test_win_rate``, its greedy test win rate (``TEST_NUM_ENVS`` episodes every ``TEST_INTERVAL`` of training,
repeated in between).

For qmix, SEED may list seeds (OUT then names ``{seed}``): they train in one program, vmapped over their keys as its
``main()`` vmaps ``NUM_SEEDS`` keys, each seed's key the one a run of that seed alone gets, so each curve is that
run's (one compilation instead of one per seed). A line per 5% of the updates shows the progress; the curve so far
is written to ``OUT.part`` every 10 updates (a run stopped early leaves it) and OUT itself only at the end. On an
H200 three seeds of ``3m`` trained to 1M in 174 s, compilation included; on this project's 2-core CPU VM one QMIX
seed of ``3m`` takes about 18 s per update once it trains (489 updates per 1M: about 2.5 h; jax 0.4.35), and seeds
vmapped there hung in a LAPACK call of jaxlib 0.10.2's CPU backend (its two pool threads waiting on each other): run
one seed per process on a CPU.
"""
import copy
import importlib.util
import json
import os
import sys
import time
import types

import numpy as np

MAPPO_LOG = {"win_rate": "win_rate", "return": "returns"}  # OUT.json's key -> the key the baseline logs
# ALG -> (folder, script, its config files merged in order, what it logs, WANDB_MODE (qmix logs only when W&B is not
# disabled; wandb itself is replaced below), whether its env_step already counts the update's env steps)
SCRIPTS = {"mappo": ("MAPPO", "mappo_rnn_smax.py", ["mappo_homogenous_rnn_smax.yaml"], MAPPO_LOG, "disabled", False),
           "ippo": ("IPPO", "ippo_rnn_smax.py", ["ippo_rnn_smax.yaml"], MAPPO_LOG, "disabled", False),
           "qmix": ("QLearning", "qmix_rnn.py", ["config.yaml", "alg/ql_rnn_smax.yaml"],
                    {"win_rate": "returned_won_episode", "return": "returned_episode_returns",
                     "test_win_rate": "test_returned_won_episode"}, "offline", True)}


def main():
    baselines, alg, map_name, steps, seeds, out = sys.argv[1:7]
    if alg not in SCRIPTS:
        raise SystemExit(f"ALG {alg!r}: one of {', '.join(SCRIPTS)}")
    seeds = [int(s) for s in seeds.split(",")]
    if len(seeds) > 1 and (alg != "qmix" or "{seed}" not in out or len(set(seeds)) < len(seeds)):
        raise SystemExit("several SEEDs: ALG qmix only, each seed once, and OUT must name {seed}")
    folder, script, config_files, logged, wandb_mode, counted = SCRIPTS[alg]
    import jax
    import yaml

    # plain YAML: the one interpolation there (ippo's W&B entity) is never used; TOTAL_TIMESTEPS (1e7, a string to
    # YAML) is set below
    config = {}
    for name in config_files:
        config.update(yaml.safe_load(open(os.path.join(baselines, folder, "config", name))))
    batch = config["NUM_ENVS"] * config["NUM_STEPS"]
    updates = -(-int(steps) // batch)  # enough updates to pass ENV_STEPS
    config.update(MAP_NAME=map_name, TOTAL_TIMESTEPS=updates * batch, SEED=seeds[0], WANDB_MODE=wandb_mode,
                  WANDB_LOG_ALL_SEEDS=True)
    spec = importlib.util.spec_from_file_location(f"jaxmarl_{alg}_smax", os.path.join(baselines, folder, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keys = {"env_steps": "env_step", **logged}
    # the run's key per seed: mappo's main() trains on PRNGKey(SEED), ippo's and qmix's on the first of
    # jax.random.split(PRNGKey(SEED), NUM_SEEDS) (NUM_SEEDS: 1; qmix vmaps over them)
    run_keys = [jax.random.PRNGKey(s) if alg == "mappo"
                else jax.random.split(jax.random.PRNGKey(s), int(config["NUM_SEEDS"]))[0] for s in seeds]
    # qmix's callback names its seed (the first word of its key) in the keys it logs with WANDB_LOG_ALL_SEEDS
    seed_of = {f"rng{int(np.asarray(k).reshape(-1)[0])}/": s for k, s in zip(run_keys, seeds)}
    points = {s: [] for s in seeds}
    t0 = time.monotonic()

    def path(s):
        return out.replace("{seed}", str(s))

    def write(s):
        pts = sorted(points[s], key=lambda p: p["env_steps"])
        curve = {k: [p[k] for p in pts] for k in keys}
        curve["env_steps"] = [int(x) + (0 if counted else batch) for x in curve["env_steps"]]
        with open(path(s) + ".part", "w") as f:
            json.dump(curve, f)

    def log(d):
        s = next((seed_of[k[:k.index("/") + 1]] for k in d if k.startswith("rng")), seeds[0])
        points[s].append({k: float(np.asarray(d[v]).reshape(-1)[0]) for k, v in keys.items()})
        n = len(points[s])
        if n % 10 == 0:
            write(s)
        if n % max(1, updates // 20) == 0:
            print(f"seed {s}: update {n}/{updates}, {points[s][-1]['env_steps']:,.0f} env steps, win rate "
                  f"{points[s][-1]['win_rate']:.3f}, {time.monotonic() - t0:.0f}s", flush=True)

    module.wandb = types.SimpleNamespace(log=log)
    if alg != "qmix":
        jax.block_until_ready(jax.jit(module.make_train(config))(run_keys[0]))
    else:  # vmapped, as its main()
        env, _ = module.env_from_config(copy.deepcopy(config))
        jax.block_until_ready(jax.jit(jax.vmap(module.make_train(config, env)))(jax.numpy.stack(run_keys)))
    for s in seeds:  # the whole curve, then under its name
        write(s)
        os.replace(path(s) + ".part", path(s))


if __name__ == "__main__":
    main()
