// The convolution ops composed once over a Backend, for 1, 2 and 3 spatial
// dimensions: convNd, convNd_backward, conv_transposeNd, and the im2col /
// col2im ops. Each validates its arguments with conv_shape.h, views its
// tensors as 5-D (N, C, D, H, W) ones (unit leading spatial sizes for fewer
// dimensions: no copies), chooses the path in one place (direct grouped
// kernels or column passes, channels-first or channels-last columns) and runs
// the passes of conv_passes.h. Backends register these compositions under
// their dispatch key with register_backend_kernels<B>().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "backend.h"
#include "conv_plan.h"
#include "pass_plan.h"

namespace myconv::detail {

// A call's tensors as 5-D views, the backend's tuning and the settings read
// once, and the problem: what the passes are planned from. Tensors may be
// meta tensors (myconv.explain).
struct ConvCall {
  bool batched;
  at::Tensor x5, w5;
  Tuning tuning;
  PlanSettings settings;
  ConvProblem problem;
  // A convolution of input with weight.
  ConvCall(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
  // A transposed convolution of input with weight, its output of out_size
  // (transposed_output_size).
  ConvCall(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
           at::IntArrayRef out_size, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
           int64_t groups);
};

// A transposed convolution's output size as (N, C_out, D, H, W), from the
// size check_conv_transpose returns.
std::vector<int64_t> transposed_output_size(int64_t dims, const at::Tensor& input, c10::SymIntArrayRef checked_size);

at::Tensor conv(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                at::IntArrayRef dilation, int64_t groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(
    const Backend& backend, int64_t dims, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask);

// The transposed convolution: the convolution's input-gradient pass (GEMM,
// col2im).
at::Tensor conv_transpose(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation);

at::Tensor im2col(const Backend& backend, const at::Tensor& input, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride);

at::Tensor col2im(const Backend& backend, const at::Tensor& input, c10::SymIntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation, at::IntArrayRef padding,
                  at::IntArrayRef stride);

// The compositions bound to the backend B, with the ops' signatures.
template <class B>
struct BackendKernels {
  static const Backend& backend() {
    static const B instance;
    return instance;
  }
  template <int64_t D>
  static at::Tensor conv(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
    return detail::conv(backend(), D, input, weight, bias, stride, padding, dilation, groups);
  }
  template <int64_t D>
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
    return detail::conv_backward(backend(), D, grad_output, input, weight, stride, padding, dilation, groups,
                                 output_mask);
  }
  template <int64_t D>
  static at::Tensor conv_transpose(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation) {
    return detail::conv_transpose(backend(), D, input, weight, bias, stride, padding, output_padding, groups,
                                  dilation);
  }
  static at::Tensor im2col(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                           at::IntArrayRef padding, at::IntArrayRef stride) {
    return detail::im2col(backend(), input, kernel_size, dilation, padding, stride);
  }
  static at::Tensor col2im(const at::Tensor& input, c10::SymIntArrayRef output_size, at::IntArrayRef kernel_size,
                           at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
    return detail::col2im(backend(), input, output_size, kernel_size, dilation, padding, stride);
  }
};

// Registers the compositions, bound to the backend B, in a
// TORCH_LIBRARY_IMPL block, and B as the backend of `device` (find_backend):
// `register_backend_kernels<CpuBackend>(m, c10::DeviceType::CPU);`.
template <class B>
void register_backend_kernels(torch::Library& m, c10::DeviceType device) {
  using K = BackendKernels<B>;
  register_backend(device, K::backend());
  m.impl("conv1d", TORCH_FN(K::template conv<1>));
  m.impl("conv2d", TORCH_FN(K::template conv<2>));
  m.impl("conv3d", TORCH_FN(K::template conv<3>));
  m.impl("conv1d_backward", TORCH_FN(K::template conv_backward<1>));
  m.impl("conv2d_backward", TORCH_FN(K::template conv_backward<2>));
  m.impl("conv3d_backward", TORCH_FN(K::template conv_backward<3>));
  m.impl("conv_transpose1d", TORCH_FN(K::template conv_transpose<1>));
  m.impl("conv_transpose2d", TORCH_FN(K::template conv_transpose<2>));
  m.impl("conv_transpose3d", TORCH_FN(K::template conv_transpose<3>));
  m.impl("im2col", TORCH_FN(K::im2col));
  m.impl("col2im", TORCH_FN(K::col2im));
}

} // namespace myconv::detail
