// Autograd for the myconv ops, registered under the Autograd dispatch key so
// that gradients work the same from Python and from LibTorch.
//
// Each forward redispatches below autograd to the device kernel; each backward
// is written with myconv ops called through the dispatcher (never with opaque
// buffers), so it runs on any device and its own operations are recorded when
// a graph of the backward is requested.
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
  m.impl("im2col", TORCH_FN(im2col_autograd));
  m.impl("col2im", TORCH_FN(col2im_autograd));
}

} // namespace myconv
