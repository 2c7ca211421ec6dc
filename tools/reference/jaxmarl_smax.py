"""JaxMARL's own SMAX baselines, their configs unchanged but for the map, the seed and the budget, run by a Python
with jaxmarl, flax, optax, distrax, hydra-core, wandb and PyYAML (the SMAX reference of the benchmarks in tools/).

    PYTHON tools/reference/jaxmarl_smax.py BASELINES ALG MAP ENV_STEPS SEED OUT.json

``BASELINES``: a checkout's ``baselines`` directory. ``ALG``: ``mappo`` (``MAPPO/mappo_rnn_smax.py`` with
``config/mappo_homogenous_rnn_smax.yaml``) or ``ippo`` (``IPPO/ippo_rnn_smax.py`` with ``config/ippo_rnn_smax.yaml``).
The baseline logs once per update through ``wandb.log``; here that is a list instead, so nothing goes to W&B.
Writes ``OUT.json``: ``{"env_steps": [...], "win_rate": [...], "return": [...]}``, one point per update (its
``NUM_ENVS`` x ``NUM_STEPS`` env steps; ``env_steps`` counts those collected up to the end of the update; as many
updates as pass ENV_STEPS): the win rate and mean return of the episodes that ended in it, as its W&B charts show.
"""
import importlib.util
import json
import os
import sys
import types

SCRIPTS = {"mappo": ("MAPPO", "mappo_rnn_smax.py", "mappo_homogenous_rnn_smax.yaml"),
           "ippo": ("IPPO", "ippo_rnn_smax.py", "ippo_rnn_smax.yaml")}


def main():
    baselines, alg, map_name, steps, seed, out = sys.argv[1:7]
    if alg not in SCRIPTS:
        raise SystemExit(f"ALG {alg!r}: one of {', '.join(SCRIPTS)}")
    folder, script, config_file = SCRIPTS[alg]
    import jax
    import yaml

    # plain YAML: the one interpolation there (ippo's W&B entity) is never used; TOTAL_TIMESTEPS (1e7, a string to
    # YAML) is set below
    config = yaml.safe_load(open(os.path.join(baselines, folder, "config", config_file)))
    batch = config["NUM_ENVS"] * config["NUM_STEPS"]
    updates = -(-int(steps) // batch)  # enough updates to pass ENV_STEPS
    config.update(MAP_NAME=map_name, TOTAL_TIMESTEPS=updates * batch, SEED=int(seed), WANDB_MODE="disabled")
    spec = importlib.util.spec_from_file_location(f"jaxmarl_{alg}_smax", os.path.join(baselines, folder, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    points = []
    module.wandb = types.SimpleNamespace(log=lambda d: points.append({k: float(d[k]) for k in
                                                                      ("env_step", "win_rate", "returns")}))
    key = jax.random.PRNGKey(int(seed))
    if alg == "ippo":  # its main() trains on the first key of jax.random.split(key, NUM_SEEDS) (NUM_SEEDS: 1)
        key = jax.random.split(key, 1)[0]
    jax.block_until_ready(jax.jit(module.make_train(config))(key))
    points.sort(key=lambda p: p["env_step"])
    with open(out, "w") as f:
        json.dump({"env_steps": [int(p["env_step"]) + batch for p in points],
                   "win_rate": [p["win_rate"] for p in points], "return": [p["returns"] for p in points]}, f)


if __name__ == "__main__":
    main()
