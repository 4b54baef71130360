// Every operator of the myconv library: schemas (TORCH_LIBRARY), the Meta
// (shape-only) kernels, the autocast and 'same' / 'valid' padding wrappers,
// and the C++ API that calls the ops through the dispatcher.
//
// Backends register their kernels elsewhere:
//   CPU       csrc/cpu/cpu_backend.cpp       TORCH_LIBRARY_IMPL(myconv, CPU, m)
//   CUDA      cuda/cuda_backend.cpp          TORCH_LIBRARY_IMPL(myconv, CUDA, m)
//   Autograd  csrc/autograd/autograd.cpp     TORCH_LIBRARY_IMPL(myconv, Autograd, m)
//   Meta      here                           TORCH_LIBRARY_IMPL(myconv, Meta, m)
//   convNd.padding ('same' / 'valid') is a composite of convNd, and the
//   Autocast keys cast the convolutions' inputs like F.convNd's: both here too.
// Every convolution op exists for 1, 2 and 3 spatial dimensions; each
// wrapper here is one template over the number D of them.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "autotune.h"
#include "blas_plan.h"
#include "cpu/cpu_gemm.h"
#include "conv_shape.h"
#include "explain.h"
#include "myconv/ops.h"
#include "ops_nd.h"

TORCH_LIBRARY(myconv, m) {
  for (const std::string d : {"1", "2", "3"}) {
    const std::string ints = "int[" + d + "]";
    const std::string schemas[] = {
        "conv" + d + "d(Tensor input, Tensor weight, Tensor? bias=None, " + ints + " stride=1, " + ints +
            " padding=0, " + ints + " dilation=1, int groups=1) -> Tensor",
        "conv" + d + "d.padding(Tensor input, Tensor weight, Tensor? bias=None, " + ints +
            " stride=1, str padding=\"valid\", " + ints + " dilation=1, int groups=1) -> Tensor",
        "conv" + d + "d_backward(Tensor grad_output, Tensor input, Tensor weight, " + ints + " stride, " + ints +
            " padding, " + ints + " dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
        "conv_transpose" + d + "d(Tensor input, Tensor weight, Tensor? bias=None, " + ints + " stride=1, " + ints +
            " padding=0, " + ints + " output_padding=0, int groups=1, " + ints + " dilation=1) -> Tensor"};
    for (const std::string& schema : schemas) {
      m.def(schema.c_str());
    }
  }
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
  // Process-wide setting: the CPU backend's GEMM engine ("auto", "onednn", "blas", "aten").
  m.def("_get_cpu_gemm_engine() -> str", &myconv::cpu_gemm_engine);
  m.def("_set_cpu_gemm_engine(str engine) -> ()", [](c10::string_view engine) {
    myconv::set_cpu_gemm_engine(std::string(engine));
  });
  // For tests and benchmarks: the engine the CPU backend gives an (m x k) @ (k x n) GEMM.
  m.def("_cpu_gemm_engine_for(ScalarType dtype, int m, int n, int k) -> str",
        [](c10::ScalarType dtype, int64_t m, int64_t n, int64_t k) {
          return std::string(myconv::detail::cpu_gemm_engine_name(myconv::detail::choose_cpu_gemm_engine(dtype, m, n, k)));
        });
  // Process-wide setting: autotuning of the CPU work plan (off by default).
  m.def("_get_autotune() -> bool", &myconv::autotune);
  m.def("_set_autotune(bool on) -> ()", &myconv::set_autotune);
  // For tests: the problems tuned so far, and forgetting them.
  m.def("_autotune_cache_size() -> int", &myconv::detail::autotune_cache_size);
  m.def("_clear_autotune_cache() -> ()", &myconv::detail::clear_autotune_cache);
  // Process-wide setting, for experiments on a GPU: overrides of the CUDA backend's plan choices.
  m.def("_get_cuda_tuning() -> str", &myconv::cuda_tuning);
  m.def("_set_cuda_tuning(str overrides) -> ()", [](c10::string_view overrides) {
    myconv::set_cuda_tuning(std::string(overrides));
  });
  // For tests: the CPU backend with the CUDA backend's work plan.
  m.def("_set_cpu_whole_image_plan(bool on) -> ()", &myconv::set_cpu_whole_image_plan);
  // myconv.explain(): the plans of a call's passes, as JSON (csrc/explain.cpp).
  m.def(
      "_explain(str op, Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, str padding_mode, "
      "int[] dilation, int groups, int[] output_padding, str? device=None) -> str",
      &myconv::detail::explain);
  // Process-wide setting: MYCONV_VERBOSE's level (0 off, 1 a line per call, 2 with its time).
  m.def("_get_verbose() -> int", []() -> int64_t { return myconv::verbose(); });
  m.def("_set_verbose(int level) -> ()", &myconv::set_verbose);
  // For tests: the peak workspace of this thread's latest convolution call.
  m.def("_last_workspace_peak() -> int", &myconv::last_workspace_peak_bytes);
  // For tests: the compute type the CUDA backend's GEMMs take for a dtype under
  // PyTorch's current float32 matmul precision ("64F", "32F", "32F_FAST_TF32").
  m.def("_gemm_compute_type(ScalarType dtype) -> str", [](c10::ScalarType dtype) {
    return std::string(myconv::detail::gemm_compute_name(
        myconv::detail::gemm_compute(dtype, myconv::detail::cuda_matmul_allows_tf32())));
  });
}

