#!/usr/bin/env bash
# Sets everything up from nothing, then runs every test:
#   1. GoogleTest (ctest), linked against the very library the Python package loads
#   2. the C++ package: cmake --install, an out-of-tree consumer against it and
#      against the Python package, the C++ example (2 epochs), a wheel in a
#      fresh virtual environment (tests/cpp_package/run.sh)
#   3. GoogleTest again, library and tests built with ASan + UBSan (CPU sources)
#   4. pytest (tests/python)
#   5. pytest: the CUDA tests mapped to the CPU (MYCONV_TEST_CUDA_ON_CPU=1, the
#      CUDA backend's work plan replayed there)
# CUDA tests skip cleanly in step 4 where there is no GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
PY=.venv/bin/python
# results must be bitwise independent of the thread count with MKL as users
# run it: never under MKL's reproducibility mode inherited from outside
unset MKL_CBWR
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p build
# cmake configure, its chatter (torch's CUDA notes) kept in a log shown on failure
configure() {
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja "$@" >"build/$(basename "$dir")-configure.log" 2>&1 ||
    { cat "build/$(basename "$dir")-configure.log"; return 1; }
}

printf '\n== GoogleTest\n'
lib=$("$PY" -c 'import myconv; print(myconv.library_path())' 2>/dev/null)
prefix=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)' 2>/dev/null)
configure build/cmake -DCMAKE_PREFIX_PATH="$prefix" -DMYCONV_LIBRARY="$lib"
cmake --build build/cmake
ctest --test-dir build/cmake --output-on-failure

printf '\n== The C++ package (install, find_package consumers, example, wheel)\n'
bash tests/cpp_package/run.sh

printf '\n== GoogleTest, library and tests built with AddressSanitizer + UndefinedBehaviorSanitizer\n'
configure build/sanitize -DCMAKE_PREFIX_PATH="$prefix" -DMYCONV_WITH_CUDA=OFF \
  -DMYCONV_SANITIZE=address,undefined -DMYCONV_BUILD_EXAMPLES=OFF
cmake --build build/sanitize
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize --output-on-failure

printf '\n== pytest\n'
"$PY" -m pytest tests/python "$@"

# Every CUDA test (-m cuda) of every file that has them, on the CPU with the
# CUDA backend's work plan, so that the CUDA tests' own code runs where there is
# no GPU (with a GPU too: step 4 ran them on it). What only a GPU can check
# skips, saying why. 1914 tests: 10 s on this project's 2-core machine when
# idle, 55-90 s while other jobs share its cores.
printf '\n== pytest, the CUDA tests mapped to the CPU (the CUDA backend work plan)\n'
MYCONV_TEST_CUDA_ON_CPU=1 "$PY" -m pytest -q -m cuda tests/python/test_cuda.py tests/python/test_conv_nd.py \
  tests/python/test_conv_transpose.py tests/python/test_fuzz.py tests/python/test_integration.py \
  tests/python/test_paths.py
