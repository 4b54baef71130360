#include "conv_shape.h"

#include <c10/util/Exception.h>

#include <array>
#include <limits>
#include <optional>

namespace myconv::detail {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// A tensor argument every op accepts: defined, strided, floating point.
void check_tensor(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": expected ", name, " to be a defined tensor");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": expected ", name,
              " to be a dense (strided) tensor, but got ", name, " with layout ", t.layout());
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), op, ": expected ", name,
              " to be a floating-point tensor (float32, float64, float16 or bfloat16), but got ",
              name, " of dtype ", t.scalar_type());
}

// Two tensor arguments of one op: same dtype and same device.
void check_same(const char* op, const char* a_name, const at::Tensor& a,
                const char* b_name, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": expected ", a_name, " and ", b_name,
              " to have the same dtype, but got ", a_name, " of dtype ", a.scalar_type(), " and ",
              b_name, " of dtype ", b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), op, ": expected ", a_name, " and ", b_name,
              " to be on the same device, but got ", a_name, " on ", a.device(), " and ", b_name,
              " on ", b.device());
}

enum class Bound { Positive, NonNegative };

// An int[2] argument: two values, each positive (or non-negative).
void check_pair(const char* op, const char* name, at::IntArrayRef v, Bound bound) {
  TORCH_CHECK(v.size() == 2, op, ": expected ", name, " to be a list of 2 ints, but got ", name,
              "=", v);
  const bool ok = bound == Bound::Positive ? (v[0] > 0 && v[1] > 0) : (v[0] >= 0 && v[1] >= 0);
  TORCH_CHECK(ok, op, ": expected ", name, " to be ",
              bound == Bound::Positive ? "positive" : "non-negative", ", but got ", name, "=", v);
}

constexpr __int128 kInt64Max = std::numeric_limits<int64_t>::max();

// The padded size and the dilated kernel size along one axis must fit int64
// (checked in 128-bit arithmetic; symbolic sizes are left to the shape env).
void check_window_fits_int64(const char* op, const c10::SymInt& size, const c10::SymInt& kernel,
                             int64_t padding, int64_t dilation) {
  const auto s = size.maybe_as_int();
  const auto k = kernel.maybe_as_int();
  if (!s || !k) {
    return;
  }
  const __int128 padded = static_cast<__int128>(*s) + 2 * static_cast<__int128>(padding);
  const __int128 dilated = static_cast<__int128>(dilation) * (*k - 1) + 1;
  TORCH_CHECK(padded <= kInt64Max && dilated <= kInt64Max, op, ": padding=", padding,
              " and dilation=", dilation, " with kernel size ", *k, " and input size ", *s,
              " overflow int64 (padded input or dilated kernel larger than 2^63 - 1)");
}

// A tensor of `sizes` must have fewer than 2^63 elements.
void check_numel_fits_int64(const char* op, const char* what, c10::SymIntArrayRef sizes) {
  __int128 numel = 1;
  for (const c10::SymInt& s : sizes) {
    const auto v = s.maybe_as_int();
    if (!v) {
      return;
    }
    numel *= *v;
    TORCH_CHECK(numel <= kInt64Max, op, ": the ", what, " of size ", sizes,
                " would have more than 2^63 - 1 elements");
  }
}

// Output size (blocks along H and W) of a sliding window over an (h, w) image,
// or nothing when the dilated kernel does not fit the padded image.
std::optional<std::array<c10::SymInt, 2>> sliding_blocks(
    const char* op, const c10::SymInt& h, const c10::SymInt& w, const c10::SymInt& kh,
    const c10::SymInt& kw, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  check_window_fits_int64(op, h, kh, padding[0], dilation[0]);
  check_window_fits_int64(op, w, kw, padding[1], dilation[1]);
  if (h + 2 * padding[0] < (kh - 1) * dilation[0] + 1 ||
      w + 2 * padding[1] < (kw - 1) * dilation[1] + 1) {
    return std::nullopt;
  }
  return std::array<c10::SymInt, 2>{
      sliding_output_size(h, kh, stride[0], padding[0], dilation[0]),
      sliding_output_size(w, kw, stride[1], padding[1], dilation[1])};
}

void check_window_args(const char* op, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                       at::IntArrayRef padding, at::IntArrayRef stride) {
  check_pair(op, "kernel_size", kernel_size, Bound::Positive);
  check_pair(op, "dilation", dilation, Bound::Positive);
  check_pair(op, "padding", padding, Bound::NonNegative);
  check_pair(op, "stride", stride, Bound::Positive);
}

} // namespace