namespace myconv {

// ---- C++ API: typed dispatcher calls -------------------------------------

namespace detail {
namespace {

// The handles of an op family, found once per call site ("conv", "d_backward":
// myconv::conv1d_backward ... conv3d_backward); entry D - 1 is the
// D-dimensional op.
template <class Signature>
std::array<c10::TypedOperatorHandle<Signature>, 3> find_nd(const char* prefix, const char* suffix,
                                                           const char* overload = "") {
  const auto find = [&](const char* d) {
    const std::string name = std::string("myconv::") + prefix + d + suffix;
    return c10::Dispatcher::singleton().findSchemaOrThrow(name.c_str(), overload).typed<Signature>();
  };
  return {find("1"), find("2"), find("3")};
}

using ConvSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                 at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t);
using ConvPaddingSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                        at::IntArrayRef, c10::string_view, at::IntArrayRef, int64_t);
using ConvBackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
    int64_t, std::array<bool, 3>);
using ConvTransposeSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                          at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                                          at::IntArrayRef);

} // namespace

at::Tensor conv_nd(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation, int64_t groups) {
  static const auto ops = find_nd<ConvSignature>("conv", "d");
  return ops.at(dims - 1).call(input, weight, bias, stride, padding, dilation, groups);
}

at::Tensor conv_padding_nd(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride, c10::string_view padding,
                           at::IntArrayRef dilation, int64_t groups) {
  static const auto ops = find_nd<ConvPaddingSignature>("conv", "d", "padding");
  return ops.at(dims - 1).call(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward_nd(
    int64_t dims, const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  static const auto ops = find_nd<ConvBackwardSignature>("conv", "d_backward");
  return ops.at(dims - 1).call(grad_output, input, weight, stride, padding, dilation, groups, output_mask);
}

at::Tensor conv_transpose_nd(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
  static const auto ops = find_nd<ConvTransposeSignature>("conv_transpose", "d");
  return ops.at(dims - 1).call(input, weight, bias, stride, padding, output_padding, groups, dilation);
}

} // namespace detail

using detail::conv_backward_nd;
using detail::conv_nd;
using detail::conv_padding_nd;
using detail::conv_transpose_nd;

#define MYCONV_CONV_API(D)                                                                                      \
  at::Tensor conv##D##d(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias, \
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,               \
                        int64_t groups) {                                                                        \
    return conv_nd(D, input, weight, bias, stride, padding, dilation, groups);                                   \
  }                                                                                                              \
  at::Tensor conv##D##d_padding(const at::Tensor& input, const at::Tensor& weight,                               \
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride,                   \
                                c10::string_view padding, at::IntArrayRef dilation, int64_t groups) {            \
    return conv_padding_nd(D, input, weight, bias, stride, padding, dilation, groups);                           \
  }                                                                                                              \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> conv##D##d_backward(                                            \
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,  \
      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {      \
    return conv_backward_nd(D, grad_output, input, weight, stride, padding, dilation, groups, output_mask);      \
  }                                                                                                              \
  at::Tensor conv_transpose##D##d(const at::Tensor& input, const at::Tensor& weight,                             \
                                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,                 \
                                  at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,       \
                                  at::IntArrayRef dilation) {                                                    \
    return conv_transpose_nd(D, input, weight, bias, stride, padding, output_padding, groups, dilation);         \
  }
