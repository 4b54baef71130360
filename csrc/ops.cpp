// Every operator of the myconv library: schemas (TORCH_LIBRARY), the Meta
// (shape-only) kernels, and the C++ API that calls them through the dispatcher.
//
// Backends register their kernels elsewhere:
//   CPU       csrc/cpu/conv2d_cpu.cpp        TORCH_LIBRARY_IMPL(myconv, CPU, m)
//   CUDA      cuda/conv2d_cuda.cpp           TORCH_LIBRARY_IMPL(myconv, CUDA, m)
//   Autograd  csrc/autograd/autograd.cpp     TORCH_LIBRARY_IMPL(myconv, Autograd, m)
//   Meta      here                           TORCH_LIBRARY_IMPL(myconv, Meta, m)
//   conv2d.padding ('same' / 'valid') is a composite of conv2d, and the
//   Autocast keys cast conv2d's inputs like F.conv2d's: both here too.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>

#include "blas_plan.h"
#include "conv_shape.h"
#include "myconv.h"

TORCH_LIBRARY(myconv, m) {
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, "
      "int[2] padding=0, int[2] dilation=1, int groups=1) -> Tensor");
  m.def(
      "conv2d.padding(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, "
      "str padding=\"valid\", int[2] dilation=1, int groups=1) -> Tensor");
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, "
      "int[2] padding=0, int[2] output_padding=0, int groups=1, int[2] dilation=1) -> Tensor");
  m.def(
      "im2col(Tensor input, int[2] kernel_size, int[2] dilation, int[2] padding, "
      "int[2] stride) -> Tensor");
  m.def(
      "col2im(Tensor input, SymInt[2] output_size, int[2] kernel_size, int[2] dilation, "
      "int[2] padding, int[2] stride) -> Tensor");
  // Process-wide settings, not tensor ops: the column workspace bound.
  m.def("_get_workspace_limit() -> int", &myconv::workspace_limit_bytes);
  m.def("_set_workspace_limit(int bytes) -> ()", &myconv::set_workspace_limit_bytes);
  // Process-wide setting: the CPU column-tile size (0: from the L2 cache).
  m.def("_get_tile_bytes() -> int", &myconv::tile_bytes);
  m.def("_set_tile_bytes(int bytes) -> ()", &myconv::set_tile_bytes);
  // For tests: the CPU backend with the CUDA backend's work plan.
  m.def("_set_cpu_whole_image_plan(bool on) -> ()", &myconv::set_cpu_whole_image_plan);
  // For tests: the peak workspace of this thread's latest conv2d / conv2d_backward.
  m.def("_last_workspace_peak() -> int", &myconv::last_workspace_peak_bytes);
  // For tests: the compute type the CUDA backend's GEMMs take for a dtype under
  // PyTorch's current float32 matmul precision ("64F", "32F", "32F_FAST_TF32").
  m.def("_gemm_compute_type(ScalarType dtype) -> str", [](c10::ScalarType dtype) {
    return std::string(myconv::detail::gemm_compute_name(
        myconv::detail::gemm_compute(dtype, myconv::detail::cuda_matmul_allows_tf32())));
  });
}

