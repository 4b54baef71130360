// The CPU backend's GEMM engines and the choice between them (cpu_gemm.h).
#include "cpu_gemm.h"

#include <ATen/Context.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <climits>
#include <optional>
#include <string>

#include "../blas_plan.h"
#include "myconv/ops.h"

// Weak references, resolved when the library is loaded: null where torch's
// build has no such engine (no oneDNN; no external BLAS, or one without the
// Fortran symbols), and that engine is then never chosen.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}
namespace at::native {
// ATen's oneDNN matmul (aten/src/ATen/native/mkldnn/Matmul.h): result =
// beta * result + alpha * (mat1 @ mat2), for 2-D float32 / bfloat16 / float16.
void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta,
                   float alpha) __attribute__((weak));
} // namespace at::native

namespace myconv::detail {
namespace {

// oneDNN's matmul for float32 GEMMs of at least this many multiply-adds, and
// at least this many rows and inner products: below, its per-call cost
// (operand descriptors, the primitive cache) shows, and MKL's small-matrix
// kernels win (the seed layer's 16 x 72 weight).
constexpr int64_t kOneDnnMinMacs = int64_t{1} << 22;
constexpr int64_t kOneDnnMinSide = 32;

// myconv::set_cpu_gemm_engine: -1 for "auto", else a CpuGemmEngine.
std::atomic<int>& forced_engine() {
  static std::atomic<int> engine{-1};
  return engine;
}

// Whether this torch's oneDNN matmul takes float32 on this CPU (older
// builds take only bfloat16 / float16, and ATen's oneDNN float32 path wants
// certain CPU features): found out once, by one small product, so that a
// failure later on is an error, never a silent switch of engine mid-process.
bool onednn_takes_float() {
  static const bool ok = [] {
    if (at::native::mkldnn_matmul == nullptr) {
      return false;
    }
    try {
      const at::Tensor a = at::ones({kOneDnnMinSide, kOneDnnMinSide}, at::kFloat);
      const at::Tensor c = at::empty({kOneDnnMinSide, kOneDnnMinSide}, at::kFloat);
      at::native::mkldnn_matmul(a, a, c, 0.f, 1.f);
      return c.eq(static_cast<float>(kOneDnnMinSide)).all().item<bool>();
    } catch (const std::exception&) {
      return false;
    }
  }();
  return ok;
}

// Whether oneDNN would compute a float32 product in float32 now: torch lets
// oneDNN's float32 matmuls run in bfloat16 or TF32
// (torch.backends.mkldnn.matmul.fp32_precision, set also by
// torch.set_float32_matmul_precision), and lets users switch oneDNN off
// (torch.backends.mkldnn.enabled). A convolution keeps full float32 either
// way: the BLAS then.
bool onednn_float_now() {
  const at::Context& ctx = at::globalContext();
  if (!ctx.userEnabledMkldnn()) {
    return false;
  }
  const at::Float32Precision precision = ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
  return precision == at::Float32Precision::IEEE || precision == at::Float32Precision::NONE;
}

// A 2-D view oneDNN reads without a copy: row-major, or the transpose of a
// contiguous matrix (ATen copies any other operand first).
bool onednn_reads(const at::Tensor& t) {
  return t.is_contiguous() || (t.stride(0) == 1 && t.stride(1) == t.size(0));
}

bool fits_int(std::initializer_list<int64_t> values) {
  for (const int64_t v : values) {
    if (v > INT_MAX) {
      return false;
    }
  }
  return true;
}

// The BLAS's GEMM on the views' pointers: c = a @ b as the column-major
// C^T = B^T A^T (see blas_plan.h for how each view is read). False when a
// view is not BLAS-readable as it is, or a size exceeds 32 bits.
template <typename T, typename Gemm>
bool blas_bmm(Gemm gemm, const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  const int64_t batch = c.size(0), m = c.size(1), n = c.size(2), k = a.size(2);
  const auto oa = blas_operand(m, k, a.stride(1), a.stride(2));
  const auto ob = blas_operand(k, n, b.stride(1), b.stride(2));
  const auto oc = blas_operand(m, n, c.stride(1), c.stride(2));
  if (!oa || !ob || !oc || oc->transposed || !fits_int({m, n, k, oa->ld, ob->ld, oc->ld})) {
    return false;
  }
  const char op_b = ob->transposed ? 'T' : 'N', op_a = oa->transposed ? 'T' : 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int ldb = static_cast<int>(ob->ld), lda = static_cast<int>(oa->ld), ldc = static_cast<int>(oc->ld);
  const T alpha = 1, beta = accumulate ? 1 : 0;
  const T* pa = a.const_data_ptr<T>();
  const T* pb = b.const_data_ptr<T>();
  T* pc = c.mutable_data_ptr<T>();
  for (int64_t i = 0; i < batch; ++i) {
    gemm(&op_b, &op_a, &M, &N, &K, &alpha, pb + i * b.stride(0), &ldb, pa + i * a.stride(0), &lda, &beta,
         pc + i * c.stride(0), &ldc);
  }
  return true;
}

// oneDNN's matmul, batch entry by batch entry. Returns how many entries it
// computed (the first ones): all, or fewer where an operand would need a copy
// (then the BLAS takes the rest).
int64_t onednn_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  const int64_t batch = c.size(0);
  // (an empty inner dimension leaves oneDNN's result unwritten: the BLAS
  // writes beta * c)
  if (c.scalar_type() != at::kFloat || c.stride(2) != 1 || a.size(2) == 0) {
    return 0;
  }
  for (int64_t i = 0; i < batch; ++i) {
    const at::Tensor ai = a.select(0, i), bi = b.select(0, i), ci = c.select(0, i);
    if (!onednn_reads(ai) || !onednn_reads(bi)) {
      return i;
    }
    at::native::mkldnn_matmul(ai, bi, ci, accumulate ? 1.f : 0.f, 1.f);
  }
  return batch;
}

void aten_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate, int64_t first) {
  for (int64_t i = first; i < c.size(0); ++i) {
    at::Tensor ci = c.select(0, i);
    if (accumulate) {
      ci.addmm_(a.select(0, i), b.select(0, i));
    } else {
      at::mm_out(ci, a.select(0, i), b.select(0, i));
    }
  }
}

} // namespace

