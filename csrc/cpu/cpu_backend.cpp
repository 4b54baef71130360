// The CPU backend: the column kernels of im2col_cpu.cpp and the direct
// grouped kernels of grouped_cpu.cpp, GEMM through ATen's BLAS (MKL here),
// work items spread over ATen's threads, and the CPU registration of the
// composed ops.
//
// Inside a work item everything runs on the item's thread: the GEMM library
// sees a call from inside a parallel region and stays single-threaded, the
// ATen kernels here see at::in_parallel_region() and run serially.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "../blas_plan.h"
#include "../convolution.h"
#include "myconv/ops.h"
#include "cpu_kernels.h"

namespace myconv::detail {
namespace {

// L2 cache of one core, in bytes (sysconf, then sysfs, else 1 MiB).
int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0) {
      return static_cast<int64_t>(v);
    }
#endif
    if (FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r")) {
      long kib = 0;
      const int got = std::fscanf(f, "%ldK", &kib);
      std::fclose(f);
      if (got == 1 && kib > 0) {
        return static_cast<int64_t>(kib) << 10;
      }
    }
    return int64_t{1} << 20;
  }();
  return bytes;
}

class CpuBackend final : public Backend {
 public:
  Tuning tuning(const at::Tensor&) const override {
    if (cpu_whole_image_plan()) {
      return Tuning{};  // the CUDA backend's plan (tests of that composition)
    }
    Tuning t;
    t.workers = at::get_num_threads();
    t.tile_bytes = tile_bytes() > 0 ? tile_bytes() : l2_cache_bytes() / 2;
    t.min_tile_positions = 64;
    t.split_images = true;
    t.split_work = true;
    t.gemm_on_views = true;
    t.channels_last = true;
    t.direct_grouped = true;
    return t;
  }

  void im2col(const at::Tensor& images, const ConvGeometry& g, const ColumnTile& tile, const at::Tensor& columns,
              ColumnLayout layout) const override {
    im2col_cpu(images, g, tile, columns, layout);
  }

  void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile, const ConvGeometry& g,
              const at::Tensor& images, bool accumulate) const override {
    col2im_cpu(columns, layout, tile, g, images, accumulate);
  }

  // One GEMM per batch entry through ATen (MKL for float / double), on views:
  // strided operands and results need no copies. With the CUDA backend's work
  // plan, the CUDA backend's cuBLAS call instead, replayed on the CPU
  // (csrc/blas_plan.h): every operand is read only as cuBLAS would read it.
  void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) const override {
    if (cpu_whole_image_plan()) {
      run_column_major_gemm_on_cpu(plan_column_major_gemm(a, b, c, accumulate));
      return;
    }
    for (int64_t i = 0; i < c.size(0); ++i) {
      at::Tensor ci = c.select(0, i);
      if (accumulate) {
        ci.addmm_(a.select(0, i), b.select(0, i));
      } else {
        at::mm_out(ci, a.select(0, i), b.select(0, i));
      }
    }
  }

  // Items always run inside a parallel region (unless torch runs on one
  // thread, or the call comes from inside a parallel region already): there
  // the GEMM library stays single-threaded, so every product is computed the
  // same way whatever the thread count, even when there is a single item.
  // Workers take items from a shared counter, so a slow item does not hold
  // the others back; which worker runs an item never changes its result.
  // Each worker takes the caller's thread-local state (grad mode, dispatch
  // keys excluded below autograd, ...), since the items call ATen ops.
  void run_items(int64_t items, int64_t workers, const std::function<void(int64_t, int64_t)>& fn) const override {
    const int64_t threads = at::get_num_threads();
    if (threads <= 1 || at::in_parallel_region()) {
      for (int64_t i = 0; i < items; ++i) {
        fn(i, 0);
      }
      return;
    }
    std::atomic<int64_t> next{0};
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      for (int64_t w = begin; w < std::min(end, workers); ++w) {
        for (int64_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) {
          fn(i, w);
        }
      }
    });
  }

  void grouped_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                       const ConvGeometry& g, int64_t groups, bool channels_last,
                       const at::Tensor& out) const override {
    grouped_forward_cpu(x, w, bias, g, groups, channels_last, out);
  }

  void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w, const ConvGeometry& g, int64_t groups,
                          bool channels_last, const at::Tensor& gi) const override {
    grouped_grad_input_cpu(gy, w, g, groups, channels_last, gi);
  }

  void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x, const ConvGeometry& g, int64_t groups,
                           bool channels_last, const at::Tensor& gw) const override {
    grouped_grad_weight_cpu(gy, x, g, groups, channels_last, gw);
  }
};

} // namespace

TORCH_LIBRARY_IMPL(myconv, CPU, m) {
  register_backend_kernels<CpuBackend>(m);
}

} // namespace myconv::detail
