// myconv.explain(): the plans a convolution call would run, as JSON.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <cstdint>
#include <optional>
#include <string>

namespace myconv::detail {

// op: "conv1d" ... "conv3d", "conv_transpose1d" ... "conv_transpose3d".
// padding_mode: "" (use padding), or "same" / "valid" (convolutions).
// device: whose backend plans (default: the tensors' device; the CPU for
// meta tensors). The arguments are checked as the op checks them.
std::string explain(c10::string_view op, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                    c10::string_view padding_mode, at::IntArrayRef dilation, int64_t groups,
                    at::IntArrayRef output_padding, std::optional<c10::string_view> device);

} // namespace myconv::detail