MYCONV_CONV_API(1)
MYCONV_CONV_API(2)
MYCONV_CONV_API(3)
#undef MYCONV_CONV_API

at::Tensor im2col(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("myconv::im2col", "").typed<decltype(im2col)>();
  return op.call(input, kernel_size, dilation, padding, stride);
}

at::Tensor col2im_symint(const at::Tensor& input, c10::SymIntArrayRef output_size, at::IntArrayRef kernel_size,
                         at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("myconv::col2im", "").typed<decltype(col2im_symint)>();
  return op.call(input, output_size, kernel_size, dilation, padding, stride);
}

at::Tensor col2im(const at::Tensor& input, at::IntArrayRef output_size, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  return myconv::col2im_symint(input, c10::fromIntArrayRefSlow(output_size), kernel_size, dilation, padding,
                               stride);
}

std::string explain(const std::string& op, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                    at::IntArrayRef dilation, int64_t groups, at::IntArrayRef output_padding,
                    const std::string& device) {
  const std::vector<int64_t> zeros(std::max<int64_t>(weight.dim() - 2, 0), 0);
  return detail::explain(op, input, weight, bias, stride, padding, "", dilation, groups,
                         output_padding.empty() ? at::IntArrayRef(zeros) : output_padding,
                         device.empty() ? std::nullopt : std::optional<c10::string_view>(device));
}

// ---- Meta, autocast, string padding ----------------------------------------------

