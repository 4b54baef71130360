// myconv.explain(): the plans of a convolution call's passes, made as the
// call would make them (ConvCall, next_plan) but without running anything:
// the arguments are replaced by meta tensors of the same sizes, strides and
// dtype first, so real, meta and fake tensors all work and no data is read.
// The forward's plans and the backward's (as autograd would call it) are
// returned as one JSON object (torch_ext/myconv/explain.py reads it).
#include "explain.h"

#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>
#include <vector>

#include "autotune.h"
#include "conv_shape.h"
#include "convolution.h"
#include "plan_report.h"

namespace myconv::detail {
namespace {

// A meta tensor with t's sizes, strides and dtype.
at::Tensor as_meta(const at::Tensor& t) {
  return at::empty_strided(t.sizes(), t.strides(), t.options().device(at::kMeta));
}

} // namespace

std::string explain(c10::string_view op, const at::Tensor& input_arg, const at::Tensor& weight_arg,
                    const std::optional<at::Tensor>& bias_arg, at::IntArrayRef stride, at::IntArrayRef padding,
                    c10::string_view padding_mode, at::IntArrayRef dilation, int64_t groups,
                    at::IntArrayRef output_padding, std::optional<c10::string_view> device) {
  const std::string name(op);
  const bool transposed = name.rfind("conv_transpose", 0) == 0;
  const std::string suffix = transposed ? name.substr(14) : (name.rfind("conv", 0) == 0 ? name.substr(4) : "");
  TORCH_CHECK(suffix == "1d" || suffix == "2d" || suffix == "3d",
              "myconv.explain: expected op to be conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d or "
              "conv_transpose3d, but got '", name, "'");
  const int64_t dims = suffix[0] - '0';
  TORCH_CHECK(input_arg.defined() && weight_arg.defined(), "myconv.explain: expected input and weight tensors");

  // The device whose plan is shown: the tensors', or `device` (meta tensors: the CPU unless given).
  c10::DeviceType target = input_arg.device().type();
  if (device.has_value()) {
    target = c10::Device(std::string(*device)).type();
  } else if (target == c10::DeviceType::Meta) {
    target = c10::DeviceType::CPU;
  }
  const Backend* backend = find_backend(target);
  TORCH_CHECK(backend != nullptr, "myconv.explain: this build of myconv has no ", c10::DeviceTypeName(target, true),
              " backend");

  at::Tensor input = as_meta(input_arg);
  const at::Tensor weight = as_meta(weight_arg);
  const std::optional<at::Tensor> bias =
      bias_arg.has_value() && bias_arg->defined() ? std::optional<at::Tensor>(as_meta(*bias_arg)) : std::nullopt;
  std::vector<int64_t> pad(padding.begin(), padding.end());
  if (!padding_mode.empty()) {
    // padding='same' / 'valid', as conv_string_padding (ops.cpp) runs it
    TORCH_CHECK(!transposed, "myconv.explain: string padding is for convolutions, not ", name);
    TORCH_CHECK(weight.dim() == dims + 2, "myconv.explain: expected a ", dims + 2, "-D weight, but got ",
                weight.dim(), "-D");
    const auto sp = string_padding(conv_op_name(dims), padding_mode, weight.sizes().slice(2), stride, dilation);
    pad = sp.both;
    if (const std::vector<int64_t> pads = sp.end_pads(); !pads.empty()) {
      input = at::constant_pad_nd(input, pads, 0);
    }
  }

  const auto plans = [&](const ConvCall& call, std::initializer_list<std::pair<Pass, const char*>> passes) {
    std::string out = "[";
    PlanSettings settings = current_plan_settings(target);
    for (const auto& [pass, computes] : passes) {
      const PassPlan plan = next_plan(*backend, pass, call.problem, input.scalar_type(), call.tuning, settings);
      out += (out.size() > 1 ? ", " : "") + plan_json(plan, call.problem, computes);
    }
    return out + "]";
  };

  std::string forward, backward;
  if (!transposed) {
    check_conv(conv_op_name(dims), dims, input, weight, bias, stride, pad, dilation, groups);
    const ConvCall call(*backend, dims, input, weight, stride, pad, dilation, groups);
    forward = plans(call, {{Pass::kForward, "output"}});
    backward = plans(call, {{Pass::kGradInput, "grad_input"}, {Pass::kGradWeight, "grad_weight"}});
  } else {
    const auto size = check_conv_transpose(conv_transpose_op_name(dims), dims, input, weight, bias, stride, pad,
                                           output_padding, dilation, groups);
    const std::vector<int64_t> out_size = transposed_output_size(dims, input, size);
    const ConvCall call(*backend, dims, input, weight, out_size, stride, pad, dilation, groups);
    forward = plans(call, {{Pass::kGradInput, "output"}});
    // autograd's backward: the convolution of the output's gradient g with
    // the weight (grad_input), and that convolution's weight gradient
    std::vector<int64_t> g_size;
    for (const c10::SymInt& s : size) {
      g_size.push_back(s.expect_int());
    }
    const at::Tensor g = at::empty(g_size, input.options().memory_format(conv_memory_format(dims, input, weight)));
    const ConvCall back(*backend, dims, g, weight, stride, pad, dilation, groups);
    backward = plans(back, {{Pass::kForward, "grad_input"}, {Pass::kGradWeight, "grad_weight"}});
  }

  std::ostringstream out;
  out << "{\"op\": \"" << name << "\", \"device\": \"" << c10::DeviceTypeName(target, true) << "\", \"dtype\": \""
      << dtype_name(input.scalar_type()) << "\", \"input\": " << json_ints(input_arg.sizes())
      << ", \"weight\": " << json_ints(weight.sizes()) << ", \"stride\": " << json_ints(stride)
      << ", \"padding\": " << json_ints(pad) << ", \"dilation\": " << json_ints(dilation)
      << ", \"groups\": " << groups
      << ", \"workspace_limit\": " << current_plan_settings(target).workspace_limit << ", \"forward\": " << forward
      << ", \"backward\": " << backward << "}";
  return out.str();
}

} // namespace myconv::detail
