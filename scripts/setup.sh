#!/usr/bin/env bash
# Sets up everything from nothing, idempotently:
#   - GoogleTest from Debian (libgtest-dev) when missing
#   - a virtual environment .venv with torch and the test tools
#   - builds and installs the myconv package (CPU kernels; CUDA kernels too
#     where torch has CUDA and nvcc exists)
#
# Knobs (environment):
#   MYCONV_TORCH=cuda (default)  torch==2.14.1, CUDA 13.0 build: the CUDA sources are compiled
#   MYCONV_TORCH=cpu             torch==2.13.0, CPU build: smaller, CPU kernels only
#   MYCONV_CPU_ONLY=1            skip the CUDA sources even with a CUDA torch
#   TORCH_CUDA_ARCH_LIST         GPU architectures (default "8.0;9.0+PTX": A100, H100, PTX for newer)
#   PYTHON                       interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }
# pip, without the notes this machine's pip configuration prints for every
# package it looks up in its local indexes.
pip_quiet() { "$PY" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; }; }

if ! dpkg -s libgtest-dev >/dev/null 2>&1; then
  step "installing GoogleTest (libgtest-dev)"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libgtest-dev
fi

# torchvision (for the tests that convert its models) only where a wheel
# matching the torch build exists on this machine kind's disk.
case "${MYCONV_TORCH:-cuda}" in
  cuda) torch_req="torch==2.14.1"; vision_req="torchvision==0.29.1" ;;
  cpu)  torch_req="torch==2.13.0"; vision_req="" ;;
  *) echo "MYCONV_TORCH must be 'cuda' or 'cpu'" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
PY=.venv/bin/python

if ! "$PY" -m pip show torch 2>/dev/null | grep -qx "Version: ${torch_req#torch==}"; then
  step "installing $torch_req (from the wheels on this disk when present)"
  pip_quiet install -q "$torch_req"
fi
step "installing build and test tools"
pip_quiet install -q -r requirements-dev.txt
if [ -n "$vision_req" ] && ! "$PY" -m pip show torchvision 2>/dev/null | grep -q "^Version: ${vision_req#torchvision==}"; then
  pip_quiet install -q "$vision_req" "$torch_req"
fi

export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0+PTX}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export PATH="$PWD/.venv/bin:$PATH"  # ninja
step "building myconv (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
start=$SECONDS
pip_quiet install -q --no-build-isolation --no-deps .
echo "built in $((SECONDS - start)) s: $("$PY" -c 'import myconv; print(myconv.library_path(), "CUDA kernels:", myconv.cuda_built())' 2>/dev/null)"
