#include "blas_plan.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <algorithm>
#include <limits>
#include <utility>

namespace myconv::detail {

std::optional<BlasOperand> blas_operand(int64_t rows, int64_t cols, int64_t row_stride,
                                        int64_t col_stride) {
  // op N: columns adjacent; consecutive rows ld >= cols apart.
  if (cols <= 1 || col_stride == 1) {
    if (rows <= 1) {
      return BlasOperand{false, std::max<int64_t>(1, cols)};
    }
    if (row_stride >= std::max<int64_t>(1, cols)) {
      return BlasOperand{false, row_stride};
    }
  }
  // op T: rows adjacent; consecutive columns ld >= rows apart.
  if (rows <= 1 || row_stride == 1) {
    if (cols <= 1) {
      return BlasOperand{true, std::max<int64_t>(1, rows)};
    }
    if (col_stride >= std::max<int64_t>(1, rows)) {
      return BlasOperand{true, col_stride};
    }
  }
  return std::nullopt;
}

GemmCompute gemm_compute(at::ScalarType dtype, bool allow_tf32) {
  switch (dtype) {
    case at::kDouble:
      return GemmCompute::kFloat64;
    case at::kFloat:
      return allow_tf32 ? GemmCompute::kFloat32FastTF32 : GemmCompute::kFloat32;
    case at::kHalf:
    case at::kBFloat16:
      return GemmCompute::kFloat32;  // float32 accumulation
    default:
      TORCH_CHECK(false, "myconv: no GEMM for dtype ", dtype);
  }
}

const char* gemm_compute_name(GemmCompute compute) {
  switch (compute) {
    case GemmCompute::kFloat64:
      return "64F";
    case GemmCompute::kFloat32:
      return "32F";
    case GemmCompute::kFloat32FastTF32:
      return "32F_FAST_TF32";
  }
  return "?";
}

#if TORCH_VERSION_MAJOR < 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 9)
#error "myconv needs torch >= 2.9 (PyTorch's fp32_precision API decides TF32)"
#endif

bool cuda_matmul_allows_tf32() {
  return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL) ==
         at::Float32Precision::TF32;
}

namespace {

// Elements from t's first element to the end of its storage.
int64_t elements_available(const at::Tensor& t) {
  return static_cast<int64_t>(t.storage().nbytes() / t.element_size()) - t.storage_offset();
}

// The BLAS operand of a (batch, rows, cols) view, or of a fresh contiguous
// copy of it (stored in `copy`) when no operation reads the view.
BlasOperand readable_operand(const at::Tensor& t, at::Tensor& copy) {
  if (const auto op = blas_operand(t.size(1), t.size(2), t.stride(1), t.stride(2))) {
    return *op;
  }
  copy = at::empty(t.sizes(), t.options());  // standard strides, whatever is_contiguous() says of t
  copy.copy_(t);
  const auto op = blas_operand(copy.size(1), copy.size(2), copy.stride(1), copy.stride(2));
  TORCH_INTERNAL_ASSERT(op.has_value(), "myconv: a contiguous copy of size ", copy.sizes(),
                        " and strides ", copy.strides(), " is not a BLAS operand");
  return *op;
}

// The largest element offset a stored (rows x cols) column-major operand
// with leading dimension ld reaches over `batch` matrices, plus one.
int64_t extent(int64_t rows, int64_t cols, int64_t ld, int64_t batch_stride, int64_t batch) {
  if (rows == 0 || cols == 0 || batch == 0) {
    return 0;
  }
  return (batch - 1) * batch_stride + (cols - 1) * ld + rows;
}

// cuBLAS's own argument rules (CUBLAS_STATUS_INVALID_VALUE otherwise): a
// stored column-major (r x c) matrix needs ld >= max(1, r).
void check_blas_rules(const ColumnMajorGemm& g) {
  const std::pair<const char*, int64_t> sizes[] = {{"m", g.m}, {"n", g.n}, {"k", g.k}, {"batch", g.batch},
                                                   {"lda", g.ld_first}, {"ldb", g.ld_second}, {"ldc", g.ld_result}};
  for (const auto& [name, v] : sizes) {
    TORCH_CHECK(v <= std::numeric_limits<int32_t>::max(), "myconv: GEMM ", name, "=", v,
                " exceeds cuBLAS's 32-bit limit");
  }
  const int64_t first_rows = g.transpose_first ? g.k : g.m;    // stored (m x k) or (k x m)
  const int64_t second_rows = g.transpose_second ? g.n : g.k;  // stored (k x n) or (n x k)
  TORCH_INTERNAL_ASSERT(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, "myconv: negative GEMM size");
  TORCH_INTERNAL_ASSERT(g.ld_first >= std::max<int64_t>(1, first_rows) &&
                            g.ld_second >= std::max<int64_t>(1, second_rows) &&
                            g.ld_result >= std::max<int64_t>(1, g.m),
                        "myconv: GEMM leading dimensions (", g.ld_first, ", ", g.ld_second, ", ",
                        g.ld_result, ") below cuBLAS's minimum for m=", g.m, " n=", g.n, " k=", g.k);
}

} // namespace

