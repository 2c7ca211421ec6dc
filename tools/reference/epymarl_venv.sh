#!/usr/bin/env bash
# Build a virtualenv for EPyMARL (https://github.com/uoe-agents/epymarl), the per-sample reference of
# tools/bench_sample_efficiency.py --epymarl. Usage: tools/reference/epymarl_venv.sh EPYMARL_CHECKOUT VENV
# It uses this machine's torch (2.13) through hpcmarl's .venv and pins what EPyMARL's PettingZoo wrapper needs:
# pettingzoo 1.25 (the last with pettingzoo.mpe), sacred, setuptools<81; smaclite gets an empty module (EPyMARL
# imports it unconditionally). Then:
#   .venv/bin/python tools/bench_sample_efficiency.py --arms mappo --window 2000 \
#       --epymarl EPYMARL_CHECKOUT/src --epymarl-python VENV/bin/python --ref ''
set -euo pipefail
src=${1:?EPyMARL checkout}; venv=${2:?virtualenv to create}
root=$(cd "$(dirname "$0")/../.." && pwd)
test -f "$src/src/main.py" || { echo "$src/src/main.py: not an EPyMARL checkout" >&2; exit 2; }
"$root/.venv/bin/python" -m venv "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/hpcmarl_venv.pth"
"$venv/bin/pip" install -q "pettingzoo==1.25.0" sacred "setuptools<81"
mkdir -p "$site/smaclite" && touch "$site/smaclite/__init__.py"
"$venv/bin/python" -c 'import torch, pettingzoo.mpe, sacred; print("EPyMARL venv ready: torch", torch.__version__)'