PlaneGeometry::PlaneGeometry(int64_t channels, int64_t height, int64_t width,
                             at::IntArrayRef kernel, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation)
    : channels(channels), height(height), width(width),
      kernel_h(kernel[0]), kernel_w(kernel[1]),
      stride_h(stride[0]), stride_w(stride[1]),
      pad_h(padding[0]), pad_w(padding[1]),
      dilation_h(dilation[0]), dilation_w(dilation[1]),
      out_h(sliding_output_size(height, kernel_h, stride_h, pad_h, dilation_h)),
      out_w(sliding_output_size(width, kernel_w, stride_w, pad_w, dilation_w)) {}

namespace {

// The checks conv2d and conv_transpose2d share: the tensors, the int pairs,
// groups, the number of dimensions and non-empty sizes. weight_dims names the
// weight's dimensions in messages.
void check_conv_common(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       const char* weight_dims) {
  check_tensor(op, "input", input);
  check_tensor(op, "weight", weight);
  check_same(op, "input", input, "weight", weight);
  if (bias.has_value() && bias->defined()) {
    check_tensor(op, "bias", *bias);
    check_same(op, "input", input, "bias", *bias);
  }
  check_pair(op, "stride", stride, Bound::Positive);
  check_pair(op, "padding", padding, Bound::NonNegative);
  check_pair(op, "dilation", dilation, Bound::Positive);
  TORCH_CHECK(groups > 0, op, ": expected groups to be positive, but got groups=", groups);

  const auto in = input.sym_sizes();
  const auto w = weight.sym_sizes();
  TORCH_CHECK(input.dim() == 3 || input.dim() == 4, op,
              ": expected 3-D (unbatched) or 4-D (batched) input, but got input of size ", in);
  TORCH_CHECK(weight.dim() == 4, op, ": expected 4-D weight of shape ", weight_dims,
              ", but got weight of size ", w);
  const int64_t c = input.dim() == 4 ? 1 : 0;  // index of the channel dimension
  TORCH_CHECK(in[c] > 0 && in[c + 1] > 0 && in[c + 2] > 0, op,
              ": expected input's non-batch dimensions (channels, height, width) to be non-zero, "
              "but got input of size ", in);
  TORCH_CHECK(w[0] > 0 && w[1] > 0 && w[2] > 0 && w[3] > 0, op, ": expected weight's dimensions ",
              weight_dims, " to be non-zero, but got weight of size ", w);
}

} // namespace

std::vector<c10::SymInt> check_conv2d(
    const char* op,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  const bool has_bias = bias.has_value() && bias->defined();
  check_conv_common(op, input, weight, bias, stride, padding, dilation, groups,
                    "(out_channels, in_channels/groups, kH, kW)");
  const auto in = input.sym_sizes();
  const auto w = weight.sym_sizes();
  const bool batched = input.dim() == 4;
  const int64_t c = batched ? 1 : 0;  // index of the channel dimension
  TORCH_CHECK(w[0] % groups == 0, op, ": given groups=", groups, ", expected weight.size(0)=",
              w[0], " (out_channels) to be divisible by groups");
  TORCH_CHECK(in[c] == w[1] * groups, op, ": given groups=", groups, ", weight of size ", w,
              ", expected input", in, " to have ", w[1] * groups, " channels, but got ", in[c],
              " channels instead");
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == w[0], op, ": given weight of size ", w,
                ", expected bias to be 1-D with ", w[0], " elements (out_channels), but got bias of size ",
                bias->sym_sizes());
  }

  const auto blocks =
      sliding_blocks(op, in[c + 1], in[c + 2], w[2], w[3], stride, padding, dilation);
  TORCH_CHECK(blocks.has_value(), op, ": calculated padded input size per channel: (",
              in[c + 1] + 2 * padding[0], " x ", in[c + 2] + 2 * padding[1],
              "). Dilated kernel size: (", (w[2] - 1) * dilation[0] + 1, " x ",
              (w[3] - 1) * dilation[1] + 1, "). Kernel size can't be greater than actual input size");
  std::vector<c10::SymInt> out;
  if (batched) {
    out.push_back(in[0]);
  }
  out.push_back(w[0]);
  out.push_back((*blocks)[0]);
  out.push_back((*blocks)[1]);
  check_numel_fits_int64(op, "output", out);
  check_numel_fits_int64(op, "column matrix of one image",
                         {in[c], w[2], w[3], (*blocks)[0], (*blocks)[1]});
  return out;
}