namespace {

using detail::check_col2im;
using detail::check_im2col;

template <int64_t D>
at::Tensor conv_meta(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto size = detail::check_conv(detail::conv_op_name(D), D, input, weight, bias, stride, padding, dilation,
                                       groups);
  return at::empty_symint(size, input.options().memory_format(detail::conv_memory_format(D, input, weight)));
}

template <int64_t D>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward_meta(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  detail::check_conv_backward(D, grad_output, input, weight, stride, padding, dilation, groups);
  // Each gradient takes the layout of the tensor it is the gradient of.
  const auto like = [](const at::Tensor& t) {
    return at::empty_symint(t.sym_sizes(), t.options().memory_format(t.suggest_memory_format()));
  };
  return {output_mask[0] ? like(input) : at::Tensor(), output_mask[1] ? like(weight) : at::Tensor(),
          output_mask[2] ? at::empty_symint({weight.sym_size(0)}, weight.options()) : at::Tensor()};
}

template <int64_t D>
at::Tensor conv_transpose_meta(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                               at::IntArrayRef dilation) {
  const auto size = detail::check_conv_transpose(detail::conv_transpose_op_name(D), D, input, weight, bias, stride,
                                                 padding, output_padding, dilation, groups);
  return at::empty_symint(size, input.options().memory_format(detail::conv_memory_format(D, input, weight)));
}

at::Tensor im2col_meta(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                       at::IntArrayRef padding, at::IntArrayRef stride) {
  return at::empty_symint(check_im2col(input, kernel_size, dilation, padding, stride), input.options());
}

at::Tensor col2im_meta(const at::Tensor& input, c10::SymIntArrayRef output_size, at::IntArrayRef kernel_size,
                       at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  return at::empty_symint(check_col2im(input, output_size, kernel_size, dilation, padding, stride),
                          input.options());
}

// padding='same' / 'valid': the convolution with the padding PyTorch would
// use; an odd 'same' total puts its extra zero at the end of the axis by
// padding the input.
template <int64_t D>
at::Tensor conv_string_padding(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               c10::string_view padding, at::IntArrayRef dilation, int64_t groups) {
  if (weight.dim() != D + 2 || (input.dim() != D + 1 && input.dim() != D + 2)) {
    // let the convolution report the bad weight or input
    return conv_nd(D, input, weight, bias, stride, std::vector<int64_t>(D, 0), dilation, groups);
  }
  std::vector<int64_t> kernel;
  for (int64_t i = 0; i < D; ++i) {
    kernel.push_back(weight.sym_size(2 + i).guard_int(__FILE__, __LINE__));
  }
  const auto pad = detail::string_padding(detail::conv_op_name(D), padding, kernel, stride, dilation);
  const std::vector<int64_t> pads = pad.end_pads();
  const at::Tensor x = pads.empty() ? input : at::constant_pad_nd(input, pads, 0);
  return conv_nd(D, x, weight, bias, stride, pad.both, dilation, groups);
}

// Autocast: the convolutions run in the autocast dtype, as F.convNd do.
template <c10::DeviceType device, c10::DispatchKey key, int64_t D>
at::Tensor conv_autocast(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  return conv_nd(D, at::autocast::cached_cast(dtype, input, device), at::autocast::cached_cast(dtype, weight, device),
                 at::autocast::cached_cast(dtype, bias, device), stride, padding, dilation, groups);
}

template <c10::DeviceType device, c10::DispatchKey key, int64_t D>
at::Tensor conv_transpose_autocast(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(key);
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  return conv_transpose_nd(D, at::autocast::cached_cast(dtype, input, device),
                           at::autocast::cached_cast(dtype, weight, device),
                           at::autocast::cached_cast(dtype, bias, device), stride, padding, output_padding, groups,
                           dilation);
}

template <c10::DeviceType device, c10::DispatchKey key>
void register_autocast(torch::Library& m) {
  m.impl("conv1d", TORCH_FN((conv_autocast<device, key, 1>)));
  m.impl("conv2d", TORCH_FN((conv_autocast<device, key, 2>)));
  m.impl("conv3d", TORCH_FN((conv_autocast<device, key, 3>)));
  m.impl("conv_transpose1d", TORCH_FN((conv_transpose_autocast<device, key, 1>)));
  m.impl("conv_transpose2d", TORCH_FN((conv_transpose_autocast<device, key, 2>)));
  m.impl("conv_transpose3d", TORCH_FN((conv_transpose_autocast<device, key, 3>)));
}

} // namespace

TORCH_LIBRARY_IMPL(myconv, CompositeImplicitAutograd, m) {
  m.impl("conv1d.padding", TORCH_FN(conv_string_padding<1>));
  m.impl("conv2d.padding", TORCH_FN(conv_string_padding<2>));
  m.impl("conv3d.padding", TORCH_FN(conv_string_padding<3>));
}

TORCH_LIBRARY_IMPL(myconv, AutocastCPU, m) {
  register_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>(m);
}

TORCH_LIBRARY_IMPL(myconv, AutocastCUDA, m) {
  register_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>(m);
}

TORCH_LIBRARY_IMPL(myconv, Meta, m) {
  m.impl("conv1d", TORCH_FN(conv_meta<1>));
  m.impl("conv2d", TORCH_FN(conv_meta<2>));
  m.impl("conv3d", TORCH_FN(conv_meta<3>));
  m.impl("conv1d_backward", TORCH_FN(conv_backward_meta<1>));
  m.impl("conv2d_backward", TORCH_FN(conv_backward_meta<2>));
  m.impl("conv3d_backward", TORCH_FN(conv_backward_meta<3>));
  m.impl("conv_transpose1d", TORCH_FN(conv_transpose_meta<1>));
  m.impl("conv_transpose2d", TORCH_FN(conv_transpose_meta<2>));
  m.impl("conv_transpose3d", TORCH_FN(conv_transpose_meta<3>));
  m.impl("im2col", TORCH_FN(im2col_meta));
  m.impl("col2im", TORCH_FN(col2im_meta));
}

} // namespace myconv
