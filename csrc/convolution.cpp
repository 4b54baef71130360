#include "convolution.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>
#include <c10/util/SmallVector.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "autotune.h"
#include "channel_sums.h"
#include "conv_passes.h"
#include "conv_plan.h"
#include "conv_shape.h"
#include "pass_plan.h"
#include "plan_report.h"
#include "verbose.h"
#include "workspace.h"

namespace myconv::detail {
namespace {

// A convolution's tensor ((N, C, *spatial), or unbatched (C, *spatial)) as a
// 5-D (N, C, D, H, W) view: unit leading spatial sizes for fewer than three
// spatial dimensions, a unit batch for an unbatched one. The strides are
// unsqueeze's; one view op, not one per inserted dimension (a tiny call pays
// for each).
at::Tensor as_5d(const at::Tensor& t, int64_t dims, bool batched) {
  c10::SmallVector<int64_t, 5> sizes(t.sizes().begin(), t.sizes().end()), strides(t.strides().begin(), t.strides().end());
  const auto insert = [&](size_t at) {
    const int64_t stride = at < sizes.size() ? sizes[at] * strides[at] : 1;
    sizes.insert(sizes.begin() + at, 1);
    strides.insert(strides.begin() + at, stride);
  };
  if (!batched) {
    insert(0);
  }
  for (int64_t i = dims; i < kMaxSpatialDims; ++i) {
    insert(2);
  }
  return sizes.size() == static_cast<size_t>(t.dim()) ? t : t.as_strided(sizes, strides, t.storage_offset());
}

// A weight (C_out, C_in/G, *kernel) as (C_out, C_in/G, kD, kH, kW).
at::Tensor weight_5d(const at::Tensor& w, int64_t dims) {
  return as_5d(w, dims, /*batched=*/true);
}

// The inverse of as_5d: a 5-D result back to the op's dimensions (one view op).
at::Tensor from_5d(const at::Tensor& t, int64_t dims, bool batched) {
  c10::SmallVector<int64_t, 5> sizes, strides;
  for (int64_t d = 0; d < 5; ++d) {
    const bool dropped = (d == 0 && !batched) || (d >= 2 && d < 2 + kMaxSpatialDims - dims);
    if (!dropped) {
      sizes.push_back(t.size(d));
      strides.push_back(t.stride(d));
    }
  }
  return sizes.size() == 5 ? t : t.as_strided(sizes, strides, t.storage_offset());
}

// Whether the op's input is channels-last (channels_last for 2-D,
// channels_last_3d for 3-D): the problem may then run on channels-last columns.
bool channels_last_input(const at::Tensor& input, int64_t dims, bool batched) {
  return batched && dims >= 2 && input.suggest_memory_format() == channels_last_format(dims + 2);
}

// p (made channels-first) in the layout choose_layout gives it.
ConvProblem laid_out(ConvProblem p, const Tuning& t, bool channels_last_input) {
  p.layout = choose_layout(t, p, channels_last_input);
  return p;
}

// MYCONV_VERBOSE: the line of one call, written by finish() when the call
// has succeeded; nothing is made while the level is 0 (one relaxed load per
// call).
class CallReport {
 public:
  // op and suffix ("myconv::conv2d", "_backward") are joined only when the line is made
  CallReport(const char* op, const char* suffix, const at::Tensor& input, const at::Tensor& weight)
      : level_(verbose_level()) {
    if (level_ > 0) {
      std::ostringstream out;
      out << op << suffix << ' ' << input.device().str() << ' ' << dtype_name(input.scalar_type())
          << " input=" << format_sizes(input.sizes()) << " weight=" << format_sizes(weight.sizes());
      line_ = out.str();
      device_ = input.device();
    }
    if (level_ > 1) {
      synchronize();
      start_ = std::chrono::steady_clock::now();
    }
  }
  bool on() const { return level_ > 0; }
  void window(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
    if (on()) {
      line_ += " stride=" + format_sizes(stride) + " padding=" + format_sizes(padding) +
               " dilation=" + format_sizes(dilation) + " groups=" + std::to_string(groups);
    }
  }
  void add(const Backend& backend, const PassPlan& plan) {
    if (on()) {
      PassPlan shown = plan;
      name_engine(backend, shown);
      line_ += " | " + plan_summary(shown);
    }
  }
  // Writes the line: called once the call has succeeded (a failed call writes
  // nothing; the CUDA synchronisation of level 2 may throw, so not in a
  // destructor).
  void finish() {
    if (!on()) {
      return;
    }
    if (level_ > 1) {
      synchronize();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
      char text[32];
      std::snprintf(text, sizeof(text), " | time=%.3fms", ms);
      line_ += text;
    }
    emit_verbose_line(level_, line_);
  }
  CallReport(const CallReport&) = delete;
  CallReport& operator=(const CallReport&) = delete;

