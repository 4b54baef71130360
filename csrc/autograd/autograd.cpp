// Autograd for the myconv ops, registered under the Autograd dispatch key so
// that gradients work the same from Python and from LibTorch.
//
// Each forward redispatches below autograd to the device kernel; each backward
// is written with myconv ops called through the dispatcher (never with opaque
// buffers), so it runs on any device and its own operations are recorded when
// a graph of the backward is requested. The convolutions' Functions are
// written once for 1, 2 and 3 spatial dimensions (saved as "dims").
#include <ATen/ops/constant_pad_nd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <vector>

#include "myconv/ops.h"
#include "../channel_sums.h"
#include "../ops_nd.h"

namespace myconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> ints(const AutogradContext* ctx, const char* key) {
  return ctx->saved_data.at(key).toIntVector();
}

// The ops of `dims` spatial dimensions, through the dispatcher.
at::Tensor conv(int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                at::IntArrayRef dilation, int64_t groups) {
  return detail::conv_nd(dims, input, weight, bias, stride, padding, dilation, groups);
}
using detail::conv_backward_nd;
using detail::conv_transpose_nd;

class ConvFunction : public torch::autograd::Function<ConvFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["dims"] = dims;
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return conv(dims, input, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad_output = grad_outputs[0];
    const bool has_bias = ctx->saved_data.at("has_bias").toBool();
    // needs_input_grad counts tensor arguments only: input, weight, then bias if given.
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   has_bias && ctx->needs_input_grad(2)};
    auto [grad_input, grad_weight, grad_bias] =
        conv_backward_nd(ctx->saved_data.at("dims").toInt(), grad_output, saved[0], saved[1], ints(ctx, "stride"),
                      ints(ctx, "padding"), ints(ctx, "dilation"), ctx->saved_data.at("groups").toInt(), mask);
    return {at::Tensor(), grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// convNd_backward is itself differentiable (double backward). Its outputs are
//   gI = the input gradient    (linear in gy, linear in W)
//   gW = the weight gradient   (linear in gy, linear in x)
//   gB = gy summed over all but the channels
// so with incoming gradients ggI, ggW, ggB:
//   d/d gy = conv(ggI, W) + conv(x, ggW) + ggB broadcast
//   d/d x  = input-gradient of a conv with weight ggW at grad_output gy
//   d/d W  = weight-gradient of a conv with input ggI at grad_output gy
// all through the dispatcher, so these are differentiable again. A custom
// Function cannot return undefined tensors, so forward returns only the
// gradients output_mask asks for, in order.
class ConvBackwardFunction : public torch::autograd::Function<ConvBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, int64_t dims, const at::Tensor& grad_output,
                               const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                               std::array<bool, 3> output_mask) {
    ctx->save_for_backward({grad_output, input, weight});
    ctx->saved_data["dims"] = dims;
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["output_mask"] = std::vector<bool>(output_mask.begin(), output_mask.end());
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [gi, gw, gb] = conv_backward_nd(dims, grad_output, input, weight, stride, padding, dilation, groups, output_mask);
    variable_list computed;
    for (const at::Tensor& t : {gi, gw, gb}) {
      if (t.defined()) {
        computed.push_back(t);
      }
    }
    return computed;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gy = saved[0], &x = saved[1], &w = saved[2];
    // Incoming gradients of (gI, gW, gB); undefined where not computed or unused.
    at::Tensor incoming[3];
    const auto mask = ctx->saved_data.at("output_mask").toBoolList();
    for (size_t i = 0, next = 0; i < 3; ++i) {
      if (mask.get(i)) {
        incoming[i] = grads[next++];
      }
    }
    const at::Tensor &ggi = incoming[0], &ggw = incoming[1], &ggb = incoming[2];
    const int64_t dims = ctx->saved_data.at("dims").toInt();
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"), dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data.at("groups").toInt();

    at::Tensor d_gy, d_x, d_w;
    if (ctx->needs_input_grad(0)) {
      const auto add = [&d_gy](const at::Tensor& t) { d_gy = d_gy.defined() ? d_gy.add(t) : t; };
      if (ggi.defined()) {
        add(conv(dims, ggi, w, std::nullopt, stride, padding, dilation, groups));
      }
      if (ggw.defined()) {
        add(conv(dims, x, ggw, std::nullopt, stride, padding, dilation, groups));
      }
      if (ggb.defined()) {
        std::vector<int64_t> shape(gy.dim(), 1);
        shape[gy.dim() - dims - 1] = -1;  // the channel dimension
        add(ggb.view(shape).expand_as(gy).contiguous());
      }
    }
    if (ctx->needs_input_grad(1) && ggw.defined()) {
      d_x = std::get<0>(conv_backward_nd(dims, gy, x, ggw, stride, padding, dilation, groups, {true, false, false}));
    }
    if (ctx->needs_input_grad(2) && ggi.defined()) {
      d_w = std::get<1>(conv_backward_nd(dims, gy, ggi, w, stride, padding, dilation, groups, {false, true, false}));
    }
    return {at::Tensor(), d_gy, d_x, d_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// conv_transposeNd(x, w) is the input gradient of convNd(·, w), so
//   d/dx = conv(g, w)                   (the convolution forward)
//   d/dw = the convolution's weight gradient with input g and grad_output x
//   d/db = g summed over all but the channels
// all through the dispatcher (differentiable again: double backward). Where
// output_padding >= stride along an axis, conv(g, w) has output_padding /
// stride more positions there than x: they are cut off, and x gets as many
// zero positions for the weight gradient.
class ConvTransposeFunction : public torch::autograd::Function<ConvTransposeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                            at::IntArrayRef dilation) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["dims"] = dims;
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["output_padding"] = output_padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return conv_transpose_nd(dims, input, weight, bias, stride, padding, output_padding, groups, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const at::Tensor& g = grad_outputs[0];
    const int64_t dims = ctx->saved_data.at("dims").toInt();
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"),
               output_padding = ints(ctx, "output_padding"), dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data.at("groups").toInt();
    const int64_t first = x.dim() - dims;  // the first spatial dimension
    std::vector<int64_t> extra(dims), pads;  // positions past x per axis; constant_pad_nd's pads, last axis first
    bool any_extra = false;
    for (int64_t i = 0; i < dims; ++i) {
      extra[i] = output_padding[i] / stride[i];
      any_extra = any_extra || extra[i] > 0;
    }
    for (int64_t i = dims - 1; i >= 0; --i) {
      pads.insert(pads.end(), {0, extra[i]});
    }

    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gx = conv(dims, g, w, std::nullopt, stride, padding, dilation, groups);
      for (int64_t i = 0; i < dims && any_extra; ++i) {
        gx = gx.narrow(first + i, 0, x.size(first + i));
      }
    }
    if (ctx->needs_input_grad(1)) {
      const at::Tensor xg = any_extra ? at::constant_pad_nd(x, pads, 0) : x;
      gw = std::get<1>(conv_backward_nd(dims, xg, g, w, stride, padding, dilation, groups, {false, true, false}));
    }
    if (ctx->saved_data.at("has_bias").toBool() && ctx->needs_input_grad(2)) {
      gb = detail::channel_sums(g, g.dim() - dims - 1);
    }
    return {at::Tensor(), gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// im2col and col2im are linear and adjoint to each other: each one's backward
// is the other with the same window.
class Im2colFunction : public torch::autograd::Function<Im2colFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
    ctx->saved_data["output_size"] = std::vector<c10::SymInt>{input.sym_size(-2), input.sym_size(-1)};
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["stride"] = stride.vec();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return myconv::im2col(input, kernel_size, dilation, padding, stride);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return {myconv::col2im_symint(grad_outputs[0], ctx->saved_data.at("output_size").toSymIntVector(),
                                  ints(ctx, "kernel_size"), ints(ctx, "dilation"), ints(ctx, "padding"),
                                  ints(ctx, "stride")),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class Col2imFunction : public torch::autograd::Function<Col2imFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, c10::SymIntArrayRef output_size,
                            at::IntArrayRef kernel_size, at::IntArrayRef dilation, at::IntArrayRef padding,
                            at::IntArrayRef stride) {
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["stride"] = stride.vec();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return myconv::col2im_symint(input, output_size, kernel_size, dilation, padding, stride);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return {myconv::im2col(grad_outputs[0], ints(ctx, "kernel_size"), ints(ctx, "dilation"), ints(ctx, "padding"),
                           ints(ctx, "stride")),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Whether a call needs its autograd Function: a tensor argument that
// requires grad while grad mode is on, or one that carries a forward-mode
// tangent (the Function then says forward AD is unsupported). Otherwise the
// kernel runs directly below autograd: an inference call builds no graph node
// and saves nothing it would never use.
bool needs_autograd(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto tracked = [](const at::Tensor& t, bool grad_mode) {
    return t.defined() && ((grad_mode && t.requires_grad()) || t._fw_grad(/*level=*/0).defined());
  };
  const bool grad_mode = at::GradMode::is_enabled();
  return tracked(input, grad_mode) || tracked(weight, grad_mode) || (bias.has_value() && tracked(*bias, grad_mode));
}

template <int64_t D>
at::Tensor conv_autograd(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (!needs_autograd(input, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return conv(D, input, weight, bias, stride, padding, dilation, groups);
  }
  return ConvFunction::apply(D, input, weight, bias, stride, padding, dilation, groups);
}

template <int64_t D>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward_autograd(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  if (!(output_mask[0] || output_mask[1] || output_mask[2])) {  // nothing to differentiate
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return conv_backward_nd(D, grad_output, input, weight, stride, padding, dilation, groups, output_mask);
  }
  const variable_list computed = ConvBackwardFunction::apply(D, grad_output, input, weight, stride, padding,
                                                             dilation, groups, output_mask);
  at::Tensor out[3];
  for (size_t i = 0, next = 0; i < 3; ++i) {
    if (output_mask[i]) {
      out[i] = computed[next++];
    }
  }
  return {out[0], out[1], out[2]};
}

template <int64_t D>
at::Tensor conv_transpose_autograd(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                   at::IntArrayRef dilation) {
  if (!needs_autograd(input, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return conv_transpose_nd(D, input, weight, bias, stride, padding, output_padding, groups, dilation);
  }
  return ConvTransposeFunction::apply(D, input, weight, bias, stride, padding, output_padding, groups, dilation);
}

at::Tensor im2col_autograd(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                           at::IntArrayRef padding, at::IntArrayRef stride) {
  return Im2colFunction::apply(input, kernel_size, dilation, padding, stride);
}

at::Tensor col2im_autograd(const at::Tensor& input, c10::SymIntArrayRef output_size, at::IntArrayRef kernel_size,
                           at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  return Col2imFunction::apply(input, output_size, kernel_size, dilation, padding, stride);
}

} // namespace

TORCH_LIBRARY_IMPL(myconv, Autograd, m) {
  m.impl("conv1d", TORCH_FN(conv_autograd<1>));
  m.impl("conv2d", TORCH_FN(conv_autograd<2>));
  m.impl("conv3d", TORCH_FN(conv_autograd<3>));
  m.impl("conv1d_backward", TORCH_FN(conv_backward_autograd<1>));
  m.impl("conv2d_backward", TORCH_FN(conv_backward_autograd<2>));
  m.impl("conv3d_backward", TORCH_FN(conv_backward_autograd<3>));
  m.impl("conv_transpose1d", TORCH_FN(conv_transpose_autograd<1>));
  m.impl("conv_transpose2d", TORCH_FN(conv_transpose_autograd<2>));
  m.impl("conv_transpose3d", TORCH_FN(conv_transpose_autograd<3>));
  m.impl("im2col", TORCH_FN(im2col_autograd));
  m.impl("col2im", TORCH_FN(col2im_autograd));
}

} // namespace myconv
