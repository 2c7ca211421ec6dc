#!/usr/bin/env bash
# JaxMARL's own SMAX QMIX (tools/reference/jaxmarl_smax.py) on a machine with a CUDA GPU and JAX for it, whose Python
# lacks JaxMARL and the baselines' pure-Python dependencies: they come in a folder CARRY, made beside the reference
# virtualenv of tools/reference/jaxmarl_venv.sh (VENV) and a JaxMARL checkout (SRC):
#   mkdir -p CARRY/site CARRY/jm; cp -r SRC/jaxmarl SRC/baselines CARRY/jm/
#   cp -r VENV/lib/python3*/site-packages/{antlr4,omegaconf,hydra,flashbax,gymnax,gymnasium,farama_notifications} CARRY/site/
# plus CARRY/site/wandb/__init__.py, a stand-in whose log and init raise (jaxmarl_smax.py replaces the baseline's
# wandb.log with its own list, so W&B is never needed).
# Usage: tools/reference/jaxmarl_gpu.sh CARRY MAP ENV_STEPS SEEDS OUTDIR
# Writes OUTDIR/jaxmarl_qmix-MAP-s{seed}.json (the curves that tools/bench_sample_efficiency.py --reuse reads); a run
# stopped early leaves .part files there. The seeds train vmapped in one program (jaxmarl_smax.py says how).
set -euo pipefail
carry=${1:?CARRY}; map=${2:?MAP}; steps=${3:?ENV_STEPS}; seeds=${4:?SEEDS}; out=${5:?OUTDIR}
test -f "$carry/jm/baselines/QLearning/qmix_rnn.py" || { echo "$carry: no jm/baselines/QLearning/qmix_rnn.py" >&2; exit 2; }
export PYTHONPATH="$carry/site:$carry/jm${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
nvidia-smi -L || true
python3 -c 'import jax; print("jax", jax.__version__, jax.devices())'
exec python3 "$(dirname "$0")/jaxmarl_smax.py" "$carry/jm/baselines" qmix "$map" "$steps" "$seeds" \
    "$out/jaxmarl_qmix-$map-s{seed}.json"
