#!/usr/bin/env bash
# Runs cargo with the environment that tch needs: LIBTORCH points at the torch
# wheel in .venv (or at an existing libtorch if LIBTORCH is already set, e.g. on
# a cluster). Usage: scripts/cargo.sh build --release
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${LIBTORCH:-}" ]]; then
  LIBTORCH=$(ls -d "$PWD"/.venv/lib/python3*/site-packages/torch 2>/dev/null | head -n1 || true)
  [[ -n "$LIBTORCH" ]] || { echo "no libtorch: run scripts/setup.sh first (or set LIBTORCH)" >&2; exit 1; }
  export LIBTORCH
fi
export LIBTORCH_CXX11_ABI=${LIBTORCH_CXX11_ABI:-1}
[[ -d .venv/bin ]] && export PATH="$PWD/.venv/bin:$PATH"
exec "${CARGO:-cargo}" "$@"
