#!/usr/bin/env bash
# Build a virtualenv for BenchMARL (https://github.com/facebookresearch/BenchMARL), the continuous-action reference
# of tools/bench_sample_efficiency.py --benchmarl-python (and of tools/bench_batched_e2e.py --against benchmarl).
# Usage: tools/reference/benchmarl_venv.sh VENV
# It uses this machine's torch (2.13) and vmas through hpcmarl's .venv (make setup EXTRAS=vmas) and pins the
# versions the records were measured with: benchmarl 1.5.2, torchrl 0.11.1, tensordict 0.11.0 (and a torchvision
# that fits that torch). Then:
#   .venv/bin/python tools/bench_sample_efficiency.py --arms vmas_mappo --budgets 250k,500k,1m --ref '' \
#       --benchmarl-python VENV/bin/python
set -euo pipefail
venv=${1:?virtualenv to create}
root=$(cd "$(dirname "$0")/../.." && pwd)
"$root/.venv/bin/python" -c 'import torch, vmas' || { echo "hpcmarl's .venv needs vmas: make setup EXTRAS=vmas" >&2; exit 2; }
"$root/.venv/bin/python" -m venv "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/hpcmarl_venv.pth"
# torch stays .venv's: without the pin, benchmarl's torchvision would pull a newer torch into VENV
torch=$("$root/.venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
"$venv/bin/pip" install -q "benchmarl==1.5.2" "torchrl==0.11.1" "tensordict==0.11.0" "torch==$torch"
"$venv/bin/python" -c 'import torch, benchmarl, torchrl, vmas; print("BenchMARL venv ready: torch", torch.__version__)'
