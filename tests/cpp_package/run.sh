#!/usr/bin/env bash
# The C++ package, as its users get it (run by scripts/test.sh after the
# GoogleTest build in build/cmake):
#   1. `cmake --install` of that build, and an out-of-tree consumer
#      (tests/cpp_package) configured against the installed prefix, built, run;
#   2. the same consumer against the Python package (myconv.cmake_prefix_path);
#   3. the C++ example (examples/cpp) built standalone against the installed
#      prefix (the project's build in build/cmake compiles it too) and trained
#      for 2 epochs on the digits: its accuracy must be far above chance;
#   4. a wheel (`pip wheel . --no-build-isolation`) installed into a fresh
#      virtual environment that already has torch: `import myconv` and
#      myconv.cmake_prefix_path work there, outside the source tree, and the
#      consumer builds against it;
#   5. a CPU-only build of the library from its sources with CMake, installed
#      and consumed (its own RUNPATH finds torch's libraries).
# Each consumer build also has a program that calls myconv only through the
# dispatcher, linked with --as-needed: the package must keep the library.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-.venv/bin/python}
export PATH="$PWD/.venv/bin:$PATH"
work=build/cpp_package
rm -rf "$work" && mkdir -p "$work"
torch_prefix=$("$PY" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
log() { printf '\n-- %s\n' "$*"; }

# quiet configure / build, the log shown on failure
run_logged() {
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 || { cat "$work/$name.log"; echo "FAILED: $*" >&2; return 1; }
}

consumer() {  # consumer NAME PREFIX... : configure, build and run the consumer programs
  local name=$1; shift
  local prefixes; prefixes=$(IFS=';'; echo "$*")
  run_logged "$name-configure" cmake -S tests/cpp_package -B "$work/$name" -G Ninja \
    -DCMAKE_PREFIX_PATH="$prefixes;$torch_prefix"
  build_and_run "$name"
}
build_and_run() {
  run_logged "$1-build" cmake --build "$work/$1"
  "$work/$1/consumer"
  "$work/$1/dispatcher_only"
  readelf -d "$work/$1/dispatcher_only" | grep -q "NEEDED.*\(myconv\|_C.abi3\)" ||
    { echo "dispatcher_only does not need the myconv library" >&2; return 1; }
}

log "1. cmake --install build/cmake, then an out-of-tree consumer of the installed prefix"
run_logged install cmake --install build/cmake --prefix "$work/install"
ls "$work/install/lib/libmyconv.so" "$work/install/include/myconv/myconv.h" \
   "$work/install/lib/cmake/myconv/myconvConfig.cmake" "$work/install/lib/cmake/myconv/myconvConfigVersion.cmake"
consumer installed "$PWD/$work/install"

log "2. the same consumer against the Python package (myconv.cmake_prefix_path)"
consumer python "$("$PY" -c 'import myconv; print(myconv.cmake_prefix_path)')"

log "2b. again, the prefixes in the CMAKE_PREFIX_PATH environment variable, torch's as site-packages/torch"
CMAKE_PREFIX_PATH="$("$PY" -c 'import myconv; print(myconv.cmake_prefix_path)'):$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
  run_logged env-configure cmake -S tests/cpp_package -B "$work/env" -G Ninja
build_and_run env

log "3. the C++ example, standalone against the installed prefix, 2 epochs on the digits"
run_logged example-configure cmake -S examples/cpp -B "$work/example" -G Ninja \
  -DCMAKE_PREFIX_PATH="$PWD/$work/install;$torch_prefix"
run_logged example-build cmake --build "$work/example"
digits=$("$PY" -c 'import os, sklearn; print(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "digits.csv.gz"))')
"$work/example/myconv_train_digits" --data "$digits" --epochs 2 --out "$work/example-run" | tee "$work/example.txt"
"$work/example/myconv_train_digits" --data "$digits" --epochs 1 --conv torch --out "$work/example-run" |
  tail -n 1 | tee "$work/example-torch.txt"
test -s "$work/example-run/checkpoint-myconv.pt" && test -s "$work/example-run/checkpoint-torch.pt"
"$PY" - "$work/example.txt" "$work/example-torch.txt" <<'PYEOF'
import re, sys
def accuracy(path):
    return float(re.search(r"final test accuracy: ([0-9.]+) %", open(path).read()).group(1))
ours, theirs = accuracy(sys.argv[1]), accuracy(sys.argv[2])
assert ours >= 50.0, f"2 epochs gave {ours} %: expected far above chance (10 %)"
assert theirs >= 25.0, f"--conv torch, 1 epoch, gave {theirs} %: expected above chance (10 %)"
print(f"example: {ours} % after 2 epochs, {theirs} % after 1 epoch with --conv torch (chance: 10 %)")
PYEOF

log "4. a wheel, installed into a fresh virtual environment that already has torch"
run_logged wheel "$PY" -m pip wheel . --no-build-isolation --no-deps -w "$work/wheel"
wheel=$(ls "$work"/wheel/myconv-*.whl)
"$PY" -m venv "$work/venv"
# torch (and what it needs) from the project's environment, myconv from the wheel only
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
venv_site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$work/torch-only"
for pkg in "$site"/*; do
  case "$(basename "$pkg")" in myconv|myconv-*|__editable__*myconv*) ;; *) ln -s "$pkg" "$work/torch-only/" ;; esac
done
echo "$PWD/$work/torch-only" > "$venv_site/torch-only.pth"
run_logged wheel-install "$work/venv/bin/python" -m pip install --no-deps --no-index "$wheel"
(cd /tmp && "$OLDPWD/$work/venv/bin/python" -c '
import os, sys, sysconfig, torch, myconv
here = os.path.dirname(myconv.__file__)
assert here.startswith(sysconfig.get_paths()["purelib"]), f"myconv from {here}, not from the fresh environment"
assert os.path.isfile(os.path.join(myconv.cmake_prefix_path, "myconv", "myconvConfig.cmake")), here
x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
assert torch.allclose(myconv.conv2d(x, w), torch.nn.functional.conv2d(x, w), atol=1e-5)
print("wheel: import myconv from", here, "; cmake_prefix_path", myconv.cmake_prefix_path)
')
consumer wheel "$("$work/venv/bin/python" -c 'import myconv; print(myconv.cmake_prefix_path)')"
log "5. a CPU-only build of the library from its sources (CMake), installed and consumed"
run_logged source-configure cmake -S . -B "$work/source" -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DMYCONV_WITH_CUDA=OFF -DMYCONV_BUILD_TESTS=OFF -DMYCONV_BUILD_EXAMPLES=OFF
run_logged source-build cmake --build "$work/source"
run_logged source-install cmake --install "$work/source" --prefix "$work/source-install"
readelf -d "$work/source-install/lib/libmyconv.so" | grep -E "SONAME|RUNPATH|RPATH"
readelf -d "$work/source-install/lib/libmyconv.so" | grep -q "R.*PATH.*$(dirname "$torch_prefix" | xargs dirname)/lib" ||
  { echo "the installed libmyconv.so does not find torch's libraries by itself" >&2; exit 1; }
consumer from-source "$PWD/$work/source-install"

log "C++ package: all passed"