bool cpu_has_gemm_engine(CpuGemmEngine engine) {
  switch (engine) {
    case CpuGemmEngine::kOneDnn:
      return onednn_takes_float() && onednn_float_now();
    case CpuGemmEngine::kBlas:
      return sgemm_ != nullptr && dgemm_ != nullptr;
    case CpuGemmEngine::kAten:
      return true;
  }
  return false;
}

CpuGemmEngine choose_cpu_gemm_engine(at::ScalarType dtype, int64_t m, int64_t n, int64_t k) {
  const bool onednn = dtype == at::kFloat && cpu_has_gemm_engine(CpuGemmEngine::kOneDnn);
  const bool blas = (dtype == at::kFloat || dtype == at::kDouble) && cpu_has_gemm_engine(CpuGemmEngine::kBlas);
  const int forced = forced_engine().load(std::memory_order_relaxed);
  if (forced >= 0) {  // that engine where it takes the dtype, else the next one down
    const auto engine = static_cast<CpuGemmEngine>(forced);
    if (engine == CpuGemmEngine::kOneDnn && onednn) {
      return engine;
    }
    return engine != CpuGemmEngine::kAten && blas ? CpuGemmEngine::kBlas : CpuGemmEngine::kAten;
  }
  if (onednn && m * n * k >= kOneDnnMinMacs && std::min(m, k) >= kOneDnnMinSide) {
    return CpuGemmEngine::kOneDnn;
  }
  return blas ? CpuGemmEngine::kBlas : CpuGemmEngine::kAten;
}

const char* cpu_gemm_engine_name(CpuGemmEngine engine) {
  switch (engine) {
    case CpuGemmEngine::kOneDnn:
      return "onednn";
    case CpuGemmEngine::kBlas:
      return "blas";
    case CpuGemmEngine::kAten:
      return "aten";
  }
  return "?";
}

void cpu_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate) {
  TORCH_INTERNAL_ASSERT(a.scalar_type() == c.scalar_type() && b.scalar_type() == c.scalar_type(),
                        "myconv: the CPU GEMM takes one dtype, got ", a.scalar_type(), " @ ", b.scalar_type(),
                        " -> ", c.scalar_type());
  cpu_bmm(a, b, c, accumulate, choose_cpu_gemm_engine(c.scalar_type(), c.size(1), c.size(2), a.size(2)));
}

void cpu_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate, CpuGemmEngine engine) {
  TORCH_INTERNAL_ASSERT(a.dim() == 3 && b.dim() == 3 && c.dim() == 3 && a.size(2) == b.size(1) &&
                        c.size(1) == a.size(1) && c.size(2) == b.size(2) && a.size(0) == c.size(0) &&
                        b.size(0) == c.size(0));
  if (c.numel() == 0) {
    return;
  }
  int64_t first = 0;  // entries [0, first) are done
  if (engine == CpuGemmEngine::kOneDnn && cpu_has_gemm_engine(engine)) {
    first = onednn_bmm(a, b, c, accumulate);
    if (first == c.size(0)) {
      return;
    }
    engine = CpuGemmEngine::kBlas;
  }
  if (engine == CpuGemmEngine::kBlas && cpu_has_gemm_engine(engine)) {
    const auto rest = [&](const at::Tensor& t) { return t.narrow(0, first, t.size(0) - first); };
    const at::Tensor ra = first ? rest(a) : a, rb = first ? rest(b) : b, rc = first ? rest(c) : c;
    if ((c.scalar_type() == at::kFloat && blas_bmm<float>(sgemm_, ra, rb, rc, accumulate)) ||
        (c.scalar_type() == at::kDouble && blas_bmm<double>(dgemm_, ra, rb, rc, accumulate))) {
      return;
    }
  }
  aten_bmm(a, b, c, accumulate, first);
}

} // namespace myconv::detail

namespace myconv {

std::string cpu_gemm_engine() {
  const int forced = detail::forced_engine().load(std::memory_order_relaxed);
  return forced < 0 ? "auto" : detail::cpu_gemm_engine_name(static_cast<detail::CpuGemmEngine>(forced));
}

void set_cpu_gemm_engine(const std::string& engine) {
  using detail::CpuGemmEngine;
  for (const CpuGemmEngine e : {CpuGemmEngine::kAten, CpuGemmEngine::kBlas, CpuGemmEngine::kOneDnn}) {
    if (engine == detail::cpu_gemm_engine_name(e)) {
      detail::forced_engine().store(static_cast<int>(e), std::memory_order_relaxed);
      return;
    }
  }
  TORCH_CHECK(engine == "auto", "myconv: expected a CPU GEMM engine 'auto', 'onednn', 'blas' or 'aten', but got '",
              engine, "'");
  detail::forced_engine().store(-1, std::memory_order_relaxed);
}

} // namespace myconv
