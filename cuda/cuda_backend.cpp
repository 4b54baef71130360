// CUDA backend: the im2col / col2im kernels of im2col.cu, GEMM through cuBLAS
// (PyTorch's handle, bound to PyTorch's current stream), the direct grouped
// kernels of grouped.cu (depthwise and other grouped convolutions with a tiny
// per-group K), and the CUDA registration of the composed ops.
#include <ATen/cuda/CUDAContextLight.h>
#include <ATen/cuda/Exceptions.h>
#include <torch/library.h>

#include "../csrc/blas_plan.h"
#include "../csrc/convolution.h"
#include "../csrc/cuda_tuning.h"
#include "grouped_kernels.h"
#include "kernels.h"

namespace myconv::detail {
namespace {

cudaDataType_t blas_data_type(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return CUDA_R_64F;
    case at::kFloat:
      return CUDA_R_32F;
    case at::kHalf:
      return CUDA_R_16F;
    case at::kBFloat16:
      return CUDA_R_16BF;
    default:
      TORCH_CHECK(false, "myconv: no cuBLAS GEMM for dtype ", t);
  }
}

cublasComputeType_t blas_compute_type(GemmCompute compute) {
  switch (compute) {
    case GemmCompute::kFloat64:
      return CUBLAS_COMPUTE_64F;
    case GemmCompute::kFloat32FastTF32:
      return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmCompute::kFloat32:
    default:
      return CUBLAS_COMPUTE_32F;
  }
}

cublasOperation_t blas_op(bool transposed) {
  return transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
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

// cuBLAS's 32-bit sizes (checked by the plan, which the CPU tests replay).
int blas_int(int64_t v) {
  return static_cast<int>(v);
}

// The kernels cover every position of whole images: channels-first images
// with all their channels in a tile of rows (c, kd, kh, kw); channels-last
// ones with any run of their channels (a group's) in (positions, rows) tiles
// of rows (kd, kh, kw, c).
void check_whole_images(const ConvGeometry& g, const ColumnTile& tile, ColumnLayout layout,
                        const at::Tensor& images) {
  TORCH_INTERNAL_ASSERT(tile.l_begin == 0 && tile.l_end == g.cols(),
                        "myconv: the CUDA im2col / col2im kernels take every position of whole images");
  if (layout.channels_last) {
    TORCH_INTERNAL_ASSERT(images.is_contiguous(at::MemoryFormat::ChannelsLast3d) && tile.c_begin >= 0 &&
                              tile.c_end <= g.channels,
                          "myconv: the CUDA channels-last im2col / col2im kernels take channels-last images");
    return;
  }
  TORCH_INTERNAL_ASSERT(tile.c_begin == 0 && tile.c_end == g.channels && layout.col_stride == 1 &&
                            images.is_contiguous(),
                        "myconv: the CUDA channels-first im2col / col2im kernels take all channels of contiguous "
                        "images");
}

class CudaBackend final : public Backend {
 public:
  Tuning tuning(const at::Tensor&) const override {
    // whole-image chunks, one worker, 1x1 GEMMs on views, channels-last columns; direct
    // grouped kernels (the CPU backend replays this plan for the tests); with the
    // overrides of myconv::set_cuda_tuning
    return cuda_tuning_in_effect();
  }

  const char* gemm_engine(at::ScalarType dtype, int64_t, int64_t, int64_t) const override {
    switch (gemm_compute(dtype, cuda_matmul_allows_tf32())) {
      case GemmCompute::kFloat64:
        return "cublas/64F";
      case GemmCompute::kFloat32:
        return "cublas/32F";
      case GemmCompute::kFloat32FastTF32:
        return "cublas/32F_FAST_TF32";
    }
    return "cublas";
  }

  void im2col(const at::Tensor& images, const ConvGeometry& g, const ColumnTile& tile,
              const at::Tensor& columns, ColumnLayout layout) const override {
    check_whole_images(g, tile, layout, images);
    myconv::cuda::im2col(images, g, tile, columns, layout);
  }

  void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile,
              const ConvGeometry& g, const at::Tensor& images, bool accumulate) const override {
    check_whole_images(g, tile, layout, images);
    TORCH_INTERNAL_ASSERT(!accumulate, "myconv: the CUDA col2im kernel overwrites its images");
    myconv::cuda::col2im(columns, layout, tile, g, images);
  }

  // c[i] = a[i] @ b[i] (+ c[i]) as one strided-batched GEMM, called as
  // csrc/blas_plan.h plans it (the plan the CPU tests replay).
  void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
           bool accumulate) const override {
    const ColumnMajorGemm g = plan_column_major_gemm(a, b, c, accumulate);
    if (g.batch == 0 || g.m == 0 || g.n == 0) {
      return;
    }
    const bool float64 = g.dtype == at::kDouble;
    const double alpha_d = 1.0, beta_d = accumulate ? 1.0 : 0.0;
    const float alpha_f = 1.0f, beta_f = accumulate ? 1.0f : 0.0f;
    const void* alpha = float64 ? static_cast<const void*>(&alpha_d) : &alpha_f;
    const void* beta = float64 ? static_cast<const void*>(&beta_d) : &beta_f;
    const cudaDataType_t data = blas_data_type(g.dtype), result = blas_data_type(g.result_dtype);
    const cublasComputeType_t compute = blas_compute_type(gemm_compute(g.dtype, cuda_matmul_allows_tf32()));

    cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // on the current stream
    const Float32AccumulationGuard fp32_accumulation(handle, g.dtype == at::kHalf || g.dtype == at::kBFloat16);
    TORCH_CUDABLAS_CHECK(cublasGemmStridedBatchedEx(
        handle, blas_op(g.transpose_first), blas_op(g.transpose_second), blas_int(g.m),
        blas_int(g.n), blas_int(g.k), alpha, g.first, data, blas_int(g.ld_first),
        g.stride_first, g.second, data, blas_int(g.ld_second), g.stride_second, beta, g.result,
        result, blas_int(g.ld_result), g.stride_result, blas_int(g.batch), compute,
        CUBLAS_GEMM_DEFAULT));
  }

  // Direct grouped kernels (grouped.cu): one thread per output / input
  // element, one block per weight element, each summed in a fixed order.
  void grouped_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                       const ConvGeometry& g, int64_t groups, bool channels_last,
                       const at::Tensor& out) const override {
    myconv::cuda::grouped_forward(x, w, bias, g, groups, channels_last, out);
  }

  void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w, const ConvGeometry& g, int64_t groups,
                          bool channels_last, const at::Tensor& gi) const override {
    myconv::cuda::grouped_grad_input(gy, w, g, groups, channels_last, gi);
  }

  // (channels-last tensors: grad_weight's lanes take runs of consecutive
  // output channels of a position, coalesced; no channels-first copies)
  void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x, const ConvGeometry& g, int64_t groups,
                           bool channels_last, const at::Tensor& gw) const override {
    myconv::cuda::grouped_grad_weight(gy, x, g, groups, channels_last, gw);
  }
};

} // namespace

TORCH_LIBRARY_IMPL(myconv, CUDA, m) {
  register_backend_kernels<CudaBackend>(m, c10::DeviceType::CUDA);
}

} // namespace myconv::detail
