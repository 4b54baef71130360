#!/usr/bin/env bash
# GPU checks, for a machine with an NVIDIA GPU and torch already installed (such
# as the lent device machine: no network, `python3` holds torch). Builds myconv
# against that torch, then runs, most telling first (a timeout cuts the end;
# each step is logged as it finishes):
#   0. the exception probe (scripts/exception_probe.py), right after the build:
#      does a bad input raise a RuntimeError there, or kill the process? Its
#      verdict heads the summary;
#   1. the CUDA tests (pytest: every test file's CUDA tests),
#   2. the GPU benchmark at issue 25's batch of 32 (python -m myconv.benchmark
#      --device cuda --batch 32): float32 forward and fwd+bwd, then fwd+bwd in
#      float16, bfloat16, float32 channels_last, and the 3-D (video) suite at 16,
#   3. peak memory of one fwd+bwd against cuDNN's, measured and predicted
#      from the plan (scripts/gpu_memory.py), then A/B timings: each
#      unmeasured choice of the CUDA plan against its alternative
#      (--cuda-tuning, myconv.set_cuda_tuning) on the layers it changes,
#   4. MYCONV_VERBOSE=2 over one forward+backward of four layers (3x3, 1x1,
#      depthwise, 3x3 channels_last): each pass's plan on the GPU with its time,
#   5. the host cost of a CUDA step at 1 and all CPU threads (scripts/gpu_host_cost.py),
#   6. compute-sanitizer memcheck / racecheck / initcheck / synccheck over a
#      small CUDA test run (the CUDA fuzz cases and the determinism tests).
# Everything is logged under $OUT (or build/gpu); a summary ends the output.
# Knobs: PYTHON (default python3), TORCH_CUDA_ARCH_LIST (default 9.0),
#        SANITIZER_FUZZ_EXAMPLES (default 40 per tool), BATCH (default 32).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-build/gpu}
mkdir -p "$out"
PY=${PYTHON:-python3}
summary=()
note() { summary+=("$1"); echo "== $1"; echo "$1" >>"$out/summary_so_far.txt"; }  # (kept if a timeout cuts the end)

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())'
  nvcc --version | tail -2
  compute-sanitizer --version | head -2
} >"$out/versions.txt" 2>&1
cat "$out/versions.txt"

export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
start=$SECONDS
if "$PY" -m pip install --no-build-isolation --no-deps --no-index -q . >"$out/build.log" 2>&1; then
  note "build: ok in $((SECONDS - start)) s (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)"
else
  note "build: FAILED (see build.log)"; tail -40 "$out/build.log"; exit 1
fi

# First: does a bad input raise a RuntimeError, or kill the process (as on the
# image of 2026-11-26, see docs/gpu.md)? In subprocesses; the verdict is the
# first summary line. The load_inline probe tells our library from the image.
"$PY" scripts/exception_probe.py --inline >"$out/exception_probe.txt" 2>&1
probe_rc=$?
summary=("$(head -1 "$out/exception_probe.txt")" "${summary[@]}")
cat "$out/exception_probe.txt"
# Where exceptions kill the process, leave out the tests that expect one.
error_tests=""
if [ $probe_rc -ne 0 ]; then
  error_tests=" and not raise and not error and not reject and not bad and not second_device"
  note "exceptions crash here: error-path tests left out of the pytest runs"
fi

run_pytest() {  # name, pytest args...
  local name=$1; shift
  "$PY" -m pytest -q -p no:cacheprovider "$@" >"$out/$name.log" 2>&1
  local rc=$?
  note "$name: $(tail -1 "$out/$name.log") (exit $rc)"
}

export PYTHONUNBUFFERED=1
# every CUDA test (the `cuda` marker: tests/python/conftest.py's requires_cuda), without the CPU replays
run_pytest pytest_cuda tests/python -m cuda ${error_tests:+-k "${error_tests# and }"}

batch=${BATCH:-32}
bench() {  # name, benchmark args...
  local name=$1; shift
  "$PY" -m myconv.benchmark --device cuda --batch "$batch" "$@" >"$out/$name.txt" 2>&1
  note "$name: exit $? ($name.txt)"
  cat "$out/$name.txt"
}
bench benchmark_cuda --min-run-time 0.5
bench benchmark_cuda_float16 --dtype float16 --pass fwd+bwd --min-run-time 0.2
bench benchmark_cuda_bfloat16 --dtype bfloat16 --pass fwd+bwd --min-run-time 0.2
bench benchmark_cuda_channels_last --channels-last --pass fwd+bwd --min-run-time 0.3
# (3-D at the profile's batch: 8x the suite's 2, so 16)
batch=16 bench benchmark_cuda_video --suite video --pass fwd+bwd --min-run-time 0.2