void check_conv2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  constexpr const char* op = "myconv::conv2d_backward";
  const auto expected =
      check_conv2d(op, input, weight, std::nullopt, stride, padding, dilation, groups);
  check_tensor(op, "grad_output", grad_output);
  check_same(op, "input", input, "grad_output", grad_output);
  TORCH_CHECK(grad_output.sym_sizes().equals(expected), op,
              ": expected grad_output of size ", c10::SymIntArrayRef(expected),
              " (the size of conv2d's output), but got grad_output of size ",
              grad_output.sym_sizes());
}

std::vector<c10::SymInt> check_conv_transpose2d(
    const char* op,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef output_padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  const bool has_bias = bias.has_value() && bias->defined();
  check_pair(op, "output_padding", output_padding, Bound::NonNegative);
  check_conv_common(op, input, weight, bias, stride, padding, dilation, groups,
                    "(in_channels, out_channels/groups, kH, kW)");
  TORCH_CHECK((output_padding[0] < stride[0] || output_padding[0] < dilation[0]) &&
                  (output_padding[1] < stride[1] || output_padding[1] < dilation[1]),
              op, ": output padding must be smaller than either stride or dilation, but got "
              "output_padding_height: ", output_padding[0], " output_padding_width: ", output_padding[1],
              " stride_height: ", stride[0], " stride_width: ", stride[1], " dilation_height: ",
              dilation[0], " dilation_width: ", dilation[1]);
  const auto in = input.sym_sizes();
  const auto w = weight.sym_sizes();
  const bool batched = input.dim() == 4;
  const int64_t c = batched ? 1 : 0;  // index of the channel dimension
  TORCH_CHECK(w[0] % groups == 0, op, ": given groups=", groups, ", expected weight.size(0)=",
              w[0], " (in_channels) to be divisible by groups");
  TORCH_CHECK(in[c] == w[0], op, ": given transposed=1, weight of size ", w, ", expected input", in,
              " to have ", w[0], " channels, but got ", in[c], " channels instead");
  const c10::SymInt out_channels = w[1] * groups;
  if (has_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == out_channels, op, ": given transposed=1, weight of size ",
                w, ", expected bias to be 1-D with ", out_channels,
                " elements (out_channels), but got bias of size ", bias->sym_sizes());
  }

  std::array<c10::SymInt, 2> size;
  for (size_t i = 0; i < 2; ++i) {
    const c10::SymInt& n = in[c + 1 + i];
    const c10::SymInt& k = w[2 + i];
    if (const auto ni = n.maybe_as_int(), ki = k.maybe_as_int(); ni && ki) {
      const __int128 s = (static_cast<__int128>(*ni) - 1) * stride[i] + static_cast<__int128>(dilation[i]) * (*ki - 1) +
                         output_padding[i] + 1;
      TORCH_CHECK(s <= kInt64Max, op, ": the output size along dimension ", i + 2, " overflows int64");
    }
    size[i] = (n - 1) * stride[i] - 2 * padding[i] + (k - 1) * dilation[i] + output_padding[i] + 1;
  }
  TORCH_CHECK(size[0] > 0 && size[1] > 0, op, ": Given input size per channel: (", in[c + 1], " x ",
              in[c + 2], "). Calculated output size per channel: (", size[0], " x ", size[1],
              "). Output size is too small");
  std::vector<c10::SymInt> out;
  if (batched) {
    out.push_back(in[0]);
  }
  out.push_back(out_channels);
  out.push_back(size[0]);
  out.push_back(size[1]);
  check_numel_fits_int64(op, "output", out);
  check_numel_fits_int64(op, "column matrix of one image", {out_channels, w[2], w[3], in[c + 1], in[c + 2]});
  return out;
}

StringPadding string_padding(const char* op, c10::string_view padding, at::IntArrayRef kernel,
                             at::IntArrayRef stride, at::IntArrayRef dilation) {
  TORCH_CHECK(padding == "same" || padding == "valid", op, ": Invalid padding string: '",
              std::string(padding), "' (expected 'same' or 'valid')");
  check_pair(op, "stride", stride, Bound::Positive);
  check_pair(op, "dilation", dilation, Bound::Positive);
  StringPadding out{{0, 0}, {0, 0}};
  if (padding == "valid") {
    return out;
  }
  TORCH_CHECK(stride[0] == 1 && stride[1] == 1, op,
              ": padding='same' is not supported for strided convolutions, but got stride=",
              stride);
  for (size_t i = 0; i < 2; ++i) {
    const int64_t total = dilation[i] * (kernel[i] - 1);
    out.both[i] = total / 2;
    out.extra[i] = total - 2 * (total / 2);
  }
  return out;
}

