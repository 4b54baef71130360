// CUDA backend: the im2col / col2im kernels of im2col.cu, GEMM through cuBLAS
// (PyTorch's handle, bound to PyTorch's current stream), and the CUDA
// registration of the composed ops.
#include <ATen/Context.h>
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/cuda/Exceptions.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <optional>

#include "../csrc/conv2d_impl.h"
#include "kernels.h"

namespace myconv::detail {
namespace {

// How cuBLAS (column-major) reads a row-major r x c matrix view with strides
// (row_stride, col_stride): as its transpose with op N, or as itself with op T.
struct BlasOperand {
  cublasOperation_t op;
  int64_t ld;
};

std::optional<BlasOperand> transposed_operand(int64_t rows, int64_t cols, int64_t row_stride,
                                              int64_t col_stride) {
  if (col_stride == 1 && row_stride >= std::max<int64_t>(1, cols)) {
    return BlasOperand{CUBLAS_OP_N, row_stride};
  }
  if (row_stride == 1 && col_stride >= std::max<int64_t>(1, rows)) {
    return BlasOperand{CUBLAS_OP_T, col_stride};
  }
  return std::nullopt;
}

// Operand of a 3-D (batch, rows, cols) tensor, made contiguous when its
// strides are not BLAS-compatible.
BlasOperand operand_of(at::Tensor& t) {
  auto op = transposed_operand(t.size(1), t.size(2), t.stride(1), t.stride(2));
  if (!op) {
    t = t.contiguous();
    op = transposed_operand(t.size(1), t.size(2), t.stride(1), t.stride(2));
  }
  return *op;
}

struct GemmTypes {
  cudaDataType_t data;
  cublasComputeType_t compute;
  bool double_scalars;  // alpha/beta as double (else float)
};

GemmTypes gemm_types(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return {CUDA_R_64F, CUBLAS_COMPUTE_64F, true};
    case at::kFloat:
      // TF32 tensor cores only where the user allows them
      // (torch.backends.cuda.matmul.allow_tf32).
      return {CUDA_R_32F,
              at::globalContext().allowTF32CuBLAS() ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                    : CUBLAS_COMPUTE_32F,
              false};
    case at::kHalf:
      return {CUDA_R_16F, CUBLAS_COMPUTE_32F, false};  // float32 accumulation
    case at::kBFloat16:
      return {CUDA_R_16BF, CUBLAS_COMPUTE_32F, false};
    default:
      TORCH_CHECK(false, "myconv: no cuBLAS GEMM for dtype ", t);
  }
}

// For float16 / bfloat16, cuBLAS may reduce split-K partial sums in the
// output's precision unless told not to: force float32 accumulation for the
// duration of one call, then restore the handle's math mode.
class Float32AccumulationGuard {
 public:
  Float32AccumulationGuard(cublasHandle_t handle, bool enable) : handle_(handle), enabled_(enable) {
    if (enabled_) {
      TORCH_CUDABLAS_CHECK(cublasGetMathMode(handle_, &saved_));
      TORCH_CUDABLAS_CHECK(cublasSetMathMode(
          handle_, static_cast<cublasMath_t>(saved_ | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    }
  }
  ~Float32AccumulationGuard() {
    if (enabled_) {
      cublasSetMathMode(handle_, saved_);  // no throwing from a destructor
    }
  }
  Float32AccumulationGuard(const Float32AccumulationGuard&) = delete;
  Float32AccumulationGuard& operator=(const Float32AccumulationGuard&) = delete;

 private:
  cublasHandle_t handle_;
  bool enabled_;
  cublasMath_t saved_ = CUBLAS_DEFAULT_MATH;
};

int as_blas_int(int64_t v, const char* what) {
  TORCH_CHECK(v <= INT_MAX, "myconv: GEMM ", what, "=", v, " exceeds cuBLAS's 32-bit limit");
  return static_cast<int>(v);
}

// The kernels cover whole NCHW images: tiles are chunks of whole images (as
// many as the workspace limit allows), one pass item at a time, all groups in
// one strided-batched GEMM.
void check_whole_images(const PlaneGeometry& g, const ColumnTile& tile, ColumnLayout layout,
                        const at::Tensor& images) {
  TORCH_INTERNAL_ASSERT(tile.l_begin == 0 && tile.l_end == g.cols() && tile.c_begin == 0 &&
                            tile.c_end == g.channels && layout.col_stride == 1 &&
                            !layout.channels_last && images.is_contiguous(),
                        "myconv: the CUDA im2col / col2im kernels take whole NCHW images");
}

class CudaBackend final : public Backend {
 public:
  Tuning tuning(const at::Tensor&) const override {
    return Tuning{};  // whole-image chunks, one worker, no view / NHWC / direct paths
  }

  void im2col(const at::Tensor& images, const PlaneGeometry& g, const ColumnTile& tile,
              const at::Tensor& columns, ColumnLayout layout) const override {
    check_whole_images(g, tile, layout, images);
    myconv::cuda::im2col(images, g, columns, layout);
  }

  void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile,
              const PlaneGeometry& g, const at::Tensor& images, bool accumulate) const override {
    check_whole_images(g, tile, layout, images);
    TORCH_INTERNAL_ASSERT(!accumulate, "myconv: the CUDA col2im kernel overwrites its images");
    myconv::cuda::col2im(columns, layout, g, images);
  }

  // c[i] = a[i] @ b[i] (+ c[i]) as one strided-batched GEMM. Row-major C = A B
  // is column-major C^T = B^T A^T, so cuBLAS gets (B, A) with m = n(C), n = m(C).
  void bmm(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& c,
           bool accumulate) const override {
    TORCH_INTERNAL_ASSERT(c.is_contiguous());
    at::Tensor a = a_in, b = b_in;
    const BlasOperand opa = operand_of(a);
    const BlasOperand opb = operand_of(b);
    const int64_t batch = c.size(0), m = c.size(1), n = c.size(2), k = a.size(2);
    if (batch == 0 || m == 0 || n == 0) {
      return;
    }
    const GemmTypes types = gemm_types(c.scalar_type());
    const double alpha_d = 1.0, beta_d = accumulate ? 1.0 : 0.0;
    const float alpha_f = 1.0f, beta_f = accumulate ? 1.0f : 0.0f;
    const void* alpha = types.double_scalars ? static_cast<const void*>(&alpha_d) : &alpha_f;
    const void* beta = types.double_scalars ? static_cast<const void*>(&beta_d) : &beta_f;

    cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // on the current stream
    const Float32AccumulationGuard fp32_accumulation(
        handle, c.scalar_type() == at::kHalf || c.scalar_type() == at::kBFloat16);
    TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, opb.op, opa.op, as_blas_int(n, "n"), as_blas_int(m, "m"), as_blas_int(k, "k"),
        alpha, b.const_data_ptr(), types.data, as_blas_int(opb.ld, "ldb"), b.stride(0),
        a.const_data_ptr(), types.data, as_blas_int(opa.ld, "lda"), a.stride(0),
        beta, c.mutable_data_ptr(), types.data, as_blas_int(n, "ldc"), c.stride(0),
        as_blas_int(batch, "batch"), types.compute, CUBLAS_GEMM_DEFAULT));
  }
};

} // namespace

TORCH_LIBRARY_IMPL(myconv, CUDA, m) {
  register_backend_kernels<CudaBackend>(m);
}

} // namespace myconv::detail