namespace myconv {
namespace {

using detail::check_col2im;
using detail::check_conv2d;
using detail::check_conv2d_backward;
using detail::check_im2col;

at::Tensor conv2d_meta(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto size =
      check_conv2d("myconv::conv2d", input, weight, bias, stride, padding, dilation, groups);
  return at::empty_symint(
      size, input.options().memory_format(detail::conv2d_memory_format(input, weight)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  // Each gradient takes the layout of the tensor it is the gradient of.
  const auto like = [](const at::Tensor& t) {
    return at::empty_symint(t.sym_sizes(), t.options().memory_format(t.suggest_memory_format()));
  };
  return {output_mask[0] ? like(input) : at::Tensor(),
          output_mask[1] ? like(weight) : at::Tensor(),
          output_mask[2] ? at::empty_symint({weight.sym_size(0)}, weight.options()) : at::Tensor()};
}

at::Tensor conv_transpose2d_meta(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                 at::IntArrayRef dilation) {
  const auto size = detail::check_conv_transpose2d("myconv::conv_transpose2d", input, weight, bias, stride,
                                                   padding, output_padding, dilation, groups);
  return at::empty_symint(
      size, input.options().memory_format(detail::conv2d_memory_format(input, weight)));
}

at::Tensor im2col_meta(const at::Tensor& input, at::IntArrayRef kernel_size,
                       at::IntArrayRef dilation, at::IntArrayRef padding,
                       at::IntArrayRef stride) {
  return at::empty_symint(check_im2col(input, kernel_size, dilation, padding, stride),
                          input.options());
}

at::Tensor col2im_meta(const at::Tensor& input, c10::SymIntArrayRef output_size,
                       at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                       at::IntArrayRef padding, at::IntArrayRef stride) {
  return at::empty_symint(
      check_col2im(input, output_size, kernel_size, dilation, padding, stride), input.options());
}

// Autocast: conv_transpose2d runs in the autocast dtype, as F.conv_transpose2d does.
template <c10::DeviceType device, c10::DispatchKey key>
at::Tensor conv_transpose2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                     at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  return myconv::conv_transpose2d(at::autocast::cached_cast(dtype, input, device),
                                  at::autocast::cached_cast(dtype, weight, device),
                                  at::autocast::cached_cast(dtype, bias, device), stride, padding,
                                  output_padding, groups, dilation);
}

// padding='same' / 'valid': conv2d with the padding PyTorch would use; an odd
// 'same' total puts its extra zero at the bottom / right by padding the input.
at::Tensor conv2d_string_padding(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 c10::string_view padding, at::IntArrayRef dilation,
                                 int64_t groups) {
  if (weight.dim() != 4) {  // let conv2d report the bad weight
    return myconv::conv2d(input, weight, bias, stride, {0, 0}, dilation, groups);
  }
  const std::array<int64_t, 2> kernel{weight.sym_size(2).guard_int(__FILE__, __LINE__),
                                      weight.sym_size(3).guard_int(__FILE__, __LINE__)};
  const auto pad = detail::string_padding("myconv::conv2d", padding, kernel, stride, dilation);
  at::Tensor x = input;
  if (pad.extra[0] != 0 || pad.extra[1] != 0) {
    x = at::constant_pad_nd(input, {0, pad.extra[1], 0, pad.extra[0]}, 0);
  }
  return myconv::conv2d(x, weight, bias, stride, pad.both, dilation, groups);
}

// Autocast: conv2d runs in the autocast dtype, as F.conv2d does.
template <c10::DeviceType device, c10::DispatchKey key>
at::Tensor conv2d_autocast(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  return myconv::conv2d(at::autocast::cached_cast(dtype, input, device),
                        at::autocast::cached_cast(dtype, weight, device),
                        at::autocast::cached_cast(dtype, bias, device), stride, padding, dilation,
                        groups);
}

} // namespace

TORCH_LIBRARY_IMPL(myconv, CompositeImplicitAutograd, m) {
  m.impl("conv2d.padding", TORCH_FN(conv2d_string_padding));
}

TORCH_LIBRARY_IMPL(myconv, AutocastCPU, m) {
  m.impl("conv2d", TORCH_FN((conv2d_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>)));
  m.impl("conv_transpose2d",
         TORCH_FN((conv_transpose2d_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>)));
}

TORCH_LIBRARY_IMPL(myconv, AutocastCUDA, m) {
  m.impl("conv2d", TORCH_FN((conv2d_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>)));
  m.impl("conv_transpose2d",
         TORCH_FN((conv_transpose2d_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>)));
}

TORCH_LIBRARY_IMPL(myconv, Meta, m) {
  m.impl("conv2d", TORCH_FN(conv2d_meta));
  m.impl("conv2d_backward", TORCH_FN(conv2d_backward_meta));
  m.impl("conv_transpose2d", TORCH_FN(conv_transpose2d_meta));
  m.impl("im2col", TORCH_FN(im2col_meta));
  m.impl("col2im", TORCH_FN(col2im_meta));
}

// ---- C++ API: typed dispatcher calls -------------------------------------

namespace {

template <class Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

} // namespace

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                         at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t)>(
          "myconv::conv2d");
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

at::Tensor conv2d_padding(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                          c10::string_view padding, at::IntArrayRef dilation, int64_t groups) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("myconv::conv2d", "padding")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                            at::IntArrayRef, c10::string_view, at::IntArrayRef, int64_t)>();
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  static const auto op = find_op<decltype(conv2d_backward)>("myconv::conv2d_backward");
  return op.call(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
}

at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                            at::IntArrayRef dilation) {
  static const auto op = find_op<decltype(conv_transpose2d)>("myconv::conv_transpose2d");
  return op.call(input, weight, bias, stride, padding, output_padding, groups, dilation);
}

at::Tensor im2col(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride) {
  static const auto op = find_op<decltype(im2col)>("myconv::im2col");
  return op.call(input, kernel_size, dilation, padding, stride);
}

at::Tensor col2im_symint(const at::Tensor& input, c10::SymIntArrayRef output_size,
                         at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                         at::IntArrayRef padding, at::IntArrayRef stride) {
  static const auto op = find_op<decltype(col2im_symint)>("myconv::col2im");
  return op.call(input, output_size, kernel_size, dilation, padding, stride);
}

at::Tensor col2im(const at::Tensor& input, at::IntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride) {
  return myconv::col2im_symint(input, c10::fromIntArrayRefSlow(output_size), kernel_size, dilation,
                       padding, stride);
}

} // namespace myconv