"$PY" scripts/gpu_memory.py >"$out/memory.txt" 2>&1
note "memory: exit $? (memory.txt)"
cat "$out/memory.txt"

# Each unmeasured choice of the CUDA plan against its alternative (myconv.set_cuda_tuning), on the
# layers it changes, timed next to cuDNN alone: compare each table's myconv column (and its ratio to
# F.conv) with the same layers' in benchmark_cuda*.txt and keep what wins (csrc/cuda_tuning.h, docs/gpu.md).
ab() {  # name, overrides, layers, benchmark args...
  local name=$1 overrides=$2 layers=$3; shift 3
  bench "ab_$name" --cuda-tuning "$overrides" --layers "$layers" --pass fwd+bwd --min-run-time 0.2 \
    --compare F.conv "$@"
}
ab chunk_min_8192 chunk_min_positions=8192 3x3-14,3x3-28
ab grad_weight_columns grad_weight_image_products=0 1x1
ab all_columns_1x1 image_batched_views=0 1x1
ab chunked_1x1 view_chunks=0 1x1
ab channels_first_columns channels_last=0 3x3-56,3x3-14,1x1,dw3x3 --channels-last
ab no_direct_grouped direct_grouped=0 dw3x3
# (at batch 32 the ResNet layers' rows are whole sectors already: the audio layers' are not; they are
# in no run above, so their default plan is timed here too)
ab padded_rows_default "" w2v-1,w2v-2
ab unpadded_rows column_row_bytes=0 w2v-1,w2v-2
# float16 chunks hold float32's images (16 MiB; chunk_bytes is float32's): twice that, 32 MiB, as
# before 2026-12-05, for the time and the peak MiB (memory.txt has the default's)
ab float16_chunks_32mib chunk_bytes=67108864 3x3-14,3x3-56 --dtype float16
# chunks of images of 2048+ positions run their GEMMs image by image (the forward in place, grad_input's
# columns an image, grad_weight's image products; 2026-12-05): off, as before, in float32 and float16
# (where the copies weigh most); and on for every image size, for the rule's threshold
ab one_gemm_a_chunk image_gemm_min_positions=0 stem,3x3-56
ab one_gemm_a_chunk_float16 image_gemm_min_positions=0 stem,3x3-56 --dtype float16
ab image_gemms_every_size image_gemm_min_positions=1 3x3-28,3x3-14,3x3s2,seed

MYCONV_VERBOSE=2 "$PY" -c '
import torch, myconv
for shape, w, kw, cl in (((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), False),
                         ((8, 256, 56, 56), (64, 256, 1, 1), {}, False),
                         ((8, 128, 28, 28), (128, 1, 3, 3), dict(padding=1, groups=128), False),
                         ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1), True)):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(*shape, device="cuda").contiguous(memory_format=fmt).requires_grad_()
    weight = torch.randn(*w, device="cuda", requires_grad=True)
    for _ in range(3):  # the last of three calls (the first ones warm cuBLAS and the allocator)
        myconv.conv2d(x, weight, **kw).sum().backward()
' >"$out/verbose.txt" 2>&1
note "verbose: exit $? ($(grep -c "^myconv::" "$out/verbose.txt") lines, verbose.txt)"
cat "$out/verbose.txt"

"$PY" scripts/gpu_host_cost.py >"$out/host_cost.txt" 2>&1
note "host cost: exit $? ($(sed -n 2,3p "$out/host_cost.txt" | tr -s ' ' | tr '\n' ';'))"
cat "$out/host_cost.txt"

# compute-sanitizer over a small CUDA run: a few fuzz cases + determinism + stream + chunking + 1x1 views.
sanitized="tests/python/test_fuzz.py::test_conv2d_forward_and_gradients_cuda tests/python/test_cuda.py::test_bitwise_deterministic tests/python/test_cuda.py::test_runs_on_the_current_stream tests/python/test_cuda.py::test_small_workspace_chunks_on_cuda tests/python/test_cuda.py::test_col2im_matches_cpu_bitwise_in_float64 tests/python/test_cuda.py::test_1x1_layers_run_every_pass_on_the_tensors"
for tool in memcheck racecheck initcheck synccheck; do
  MYCONV_FUZZ_EXAMPLES_CUDA=${SANITIZER_FUZZ_EXAMPLES:-40} \
    compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
    "$PY" -m pytest -q -p no:cacheprovider $sanitized >"$out/sanitizer_$tool.log" 2>&1
  rc=$?
  errors=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/sanitizer_$tool.log" | tail -1)
  note "compute-sanitizer $tool: exit $rc; ${errors:-no summary line}; $(grep -E '[0-9]+ (passed|failed)' "$out/sanitizer_$tool.log" | tail -1)"
done

printf '\n== summary\n'
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
