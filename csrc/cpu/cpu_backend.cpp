// The CPU backend: the column kernels of im2col_cpu.cpp and the direct
// grouped kernels of grouped_cpu.cpp, the GEMM engines of cpu_gemm.cpp,
// work items spread over ATen's threads, and the CPU registration of the
// composed ops.
//
// Inside a work item everything runs on the item's thread: the GEMM library
// and ATen's loops are held to one thread there (SingleThreadedItems, see
// run_items), so every sum is taken the same way whatever the thread count.
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "../blas_plan.h"
#include "../convolution.h"
#include "myconv/ops.h"
#include "cpu_gemm.h"
#include "cpu_kernels.h"
#include "../cuda_tuning.h"

// MKL's thread count for the calling thread alone (mkl_set_num_threads_local;
// 0 restores the global one). A weak reference: null where torch's BLAS is
// not MKL.
extern "C" int MKL_Set_Num_Threads_Local(int threads) __attribute__((weak));

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

// While it lives, MKL (where torch's BLAS is MKL) and OpenMP are told one
// thread for the calling thread alone; then their settings are restored.
// ATen sets a thread's OpenMP and MKL thread counts on the thread's first
// parallel call (at::init_num_threads, which also resets MKL's setting for
// that thread): done first, so that no ATen loop inside an item (im2col's
// at::parallel_for on a fresh worker thread) undoes the single thread. Both
// copies of the once-per-thread flag: ours (inlined from ATen/Parallel.h) and
// libtorch's (get_num_threads).
class SingleThreadedItems {
 public:
  SingleThreadedItems() {
    at::internal::lazy_init_num_threads();
    (void)at::get_num_threads();
    previous_mkl_ = MKL_Set_Num_Threads_Local != nullptr ? MKL_Set_Num_Threads_Local(1) : 0;
    previous_omp_ = omp_get_max_threads();
    omp_set_num_threads(1);
  }
  ~SingleThreadedItems() {
    if (MKL_Set_Num_Threads_Local != nullptr) {
      MKL_Set_Num_Threads_Local(previous_mkl_);
    }
    omp_set_num_threads(previous_omp_);
  }
  SingleThreadedItems(const SingleThreadedItems&) = delete;
  SingleThreadedItems& operator=(const SingleThreadedItems&) = delete;

 private:
  int previous_mkl_ = 0, previous_omp_ = 1;
};

class CpuBackend final : public Backend {
 public:
  Tuning tuning(const at::Tensor&) const override {
    if (cpu_whole_image_plan()) {
      return cuda_tuning_in_effect();  // the CUDA backend's plan (tests of that composition)
    }
    Tuning t;
    t.workers = at::get_num_threads();
    // twice the L2 cache of a core: im2col writes a tile, the GEMM packs it
    // into its own cache blocks while it is still in L2 / L3 (with oneDNN's
    // matmul, fewer, wider GEMMs beat tiles of half or one L2:
    // docs/benchmarks.md, "CPU speed, round 2")
    t.tile_bytes = tile_bytes() > 0 ? tile_bytes() : 2 * l2_cache_bytes();
    t.min_tile_positions = 64;
    t.split_images = true;
    t.split_work = true;
    t.gemm_on_views = true;
    t.channels_last = true;
    t.direct_grouped = true;
    return t;
  }

  const char* gemm_engine(at::ScalarType dtype, int64_t m, int64_t n, int64_t k) const override {
    if (cpu_whole_image_plan()) {
      return "cublas-replay";  // the CUDA backend's cuBLAS call, run on the CPU (see bmm)
    }
    return cpu_gemm_engine_name(choose_cpu_gemm_engine(dtype, m, n, k));
  }

  void im2col(const at::Tensor& images, const ConvGeometry& g, const ColumnTile& tile, const at::Tensor& columns,
              ColumnLayout layout) const override {
    im2col_cpu(images, g, tile, columns, layout);
  }

  void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile, const ConvGeometry& g,
              const at::Tensor& images, bool accumulate) const override {
    col2im_cpu(columns, layout, tile, g, images, accumulate);
  }

  // One GEMM per batch entry on views (strided operands and results need no
  // copies), by the engine cpu_gemm.h chooses. With the CUDA backend's work
  // plan, the CUDA backend's cuBLAS call instead, replayed on the CPU
  // (csrc/blas_plan.h): every operand is read only as cuBLAS would read it.
  void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) const override {
    // (a float32 c for 16-bit operands comes only from the CUDA plan's tuning:
    // replayed, even if the switch was turned off since the call planned)
    if (cpu_whole_image_plan() || c.scalar_type() != a.scalar_type()) {
      run_column_major_gemm_on_cpu(plan_column_major_gemm(a, b, c, accumulate));
      return;
    }
    cpu_bmm(a, b, c, accumulate);
  }

  // Every GEMM runs single-threaded, so every product is computed the same
  // way whatever the thread count: on whichever thread runs an item, MKL and
  // OpenMP (oneDNN, ATen's loops) are told one thread for that thread alone
  // while it runs items (SingleThreadedItems). Inside a parallel region the
  // libraries would run sequentially anyway, but MKL still plans a GEMM for
  // the thread count it believes it has (MKL_VERBOSE: NThr:2 inside a worker
  // of two threads, NThr:1 with one), and on AVX-512 CPUs that plan sums a
  // long reduction differently (grad_weight's GEMMs differed in the last bits
  // between 1 and 2 threads).
  // Items run inside a parallel region, unless torch runs on one thread, the
  // call comes from inside a parallel region already, or there is one
  // worker: then on the caller's thread (no thread wake-up for a problem too
  // small to share).
  // Workers take items from a shared counter, so a slow item does not hold
  // the others back; which worker runs an item never changes its result.
  // Each worker takes the caller's thread-local state (grad mode, dispatch
  // keys excluded below autograd, ...), since the items call ATen ops.
  void run_items(int64_t items, int64_t workers, const std::function<void(int64_t, int64_t)>& fn) const override {
    at::internal::lazy_init_num_threads();  // (see SingleThreadedItems)
    const int64_t threads = at::get_num_threads();
    if (threads <= 1 || at::in_parallel_region() || workers <= 1) {
      const SingleThreadedItems single;
      for (int64_t i = 0; i < items; ++i) {
        fn(i, 0);
      }
      return;
    }
    std::atomic<int64_t> next{0};
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      const SingleThreadedItems single;
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
  register_backend_kernels<CpuBackend>(m, c10::DeviceType::CPU);
}

} // namespace myconv::detail
