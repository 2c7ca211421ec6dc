#!/usr/bin/env bash
# One-shot, idempotent environment setup for hpcmarl (called by `make demo` / `make test`).
#   1. Open MPI runtime + headers from apt when mpicc/mpirun are missing;
#   2. a virtualenv at .venv/ with torch==2.13.0 (CPU wheel) and the Python dependencies;
#   3. Horovod 0.28.1 built from its PyPI source with PyTorch + MPI support. The wheel is cached in
#      $HPCMARL_WHEEL_CACHE (default ~/.cache/hpcmarl/wheels) so fresh clones reuse it;
#   4. hpcmarl itself, editable, with the test extras and those EXTRAS names (built with the venv's setuptools:
#      --no-build-isolation; torch held at the version of step 2 by a constraint).
# EXTRAS: a comma list of setup.py extras to install too (`make setup EXTRAS=jax,vmas`: the batched simulators).
# A stamp file records the inputs and the extras installed; a second run with the same inputs (or with extras
# already installed) does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
CACHE=${HPCMARL_WHEEL_CACHE:-$HOME/.cache/hpcmarl/wheels}
HVD_VERSION=0.28.1
TORCH_VERSION=2.13.0
STAMP="$VENV/.hpcmarl-bootstrap"
want="$(cat setup.py pyproject.toml tools/bootstrap.sh | sha1sum | cut -c1-16)"
# EXTRAS normalised: sorted, unique, comma-separated; each one an extra of setup.py
EXTRAS="$(printf '%s' "${EXTRAS:-}" | tr ', ' '\n\n' | sed '/^$/d' | sort -u | paste -sd, -)"
for x in ${EXTRAS//,/ }; do
  if ! grep -q "^ *\"$x\": \[" setup.py; then
    echo "bootstrap: EXTRAS names $x, which is not an extra of setup.py" >&2; exit 2
  fi
done
# the stamp: line 1 the inputs' hash, line 2 the extras installed with them
have_hash="$(sed -n 1p "$STAMP" 2>/dev/null || true)"
have_extras="$(sed -n 2p "$STAMP" 2>/dev/null || true)"
missing=""
for x in ${EXTRAS//,/ }; do
  case ",$have_extras," in *",$x,"*) ;; *) missing="$missing $x";; esac
done
if [ "$have_hash" = "$want" ] && [ -z "$missing" ] && [ -x "$VENV/bin/hpcmarl" ]; then
  exit 0
fi
log() { printf '[bootstrap] %s\n' "$*"; }

# -- 1. system packages ---------------------------------------------------------------------
if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  log "installing Open MPI (openmpi-bin libopenmpi-dev) from apt"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
  if ! command -v apt-get >/dev/null; then
    echo "bootstrap: Open MPI is missing and this is not a Debian/Ubuntu system; install an MPI (mpicc, mpirun) and retry" >&2; exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi

# -- 2. virtualenv + python deps ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_i() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }
if ! "$VPY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION (CPU) first, so nothing pulls a CUDA build"
  pip_i "torch==$TORCH_VERSION"
fi
log "installing Python dependencies"
# (what Horovod's build imports; hpcmarl itself never unpickles anything)
pip_i wheel setuptools numpy cffi packaging psutil pyyaml cloudpickle

# -- 3. Horovod from source ----------------------------------------------------------------------
if ! "$VPY" -c "import horovod.torch as h; assert h.mpi_built()" 2>/dev/null; then
  mkdir -p "$CACHE"
  whl=$(ls "$CACHE"/horovod-$HVD_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "building Horovod $HVD_VERSION from PyPI source with PyTorch + MPI (a few minutes, once)"
    wrap=$(mktemp -d)
    # Horovod's CMake passes -std=c++14; torch 2.13 headers need C++17.
    cat > "$wrap/g++" <<'WRAP'
#!/usr/bin/env bash
args=()
for a in "$@"; do case "$a" in -std=c++11|-std=c++14) args+=(-std=c++17);; *) args+=("$a");; esac; done
exec /usr/bin/g++ "${args[@]}"
WRAP
    chmod +x "$wrap/g++"
    CXX="$wrap/g++" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 HOROVOD_CPU_OPERATIONS=MPI \
      MAKEFLAGS="-j$(nproc)" \
      "$VPY" -m pip wheel -q --no-build-isolation --no-deps --no-binary horovod -w "$CACHE" "horovod==$HVD_VERSION"
    rm -rf "$wrap"
    whl=$(ls "$CACHE"/horovod-$HVD_VERSION-*.whl | head -n1)
  fi
  log "installing $whl"
  pip_i --no-deps "$whl"
  "$VPY" -c "import horovod.torch as h; assert h.mpi_built(), 'Horovod built without MPI'"
fi

# -- 4. hpcmarl ---------------------------------------------------------------------------------
# extras installed before with these same inputs stay installed (and recorded): EXTRAS adds, never removes
if [ "$have_hash" = "$want" ]; then
  EXTRAS="$(printf '%s' "$have_extras,$EXTRAS" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
fi
log "installing hpcmarl (editable) with the extras test${EXTRAS:+,$EXTRAS}"
# torch stays the CPU build of step 2: a constraint file pins it (an extra that requires torch, such as vmas,
# is satisfied by it instead of pulling another build), and the check after the install says so if it moved
torch_before="$("$VPY" -c 'import torch; print(torch.__version__)')"
constraints=$(mktemp)
echo "torch==$TORCH_VERSION" > "$constraints"
# --no-build-isolation: build with the setuptools and wheel installed above; otherwise pip would download the
# pyproject.toml build requirements into a throw-away environment on every install.
pip_i --no-build-isolation -c "$constraints" -e ".[test${EXTRAS:+,$EXTRAS}]"
rm -f "$constraints"
torch_after="$("$VPY" -c 'import torch; print(torch.__version__)')"
if [ "$torch_after" != "$torch_before" ]; then
  echo "bootstrap: installing the extras ($EXTRAS) replaced torch $torch_before with $torch_after" >&2; exit 1
fi
# magent2 (battle_v4, league mode's two-team game) without its pygame-ce requirement: pygame-ce and pygame
# (which mpe2 renders with) install the same `pygame` package; magent2 only needs pygame to render.
pip_i --no-deps "magent2==0.3.4"
# marl-eval (the stats extra's reference reader of marl_eval.json) pins pandas==1.4.4, which does not build on
# Python 3.11: installed without its requirements (rliable, pandas, colorama come with the extra)
case ",$EXTRAS," in *,stats,*) pip_i --no-deps "id-marl-eval==0.0.4";; esac
printf '%s\n%s\n' "$want" "$EXTRAS" > "$STAMP"
log "done: $("$VPY" -c 'import torch, mpi4py, h5py, horovod; print("torch", torch.__version__, "mpi4py", mpi4py.__version__, "h5py", h5py.__version__, "horovod", horovod.__version__)')"
