#!/usr/bin/env bash
# Installs everything zo-hpc needs on a fresh Debian 12 machine and is quick when
# it is all already there: Debian packages, a git-ignored Python venv holding the
# PyTorch wheel that provides libtorch for tch, and a release build.
#
# Environment:
#   ZO_SKIP_APT=1      do not touch Debian packages (clusters: use modules instead)
#   ZO_TORCH_FULL=1    install the full CUDA torch wheel (GPU machines); default is a
#                      slim CPU install (torch without its CUDA dependencies)
#   ZO_SETUP_SLURM=1   also install slurm-wlm + munge (the Slurm job-script test)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
# fonts-dejavu-core: the TTF that `zo-hpc report` draws its plot text with.
# python3-rdkit: the example external knowledge source (inputs/sources/);
# mopac, xtb: the physics knowledge source.
APT_PKGS=(build-essential pkg-config librdkit-dev libboost-dev libhdf5-dev
  libopenmpi-dev openmpi-bin libclang-dev clang python3-venv python3-h5py
  fonts-dejavu-core python3-rdkit mopac xtb)
if [[ "${ZO_SETUP_SLURM:-0}" == 1 ]]; then APT_PKGS+=(slurm-wlm munge); fi

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if [[ "${ZO_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PKGS[@]}"; do have_pkg "$p" || missing+=("$p"); done
  if ((${#missing[@]})); then
    echo "[setup] apt-get install ${missing[*]}"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

# The venv holds the torch wheel (libtorch for tch) and h5py for the HDF5 tests.
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
# Checked through package metadata: a slim install cannot `import torch` in Python
# (that needs the CUDA stack), but libtorch itself is complete.
torch_ok() {
  .venv/bin/python - "$TORCH_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(version("torch").split("+")[0] != sys.argv[1])
PY
}
# pip install, quiet; the slim install below leaves torch's CUDA requirements
# unmet on purpose, and pip then prints an "ERROR: pip's dependency resolver ..."
# block listing them after every install although nothing failed. That block is
# dropped; everything else pip says is shown, all of it when pip fails.
pip_install() {
  local log
  log=$(mktemp)
  if ! .venv/bin/pip install -q "$@" 2>"$log"; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  grep -vE "^ERROR: pip's dependency resolver does not currently take into account|^torch [^ ]+ requires .*, which is not installed\.$" "$log" >&2 || true
  rm -f "$log"
}
if ! torch_ok || ! ls .venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
  echo "[setup] installing torch==$TORCH_VERSION into .venv (CPU libraries only unless ZO_TORCH_FULL=1)"
  pip_install --upgrade pip
  if [[ "${ZO_TORCH_FULL:-0}" == 1 ]]; then
    pip_install "torch==$TORCH_VERSION"
  else
    # libtorch_cpu needs only the CUDA runtime and CUPTI libraries of the versions
    # that torch names; the rest of the CUDA stack is 2+ GB we do not need on CPU.
    pip_install --no-deps "torch==$TORCH_VERSION"
    reqs=$(.venv/bin/python - <<'PY'
import re
from importlib.metadata import requires
out = []
for r in requires("torch") or []:
    name = r.split(";")[0].replace(" ", "")
    m = re.match(r"cuda-toolkit\[[^\]]*\](==.*)", name)
    if m:  # torch >= 2.10 names the CUDA 13 libraries through cuda-toolkit extras
        out.append("cuda-toolkit[cudart,cupti]" + m.group(1))
    elif name.startswith(("nvidia-cuda-runtime", "nvidia-cuda-cupti")):
        out.append(name)
print(" ".join(out))
PY
)
    # shellcheck disable=SC2086
    [[ -n "$reqs" ]] && pip_install $reqs
    pip_install typing_extensions sympy filelock networkx jinja2 fsspec
    echo "[setup] torch installed; its CUDA packages are left out on purpose (libtorch runs on CPU)"
  fi
fi
if ! .venv/bin/python -c "import h5py, numpy" 2>/dev/null; then
  echo "[setup] installing h5py and numpy into .venv"
  pip_install h5py numpy
fi
echo "[setup] environment ready"
