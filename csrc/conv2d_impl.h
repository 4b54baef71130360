// Convolution composed once from three device primitives.
//
// A backend (CPU in csrc/cpu/, CUDA in cuda/) supplies im2col, col2im and a
// batched GEMM; conv2d forward/backward and the im2col/col2im ops are written
// once in conv2d_impl.cpp on top of them. The backends register these
// compositions under their dispatch key with register_backend_kernels().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

#include "conv_shape.h"

namespace myconv::detail {

class Backend {
 public:
  virtual ~Backend() = default;

  // columns <- im2col(images). images: contiguous (B, C, H, W); columns: a
  // buffer of images.dtype() holding B column matrices in `layout`. Every
  // column entry is written (zero where the window is in the padding).
  virtual void im2col(const at::Tensor& images, const PlaneGeometry& g,
                      const at::Tensor& columns, ColumnLayout layout) const = 0;

  // images <- col2im(columns). Each image element is the sum of the column
  // entries that came from it, accumulated in a fixed order (deterministic),
  // in float for reduced-precision dtypes. images: contiguous (B, C, H, W),
  // overwritten.
  virtual void col2im(const at::Tensor& columns, ColumnLayout layout, const PlaneGeometry& g,
                      const at::Tensor& images) const = 0;

  // c[i] = a[i] @ b[i] (+ c[i] when accumulate), for 3-D tensors of one dtype.
  // a and b may be transposed views; c is contiguous.
  virtual void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                   bool accumulate) const = 0;
};

// The compositions. Each validates its arguments with conv_shape.h first.
at::Tensor conv2d(const Backend& backend, const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const Backend& backend, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask);

at::Tensor im2col(const Backend& backend, const at::Tensor& input, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride);

at::Tensor col2im(const Backend& backend, const at::Tensor& input, c10::SymIntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride);

// Images per chunk so that a chunk's workspace (bytes_per_image each) stays
// within the workspace limit and a chunk's cols_per_image * images columns fit
// the 32-bit dimensions of BLAS; at least 1, at most `batch`.
int64_t batch_chunk(int64_t batch, int64_t bytes_per_image, int64_t cols_per_image);

// Registers the four compositions, bound to the backend B, in a
// TORCH_LIBRARY_IMPL block: `register_backend_kernels<CpuBackend>(m);`.
template <class B>
struct BackendKernels {
  static const Backend& backend() {
    static const B instance;
    return instance;
  }
  static at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
    return detail::conv2d(backend(), input, weight, bias, stride, padding, dilation, groups);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
      std::array<bool, 3> output_mask) {
    return detail::conv2d_backward(backend(), grad_output, input, weight, stride, padding,
                                   dilation, groups, output_mask);
  }
  static at::Tensor im2col(const at::Tensor& input, at::IntArrayRef kernel_size,
                           at::IntArrayRef dilation, at::IntArrayRef padding,
                           at::IntArrayRef stride) {
    return detail::im2col(backend(), input, kernel_size, dilation, padding, stride);
  }
  static at::Tensor col2im(const at::Tensor& input, c10::SymIntArrayRef output_size,
                           at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                           at::IntArrayRef padding, at::IntArrayRef stride) {
    return detail::col2im(backend(), input, output_size, kernel_size, dilation, padding, stride);
  }
};

template <class B>
void register_backend_kernels(torch::Library& m) {
  using K = BackendKernels<B>;
  m.impl("conv2d", TORCH_FN(K::conv2d));
  m.impl("conv2d_backward", TORCH_FN(K::conv2d_backward));
  m.impl("im2col", TORCH_FN(K::im2col));
  m.impl("col2im", TORCH_FN(K::col2im));
}

} // namespace myconv::detail
