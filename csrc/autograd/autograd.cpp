// Autograd for the myconv ops, registered under the Autograd dispatch key so
// that gradients work the same from Python and from LibTorch.
//
// Each forward redispatches below autograd to the device kernel; each backward
// is written with myconv ops called through the dispatcher (never with opaque
// buffers), so it runs on any device and its own operations are recorded when
// a graph of the backward is requested.
#include <ATen/ops/constant_pad_nd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "../myconv.h"

namespace myconv {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> ints(const AutogradContext* ctx, const char* key) {
  return ctx->saved_data.at(key).toIntVector();
}

class Conv2dFunction : public torch::autograd::Function<Conv2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                            at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return myconv::conv2d(input, weight, bias, stride, padding, dilation, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad_output = grad_outputs[0];
    const bool has_bias = ctx->saved_data.at("has_bias").toBool();
    // needs_input_grad counts tensor arguments only: input, weight, then bias if given.
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                   has_bias && ctx->needs_input_grad(2)};
    auto [grad_input, grad_weight, grad_bias] = myconv::conv2d_backward(
        grad_output, saved[0], saved[1], ints(ctx, "stride"), ints(ctx, "padding"),
        ints(ctx, "dilation"), ctx->saved_data.at("groups").toInt(), mask);
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

// conv2d_backward is itself differentiable (double backward). Its outputs are
//   gI = conv2d input-gradient    (linear in gy, linear in W)
//   gW = conv2d weight-gradient   (linear in gy, linear in x)
//   gB = gy summed over N, H, W
// so with incoming gradients ggI, ggW, ggB:
//   d/d gy = conv2d(ggI, W) + conv2d(x, ggW) + ggB broadcast
//   d/d x  = input-gradient of a conv2d with weight ggW at grad_output gy
//   d/d W  = weight-gradient of a conv2d with input ggI at grad_output gy
// all through the dispatcher, so these are differentiable again. A custom
// Function cannot return undefined tensors, so forward returns only the
// gradients output_mask asks for, in order.
class Conv2dBackwardFunction : public torch::autograd::Function<Conv2dBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output,
                               const at::Tensor& input, const at::Tensor& weight,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups,
                               std::array<bool, 3> output_mask) {
    ctx->save_for_backward({grad_output, input, weight});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["output_mask"] =
        std::vector<bool>(output_mask.begin(), output_mask.end());
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [gi, gw, gb] = myconv::conv2d_backward(grad_output, input, weight, stride, padding,
                                                dilation, groups, output_mask);
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
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"),
               dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data.at("groups").toInt();

    at::Tensor d_gy, d_x, d_w;
    if (ctx->needs_input_grad(0)) {
      const auto add = [&d_gy](const at::Tensor& t) { d_gy = d_gy.defined() ? d_gy.add(t) : t; };
      if (ggi.defined()) {
        add(myconv::conv2d(ggi, w, std::nullopt, stride, padding, dilation, groups));
      }
      if (ggw.defined()) {
        add(myconv::conv2d(x, ggw, std::nullopt, stride, padding, dilation, groups));
      }
      if (ggb.defined()) {
        std::vector<int64_t> shape(gy.dim(), 1);
        shape[gy.dim() - 3] = -1;  // the channel dimension
        add(ggb.view(shape).expand_as(gy).contiguous());
      }
    }
    if (ctx->needs_input_grad(1) && ggw.defined()) {
      d_x = std::get<0>(myconv::conv2d_backward(gy, x, ggw, stride, padding, dilation, groups,
                                                {true, false, false}));
    }
    if (ctx->needs_input_grad(2) && ggi.defined()) {
      d_w = std::get<1>(myconv::conv2d_backward(gy, ggi, w, stride, padding, dilation, groups,
                                                {false, true, false}));
    }
    return {d_gy, d_x, d_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// conv_transpose2d(x, w) is the input gradient of conv2d(·, w), so
//   d/dx = conv2d(g, w)                  (the convolution forward)
//   d/dw = conv2d's weight gradient with input g and grad_output x
//   d/db = g summed over N, H, W
// all through the dispatcher (differentiable again: double backward). Where
// output_padding >= stride, conv2d(g, w) has output_padding / stride more
// rows (columns) than x: they are cut off, and x gets as many zero rows for
// the weight gradient.
class ConvTranspose2dFunction : public torch::autograd::Function<ConvTranspose2dFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                            at::IntArrayRef dilation) {
    ctx->save_for_backward({input, weight});
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["output_padding"] = output_padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return myconv::conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const at::Tensor& g = grad_outputs[0];
    const auto stride = ints(ctx, "stride"), padding = ints(ctx, "padding"),
               output_padding = ints(ctx, "output_padding"), dilation = ints(ctx, "dilation");
    const int64_t groups = ctx->saved_data.at("groups").toInt();
    const int64_t h = x.dim() - 2;  // the height dimension
    const int64_t extra_h = output_padding[0] / stride[0], extra_w = output_padding[1] / stride[1];

    at::Tensor gx, gw, gb;
    if (ctx->needs_input_grad(0)) {
      gx = myconv::conv2d(g, w, std::nullopt, stride, padding, dilation, groups);
      if (extra_h || extra_w) {
        gx = gx.narrow(h, 0, x.size(h)).narrow(h + 1, 0, x.size(h + 1));
      }
    }
    if (ctx->needs_input_grad(1)) {
      const at::Tensor xg = extra_h || extra_w ? at::constant_pad_nd(x, {0, extra_w, 0, extra_h}, 0) : x;
      gw = std::get<1>(myconv::conv2d_backward(xg, g, w, stride, padding, dilation, groups,
                                               {false, true, false}));
    }
    if (ctx->saved_data.at("has_bias").toBool() && ctx->needs_input_grad(2)) {
      gb = x.dim() == 4 ? g.sum(at::IntArrayRef{0, 2, 3}) : g.sum(at::IntArrayRef{1, 2});
    }
    return {gx, gw, gb, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// im2col and col2im are linear and adjoint to each other: each one's backward
// is the other with the same window.
class Im2colFunction : public torch::autograd::Function<Im2colFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                            at::IntArrayRef padding, at::IntArrayRef stride) {
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
                                  ints(ctx, "kernel_size"), ints(ctx, "dilation"),
                                  ints(ctx, "padding"), ints(ctx, "stride")),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class Col2imFunction : public torch::autograd::Function<Col2imFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input,
                            c10::SymIntArrayRef output_size, at::IntArrayRef kernel_size,
                            at::IntArrayRef dilation, at::IntArrayRef padding,
                            at::IntArrayRef stride) {
    ctx->saved_data["kernel_size"] = kernel_size.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["stride"] = stride.vec();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return myconv::col2im_symint(input, output_size, kernel_size, dilation, padding, stride);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    return {myconv::im2col(grad_outputs[0], ints(ctx, "kernel_size"), ints(ctx, "dilation"),
                           ints(ctx, "padding"), ints(ctx, "stride")),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor conv2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return Conv2dFunction::apply(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_autograd(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  if (!(output_mask[0] || output_mask[1] || output_mask[2])) {  // nothing to differentiate
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return myconv::conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups,
                                   output_mask);
  }
  const variable_list computed = Conv2dBackwardFunction::apply(
      grad_output, input, weight, stride, padding, dilation, groups, output_mask);
  at::Tensor out[3];
  for (size_t i = 0, next = 0; i < 3; ++i) {
    if (output_mask[i]) {
      out[i] = computed[next++];
    }
  }
  return {out[0], out[1], out[2]};
}

at::Tensor conv_transpose2d_autograd(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                                     at::IntArrayRef dilation) {
  return ConvTranspose2dFunction::apply(input, weight, bias, stride, padding, output_padding, groups,
                                        dilation);
}

at::Tensor im2col_autograd(const at::Tensor& input, at::IntArrayRef kernel_size,
                           at::IntArrayRef dilation, at::IntArrayRef padding,
                           at::IntArrayRef stride) {
  return Im2colFunction::apply(input, kernel_size, dilation, padding, stride);
}

at::Tensor col2im_autograd(const at::Tensor& input, c10::SymIntArrayRef output_size,
                           at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                           at::IntArrayRef padding, at::IntArrayRef stride) {
  return Col2imFunction::apply(input, output_size, kernel_size, dilation, padding, stride);
}

} // namespace

TORCH_LIBRARY_IMPL(myconv, Autograd, m) {
  m.impl("conv2d", TORCH_FN(conv2d_autograd));
  m.impl("conv2d_backward", TORCH_FN(conv2d_backward_autograd));
  m.impl("conv_transpose2d", TORCH_FN(conv_transpose2d_autograd));
  m.impl("im2col", TORCH_FN(im2col_autograd));
  m.impl("col2im", TORCH_FN(col2im_autograd));
}

} // namespace myconv
