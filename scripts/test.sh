#!/usr/bin/env bash
# Sets everything up from nothing, then runs every test:
#   1. GoogleTest (ctest), linked against the very library the Python package loads
#   2. pytest (tests/python)
# CUDA tests skip cleanly where there is no GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"

printf '\n== GoogleTest\n'
lib=$("$PY" -c 'import myconv; print(myconv.library_path())' 2>/dev/null)
prefix=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
cmake -S . -B build/cmake -G Ninja -DCMAKE_PREFIX_PATH="$prefix" -DMYCONV_LIBRARY="$lib" >/dev/null
cmake --build build/cmake
ctest --test-dir build/cmake --output-on-failure

printf '\n== pytest\n'
"$PY" -m pytest tests/python "$@"