ColumnMajorGemm plan_column_major_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                                       bool accumulate) {
  TORCH_INTERNAL_ASSERT(a.dim() == 3 && b.dim() == 3 && c.dim() == 3, "myconv: GEMM operands must be 3-D");
  TORCH_INTERNAL_ASSERT(a.size(0) == c.size(0) && b.size(0) == c.size(0) && a.size(1) == c.size(1) &&
                            b.size(2) == c.size(2) && a.size(2) == b.size(1),
                        "myconv: GEMM sizes ", a.sizes(), " @ ", b.sizes(), " -> ", c.sizes());
  TORCH_INTERNAL_ASSERT(a.scalar_type() == b.scalar_type() &&
                            (c.scalar_type() == a.scalar_type() ||
                             (c.scalar_type() == at::kFloat &&
                              (a.scalar_type() == at::kHalf || a.scalar_type() == at::kBFloat16))),
                        "myconv: GEMM dtypes ", a.scalar_type(), " @ ", b.scalar_type(), " -> ", c.scalar_type());
  ColumnMajorGemm g;
  g.batch = c.size(0);
  g.m = c.size(2);
  g.n = c.size(1);
  g.k = a.size(2);
  g.accumulate = accumulate;
  g.dtype = a.scalar_type();
  g.result_dtype = c.scalar_type();

  const BlasOperand first = readable_operand(b, g.first_copy);
  const BlasOperand second = readable_operand(a, g.second_copy);
  const at::Tensor& bb = g.first_copy.defined() ? g.first_copy : b;
  const at::Tensor& aa = g.second_copy.defined() ? g.second_copy : a;
  g.transpose_first = first.transposed;
  g.ld_first = first.ld;
  g.first = bb.const_data_ptr();
  g.stride_first = bb.stride(0);
  g.transpose_second = second.transposed;
  g.ld_second = second.ld;
  g.second = aa.const_data_ptr();
  g.stride_second = aa.stride(0);

  const auto out = blas_operand(c.size(1), c.size(2), c.stride(1), c.stride(2));
  TORCH_INTERNAL_ASSERT(out.has_value() && !out->transposed, "myconv: a GEMM result of size ", c.sizes(),
                        " and strides ", c.strides(), " is not written row by row");
  g.ld_result = out->ld;
  g.stride_result = c.stride(0);
  TORCH_INTERNAL_ASSERT(g.batch <= 1 || g.n == 0 || g.m == 0 ||
                            g.stride_result >= (g.n - 1) * g.ld_result + g.m,
                        "myconv: the GEMM results of a batch overlap (strides ", c.strides(), ")");
  g.result = c.mutable_data_ptr();
  check_blas_rules(g);
  // Every element the BLAS reads or writes lies in its tensor's storage.
  const int64_t first_extent = g.transpose_first ? extent(g.k, g.m, g.ld_first, g.stride_first, g.batch)
                                                 : extent(g.m, g.k, g.ld_first, g.stride_first, g.batch);
  const int64_t second_extent = g.transpose_second ? extent(g.n, g.k, g.ld_second, g.stride_second, g.batch)
                                                   : extent(g.k, g.n, g.ld_second, g.stride_second, g.batch);
  TORCH_INTERNAL_ASSERT(first_extent <= elements_available(bb) && second_extent <= elements_available(aa) &&
                            extent(g.m, g.n, g.ld_result, g.stride_result, g.batch) <= elements_available(c),
                        "myconv: a GEMM operand reaches past its storage");
  return g;
}

namespace {

template <typename scalar_t, typename out_t>
void run_typed(const ColumnMajorGemm& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* A = static_cast<const scalar_t*>(g.first);
  const scalar_t* B = static_cast<const scalar_t*>(g.second);
  out_t* C = static_cast<out_t*>(g.result);
  for (int64_t p = 0; p < g.batch; ++p) {
    const scalar_t* Ap = A + p * g.stride_first;
    const scalar_t* Bp = B + p * g.stride_second;
    out_t* Cp = C + p * g.stride_result;
    for (int64_t j = 0; j < g.n; ++j) {
      for (int64_t i = 0; i < g.m; ++i) {
        acc_t sum = 0;
        for (int64_t l = 0; l < g.k; ++l) {
          const scalar_t a = g.transpose_first ? Ap[l + i * g.ld_first] : Ap[i + l * g.ld_first];
          const scalar_t b = g.transpose_second ? Bp[j + l * g.ld_second] : Bp[l + j * g.ld_second];
          sum += static_cast<acc_t>(a) * static_cast<acc_t>(b);
        }
        out_t& c = Cp[i + j * g.ld_result];
        c = static_cast<out_t>(g.accumulate ? static_cast<acc_t>(c) + sum : sum);
      }
    }
  }
}

} // namespace

void run_column_major_gemm_on_cpu(const ColumnMajorGemm& g) {
  check_blas_rules(g);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.dtype, "myconv_column_major_gemm", [&] {
    if (g.result_dtype == g.dtype) {
      run_typed<scalar_t, scalar_t>(g);
    } else {
      TORCH_INTERNAL_ASSERT(g.result_dtype == at::kFloat);
      run_typed<scalar_t, float>(g);
    }
  });
}

} // namespace myconv::detail