 private:
  // the call's time includes its kernels (CUDA: queued on a stream)
  void synchronize() const {
    if (device_.type() != c10::DeviceType::CPU && device_.type() != c10::DeviceType::Meta) {
      c10::impl::getDeviceGuardImpl(device_.type())->synchronizeDevice(device_.index());
    }
  }
  int level_;
  std::string line_;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
  std::chrono::steady_clock::time_point start_;
};

} // namespace

ConvCall::ConvCall(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups)
    : batched(input.dim() == dims + 2),
      x5(as_5d(input, dims, batched)),
      w5(weight_5d(weight, dims)),
      tuning(tuning_for(backend, input)),
      settings(current_plan_settings(input.device().type())),
      problem(laid_out(ConvProblem(x5, w5, Window3d(stride, padding, dilation), groups, Layout::kChannelsFirst),
                       tuning, channels_last_input(input, dims, batched))) {}

ConvCall::ConvCall(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                   at::IntArrayRef out_size, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation, int64_t groups)
    : batched(input.dim() == dims + 2),
      x5(as_5d(input, dims, batched)),
      w5(weight_5d(weight, dims)),
      tuning(tuning_for(backend, input)),
      settings(current_plan_settings(input.device().type())),
      problem(laid_out(ConvProblem::transposed(x5, w5, out_size, Window3d(stride, padding, dilation), groups,
                                               Layout::kChannelsFirst),
                       tuning, channels_last_input(input, dims, batched))) {}

std::vector<int64_t> transposed_output_size(int64_t dims, const at::Tensor& input,
                                            c10::SymIntArrayRef checked_size) {
  const bool batched = input.dim() == dims + 2;
  std::vector<int64_t> out_size{batched ? input.size(0) : 1};
  for (size_t i = batched ? 1 : 0; i < checked_size.size(); ++i) {
    out_size.push_back(checked_size[i].expect_int());
  }
  out_size.insert(out_size.begin() + 2, kMaxSpatialDims - dims, 1);
  return out_size;
}

at::Tensor conv(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                at::IntArrayRef dilation, int64_t groups) {
  check_conv(conv_op_name(dims), dims, input, weight, bias, stride, padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const WorkspaceCall workspace_call;
  CallReport report(conv_op_name(dims), "", input, weight);
  report.window(stride, padding, dilation, groups);
  const ConvCall call(backend, dims, input, weight, stride, padding, dilation, groups);
  const ConvProblem& p = call.problem;
  const at::Tensor x = call.x5.contiguous(p.memory_format());
  const ConvGeometry& g = p.geom;

  at::Tensor out = at::empty({p.batch, p.out_channels, g.out_d, g.out_h, g.out_w},
                             x.options().memory_format(p.memory_format()));
  if (p.batch > 0 && out.numel() > 0) {
    const bool has_bias = bias.has_value() && bias->defined();
    const auto run = [&](const PassPlan& plan) {
      if (plan.path == Path::kDirectGrouped) {
        backend.grouped_forward(x, call.w5.contiguous(),
                                has_bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt, g, groups,
                                p.channels_last(), out);
      } else {
        forward_columns(backend, plan, p, x, call.w5, bias, out);
      }
    };
    const PassPlan plan = tuned_plan(backend, Pass::kForward, p, x.scalar_type(), call.tuning, call.settings, run);
    run(plan);
    report.add(backend, plan);
  }
  report.finish();
  return from_5d(out, dims, call.batched).contiguous(conv_memory_format(dims, input, weight));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(
    const Backend& backend, int64_t dims, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
    int64_t groups, std::array<bool, 3> output_mask) {
  check_conv_backward(dims, grad_output, input, weight, stride, padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const WorkspaceCall workspace_call;
  CallReport report(conv_op_name(dims), "_backward", input, weight);
  report.window(stride, padding, dilation, groups);
  const ConvCall call(backend, dims, input, weight, stride, padding, dilation, groups);
  const ConvProblem& p = call.problem;
  const at::Tensor gy5 = as_5d(grad_output, dims, call.batched);
  const auto [need_input, need_weight, need_bias] = output_mask;

  at::Tensor grad_input, grad_weight, grad_bias;
  if (need_bias) {
    grad_bias = channel_sums(gy5, 1);
  }
  const bool empty = p.batch == 0 || gy5.numel() == 0;
  if (need_input) {
    const auto options = call.x5.options().memory_format(p.memory_format());
    grad_input = empty ? at::zeros(call.x5.sizes(), options) : at::empty(call.x5.sizes(), options);
  }
  if (need_weight && empty) {
    grad_weight = at::zeros(call.w5.sizes(), call.w5.options());
  }

  if ((need_input || need_weight) && !empty) {
    const at::Tensor gy = gy5.contiguous(p.memory_format());
    // The input is only read to rebuild columns for grad_weight.
    const at::Tensor x = need_weight ? call.x5.contiguous(p.memory_format()) : at::Tensor();
    const at::ScalarType dtype = gy.scalar_type();
    if (need_input) {
      const auto run = [&](const PassPlan& plan) {
        if (plan.path == Path::kDirectGrouped) {
          backend.grouped_grad_input(gy, call.w5.contiguous(), p.geom, groups, p.channels_last(), grad_input);
        } else {
          grad_input_columns(backend, plan, p, gy, call.w5, grad_input);
        }
      };
      const PassPlan plan = tuned_plan(backend, Pass::kGradInput, p, dtype, call.tuning, call.settings, run);
      run(plan);
      report.add(backend, plan);
    }
    if (need_weight) {
      const auto run = [&](const PassPlan& plan) {
        if (plan.path == Path::kDirectGrouped) {
          at::Tensor gw = at::empty(call.w5.sizes(), call.w5.options());
          backend.grouped_grad_weight(gy, x, p.geom, groups, p.channels_last(), gw);
          return gw;
        }
        return grad_weight_columns(backend, plan, p, x, gy);
      };
      const PassPlan plan = tuned_plan(backend, Pass::kGradWeight, p, dtype, call.tuning, call.settings, run);
      grad_weight = run(plan);
      report.add(backend, plan);
    }
  }

  // Each gradient in the layout of the tensor it is the gradient of.
  if (need_input) {
    grad_input = from_5d(grad_input, dims, call.batched).contiguous(input.suggest_memory_format());
  }
  if (need_weight) {
    grad_weight = from_5d(grad_weight, dims, true).contiguous(weight.suggest_memory_format());
  }
  report.finish();
  return {grad_input, grad_weight, grad_bias};
}

// The transposed convolution is the input gradient of the convolution of its
// output with the same weight: the grad_input pass (GEMM, then col2im) with
// the transposed convolution's input as grad_output, then the bias.
at::Tensor conv_transpose(const Backend& backend, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef output_padding, int64_t groups, at::IntArrayRef dilation) {
  const auto size = check_conv_transpose(conv_transpose_op_name(dims), dims, input, weight, bias, stride, padding,
                                         output_padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const WorkspaceCall workspace_call;
  CallReport report(conv_transpose_op_name(dims), "", input, weight);
  report.window(stride, padding, dilation, groups);
  const std::vector<int64_t> out_size = transposed_output_size(dims, input, size);
  const ConvCall call(backend, dims, input, weight, out_size, stride, padding, dilation, groups);
  const ConvProblem& p = call.problem;
  at::Tensor out = at::empty(out_size, call.x5.options().memory_format(p.memory_format()));
  if (p.batch > 0) {
    const at::Tensor gy = call.x5.contiguous(p.memory_format());
    const auto run = [&](const PassPlan& plan) {
      if (plan.path == Path::kDirectGrouped) {
        backend.grouped_grad_input(gy, call.w5.contiguous(), p.geom, groups, p.channels_last(), out);
      } else {
        grad_input_columns(backend, plan, p, gy, call.w5, out);
      }
    };
    const PassPlan plan = tuned_plan(backend, Pass::kGradInput, p, gy.scalar_type(), call.tuning, call.settings, run);
    run(plan);
    report.add(backend, plan);
    if (bias.has_value() && bias->defined()) {
      out.add_(bias->view({1, -1, 1, 1, 1}));
    }
  }
  report.finish();
  return from_5d(out, dims, call.batched).contiguous(conv_memory_format(dims, input, weight));
}

at::Tensor im2col(const Backend& backend, const at::Tensor& input, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  check_im2col(input, kernel_size, dilation, padding, stride);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 4;
  const at::Tensor x = as_5d(input, 2, batched).contiguous();
  const ConvGeometry g(x.size(1), x.sizes().slice(3), kernel_size, stride, padding, dilation);
  const at::Tensor out = at::empty({x.size(0), g.rows(), g.cols()}, x.options());
  if (out.numel() > 0) {
    backend.im2col(x, g, ColumnTile::whole(g), out, {g.rows() * g.cols(), g.cols(), 1});
  }
  return batched ? out : out.squeeze(0);
}

at::Tensor col2im(const Backend& backend, const at::Tensor& input, c10::SymIntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation, at::IntArrayRef padding,
                  at::IntArrayRef stride) {
  check_col2im(input, output_size, kernel_size, dilation, padding, stride);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 3;
  const at::Tensor cols = batched ? input.contiguous() : input.unsqueeze(0).contiguous();
  const int64_t channels = cols.size(1) / (kernel_size[0] * kernel_size[1]);
  const std::array<int64_t, 2> size{output_size[0].expect_int(), output_size[1].expect_int()};
  const ConvGeometry g(channels, size, kernel_size, stride, padding, dilation);
  const at::Tensor out = at::empty({cols.size(0), channels, 1, g.height, g.width}, cols.options());
  if (out.numel() > 0) {
    backend.col2im(cols, {g.rows() * g.cols(), g.cols(), 1}, ColumnTile::whole(g), g, out, /*accumulate=*/false);
  }
  const at::Tensor images = out.squeeze(2);
  return batched ? images : images.squeeze(0);
}

} // namespace myconv::detail
