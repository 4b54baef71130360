// How a column-major BLAS (cuBLAS) is called for the composition's GEMMs on
// strided row-major views, and which compute type a GEMM gets.
//
// Plain C++, no device code: the CUDA backend hands the plan to cuBLAS, and
// the CPU backend, when it runs the CUDA backend's work plan
// (myconv::set_cpu_whole_image_plan), executes the very same plan with a
// reference column-major GEMM that reads memory only through the plan's
// pointers, leading dimensions and batch strides. So every operand the
// composition would give a GPU is checked where there is none.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>

namespace myconv::detail {

// How a column-major BLAS reads a row-major (rows x cols) matrix view whose
// elements are at row * row_stride + col * col_stride:
//  - transposed == false (op N): as the column-major (cols x rows) matrix
//    with leading dimension ld = row_stride, i.e. the view's transpose;
//  - transposed == true (op T): as the column-major (rows x cols) matrix with
//    ld = col_stride, i.e. the view itself.
// The stride of a dimension of size 1 (or 0) is never used, so any value
// (0, or a stale one after a view) is accepted there; ld is then the smallest
// the BLAS allows. Nothing when neither reading fits (zero strides of a longer
// dimension, both strides above 1, overlapping rows).
struct BlasOperand {
  bool transposed = false;
  int64_t ld = 1;
};
std::optional<BlasOperand> blas_operand(int64_t rows, int64_t cols, int64_t row_stride,
                                        int64_t col_stride);

// The GEMM's compute type: float64 in double; float32 in float, or TF32 where
// PyTorch's CUDA matmul setting allows it; float16 and bfloat16 accumulate in
// float32.
enum class GemmCompute { kFloat64, kFloat32, kFloat32FastTF32 };
GemmCompute gemm_compute(at::ScalarType dtype, bool allow_tf32);
const char* gemm_compute_name(GemmCompute compute);

// PyTorch's float32 precision for CUDA matmuls is TF32. Read through the
// current API (torch.backends.cuda.matmul.fp32_precision, with its fallback to
// torch.backends.cuda.fp32_precision and torch.backends.fp32_precision), which
// the legacy flag (allow_tf32) and torch.set_float32_matmul_precision also
// set; the legacy getter throws once the current API has been used.
bool cuda_matmul_allows_tf32();

// c[i] = a[i] @ b[i] (+ c[i] when accumulate), a (batch, m, k), b (batch, k,
// n), c (batch, m, n) row-major views, as one column-major strided-batched
// GEMM: C^T = B^T A^T, so the BLAS's first operand is b and its second a,
// its (m, n) is (n, m) of c.
struct ColumnMajorGemm {
  bool transpose_first = false, transpose_second = false;  // op T for the first / second operand
  int64_t m = 0, n = 0, k = 0, batch = 0;
  const void* first = nullptr;  // b's data
  int64_t ld_first = 1, stride_first = 0;
  const void* second = nullptr;  // a's data
  int64_t ld_second = 1, stride_second = 0;
  void* result = nullptr;  // c's data
  int64_t ld_result = 1, stride_result = 0;
  bool accumulate = false;
  at::ScalarType dtype = at::kFloat;         // a's and b's
  at::ScalarType result_dtype = at::kFloat;  // c's: dtype, or float32 for float16 / bfloat16 operands
  // Contiguous copies of operands the BLAS could not read as given; they
  // must outlive the call.
  at::Tensor first_copy, second_copy;
};

// The call for c = a @ b (+ c). An operand whose strides no BLAS operation
// reads is copied into a fresh contiguous tensor (kept in the plan); c must be
// readable as op N (the composition writes results row by row). Asserts that
// every operand is readable and within its storage, and checks cuBLAS's
// argument rules (leading dimensions, 32-bit sizes) before returning.
ColumnMajorGemm plan_column_major_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                                       bool accumulate);

// Executes a plan on the CPU exactly as a column-major BLAS would read it
// (pointers, op, ld and batch stride only), accumulating in float64 for
// float64 and float32 otherwise. For tests of the CUDA backend's plan: it
// checks which memory is read, not cuBLAS's rounding (it never rounds to
// TF32, and sums in its own order).
void run_column_major_gemm_on_cpu(const ColumnMajorGemm& gemm);

} // namespace myconv::detail
