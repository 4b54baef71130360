// The convolution ops of `dims` (1, 2 or 3) spatial dimensions, called through
// the dispatcher by dims: what the C++ API (myconv.h), the composites and
// autocast wrappers (ops.cpp) and autograd (autograd/autograd.cpp) share.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

namespace myconv::detail {

at::Tensor conv_nd(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation, int64_t groups);

at::Tensor conv_padding_nd(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride, c10::string_view padding,
                           at::IntArrayRef dilation, int64_t groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward_nd(
    int64_t dims, const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask);

at::Tensor conv_transpose_nd(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation);

} // namespace myconv::detail
