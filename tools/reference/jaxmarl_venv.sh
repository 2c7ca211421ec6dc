#!/usr/bin/env bash
# Build a virtualenv for JaxMARL's own baselines (https://github.com/FLAIROx/JaxMARL, baselines/), the reference of
# tools/bench_batched_e2e.py --jaxmarl-python and tools/bench_sample_efficiency.py --jaxmarl-python.
# Usage: tools/reference/jaxmarl_venv.sh JAXMARL_CHECKOUT VENV
# A venv of its own, not on top of hpcmarl's .venv: the baselines' distrax imports tensorflow-probability, which does
# not import with the jax that .[jax] installs (0.10), so this pins an older jax and what fits it (jax 0.4.35, flax
# 0.10.2, optax 0.2.4, chex 0.1.88, distrax 0.1.5, tensorflow-probability 0.25.0), then installs the checkout's
# jaxmarl package without its dependencies (checked with JaxMARL commit c793d09). Then:
#   .venv/bin/python tools/bench_batched_e2e.py --jaxmarl-baselines JAXMARL_CHECKOUT/baselines/IPPO \
#       --jaxmarl-python VENV/bin/python
set -euo pipefail
src=${1:?JaxMARL checkout}; venv=${2:?virtualenv to create}
test -f "$src/baselines/IPPO/ippo_ff_mpe.py" || { echo "$src/baselines/IPPO/ippo_ff_mpe.py: not a JaxMARL checkout" >&2; exit 2; }
python3 -m venv "$venv"
"$venv/bin/pip" install -q "jax[cpu]==0.4.35" "flax==0.10.2" "optax==0.2.4" "chex==0.1.88" "distrax==0.1.5" \
    "tensorflow-probability==0.25.0" hydra-core omegaconf wandb flashbax matplotlib safetensors jaxtyping gymnax tqdm \
    imageio
"$venv/bin/pip" install -q --no-deps "$src"
"$venv/bin/python" -c 'import jax, jaxmarl, distrax, flax, optax; print("JaxMARL venv ready: jax", jax.__version__)'