at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last && input.dim() == 4 ? at::MemoryFormat::ChannelsLast
                                           : at::MemoryFormat::Contiguous;
}

std::vector<c10::SymInt> check_im2col(
    const at::Tensor& input,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride) {
  constexpr const char* op = "myconv::im2col";
  check_tensor(op, "input", input);
  check_window_args(op, kernel_size, dilation, padding, stride);
  const auto in = input.sym_sizes();
  const int64_t c = input.dim() == 4 ? 1 : 0;  // index of the channel dimension
  TORCH_CHECK((input.dim() == 3 || input.dim() == 4) && in[c] > 0 && in[c + 1] > 0 &&
                  in[c + 2] > 0,
              op, ": expected a 3-D (C, H, W) or 4-D (N, C, H, W) input with non-zero C, H, W, "
              "but got input of size ", in);
  const auto blocks = sliding_blocks(op, in[c + 1], in[c + 2], kernel_size[0], kernel_size[1],
                                     stride, padding, dilation);
  TORCH_CHECK(blocks.has_value(), op, ": given input with spatial size (", in[c + 1], ", ",
              in[c + 2], "), kernel_size=", kernel_size, ", dilation=", dilation,
              ", padding=", padding,
              ", the dilated kernel does not fit the padded input: there are no sliding blocks");
  std::vector<c10::SymInt> out;
  if (c == 1) {
    out.push_back(in[0]);
  }
  check_numel_fits_int64(op, "column matrix",
                         {c == 1 ? in[0] : c10::SymInt(1), in[c], kernel_size[0], kernel_size[1],
                          (*blocks)[0], (*blocks)[1]});
  out.push_back(in[c] * (kernel_size[0] * kernel_size[1]));
  out.push_back((*blocks)[0] * (*blocks)[1]);
  return out;
}

std::vector<c10::SymInt> check_col2im(
    const at::Tensor& input,
    c10::SymIntArrayRef output_size,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride) {
  constexpr const char* op = "myconv::col2im";
  check_tensor(op, "input", input);
  TORCH_CHECK(output_size.size() == 2 && output_size[0] > 0 && output_size[1] > 0, op,
              ": expected output_size to be a list of 2 positive ints, but got output_size=",
              output_size);
  check_window_args(op, kernel_size, dilation, padding, stride);
  const auto in = input.sym_sizes();
  const int64_t c = input.dim() == 3 ? 1 : 0;  // index of the (C*kH*kW) dimension
  TORCH_CHECK((input.dim() == 2 || input.dim() == 3) && in[c] > 0 && in[c + 1] > 0, op,
              ": expected a 2-D (C*kH*kW, L) or 3-D (N, C*kH*kW, L) input with non-zero "
              "non-batch dimensions, but got input of size ", in);
  const int64_t kernel_area = kernel_size[0] * kernel_size[1];
  TORCH_CHECK(in[c] % kernel_area == 0, op, ": expected input.size(", c, ")=", in[c],
              " to be divisible by the product of kernel_size=", kernel_size);
  const auto blocks = sliding_blocks(op, output_size[0], output_size[1], kernel_size[0],
                                     kernel_size[1], stride, padding, dilation);
  const c10::SymInt block_h = blocks ? (*blocks)[0] : c10::SymInt(0);
  const c10::SymInt block_w = blocks ? (*blocks)[1] : c10::SymInt(0);
  TORCH_CHECK(blocks.has_value() && in[c + 1] == block_h * block_w, op,
              ": given output_size=", output_size, ", kernel_size=", kernel_size,
              ", dilation=", dilation, ", padding=", padding, ", stride=", stride,
              ", expected input.size(", c + 1, ") to match the calculated number of sliding blocks ",
              block_h, " * ", block_w, " = ", block_h * block_w, ", but got input.size(", c + 1,
              ")=", in[c + 1]);
  std::vector<c10::SymInt> out;
  if (c == 1) {
    out.push_back(in[0]);
  }
  out.push_back(in[c] / kernel_area);
  out.push_back(output_size[0]);
  out.push_back(output_size[1]);
  check_numel_fits_int64(op, "output", out);
  return out;
}

} // namespace myconv::detail
