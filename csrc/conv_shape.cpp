#include "conv_shape.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

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

// An int[n] argument: n values, each positive (or non-negative).
void check_list(const char* op, const char* name, at::IntArrayRef v, int64_t n, Bound bound) {
  TORCH_CHECK(static_cast<int64_t>(v.size()) == n, op, ": expected ", name, " to be a list of ", n,
              n == 1 ? " int" : " ints", ", but got ", name, "=", v);
  const bool ok = std::all_of(v.begin(), v.end(),
                              [&](int64_t x) { return bound == Bound::Positive ? x > 0 : x >= 0; });
  TORCH_CHECK(ok, op, ": expected ", name, " to be ",
              bound == Bound::Positive ? "positive" : "non-negative", ", but got ", name, "=", v);
}

void check_pair(const char* op, const char* name, at::IntArrayRef v, Bound bound) {
  check_list(op, name, v, 2, bound);
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

// Output size (blocks along each axis) of a sliding window over an image of
// `size`, or nothing when the dilated kernel does not fit the padded image
// along some axis.
std::optional<std::vector<c10::SymInt>> sliding_blocks(const char* op, c10::SymIntArrayRef size,
                                                       c10::SymIntArrayRef kernel, at::IntArrayRef stride,
                                                       at::IntArrayRef padding, at::IntArrayRef dilation) {
  for (size_t i = 0; i < size.size(); ++i) {
    check_window_fits_int64(op, size[i], kernel[i], padding[i], dilation[i]);
  }
  std::vector<c10::SymInt> out;
  for (size_t i = 0; i < size.size(); ++i) {
    if (size[i] + 2 * padding[i] < (kernel[i] - 1) * dilation[i] + 1) {
      return std::nullopt;
    }
    out.push_back(sliding_output_size(size[i], kernel[i], stride[i], padding[i], dilation[i]));
  }
  return out;
}

// "(a x b x c)"
template <typename T>
std::string by(const std::vector<T>& v) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < v.size(); ++i) {
    out << (i ? " x " : "") << v[i];
  }
  out << ")";
  return out.str();
}

std::vector<c10::SymInt> symints(at::IntArrayRef v) {
  return std::vector<c10::SymInt>(v.begin(), v.end());
}

void check_window_args(const char* op, at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                       at::IntArrayRef padding, at::IntArrayRef stride) {
  check_pair(op, "kernel_size", kernel_size, Bound::Positive);
  check_pair(op, "dilation", dilation, Bound::Positive);
  check_pair(op, "padding", padding, Bound::NonNegative);
  check_pair(op, "stride", stride, Bound::Positive);
}

} // namespace

const char* conv_op_name(int64_t dims) {
  static const char* names[] = {"myconv::conv1d", "myconv::conv2d", "myconv::conv3d"};
  return names[std::clamp<int64_t>(dims, 1, kMaxSpatialDims) - 1];
}
const char* conv_backward_op_name(int64_t dims) {
  static const char* names[] = {"myconv::conv1d_backward", "myconv::conv2d_backward", "myconv::conv3d_backward"};
  return names[std::clamp<int64_t>(dims, 1, kMaxSpatialDims) - 1];
}
const char* conv_transpose_op_name(int64_t dims) {
  static const char* names[] = {"myconv::conv_transpose1d", "myconv::conv_transpose2d", "myconv::conv_transpose3d"};
  return names[std::clamp<int64_t>(dims, 1, kMaxSpatialDims) - 1];
}

namespace {

// The names of the spatial axes of a `dims`-dimensional convolution.
std::vector<const char*> axis_names(int64_t dims) {
  static const char* all[] = {"depth", "height", "width"};
  return std::vector<const char*>(all + kMaxSpatialDims - dims, all + kMaxSpatialDims);
}

// "(out_channels, in_channels/groups, kT, kH, kW)" and the like: the weight's
// dimensions, as PyTorch's docs name them.
std::string weight_dims(int64_t dims, const char* first, const char* second) {
  static const char* kernel[] = {"kT", "kH", "kW"};
  std::string out = std::string("(") + first + ", " + second;
  for (int64_t i = kMaxSpatialDims - dims; i < kMaxSpatialDims; ++i) {
    out += std::string(", ") + kernel[i];
  }
  return out + ")";
}

// The checks convolutions and transposed convolutions share: the tensors, the
// int lists, groups, the number of dimensions and non-empty sizes. weight_names
// names the weight's dimensions in messages.
void check_conv_common(const char* op, int64_t dims, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       const std::string& weight_names) {
  TORCH_INTERNAL_ASSERT(dims >= 1 && dims <= kMaxSpatialDims);
  check_tensor(op, "input", input);
  check_tensor(op, "weight", weight);
  check_same(op, "input", input, "weight", weight);
  if (bias.has_value() && bias->defined()) {
    check_tensor(op, "bias", *bias);
    check_same(op, "input", input, "bias", *bias);
  }
  check_list(op, "stride", stride, dims, Bound::Positive);
  check_list(op, "padding", padding, dims, Bound::NonNegative);
  check_list(op, "dilation", dilation, dims, Bound::Positive);
  TORCH_CHECK(groups > 0, op, ": expected groups to be positive, but got groups=", groups);

  const auto in = input.sym_sizes();
  const auto w = weight.sym_sizes();
  TORCH_CHECK(input.dim() == dims + 1 || input.dim() == dims + 2, op, ": expected ", dims + 1,
              "-D (unbatched) or ", dims + 2, "-D (batched) input, but got input of size ", in);
  TORCH_CHECK(weight.dim() == dims + 2, op, ": expected ", dims + 2, "-D weight of shape ", weight_names,
              ", but got weight of size ", w);
  const int64_t c = input.dim() - dims - 1;  // index of the channel dimension
  std::string names = "channels";
  for (const char* axis : axis_names(dims)) {
    names += std::string(", ") + axis;
  }
  TORCH_CHECK(std::all_of(in.begin() + c, in.end(), [](const c10::SymInt& s) { return s > 0; }), op,
              ": expected input's non-batch dimensions (", names, ") to be non-zero, but got input of size ", in);
  TORCH_CHECK(std::all_of(w.begin(), w.end(), [](const c10::SymInt& s) { return s > 0; }), op,
              ": expected weight's dimensions ", weight_names, " to be non-zero, but got weight of size ", w);
}

} // namespace

std::vector<c10::SymInt> check_conv(
    const char* op,
    int64_t dims,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  const bool has_bias = bias.has_value() && bias->defined();
  check_conv_common(op, dims, input, weight, bias, stride, padding, dilation, groups,
                    weight_dims(dims, "out_channels", "in_channels/groups"));
  const auto in = input.sym_sizes();
  const auto w = weight.sym_sizes();
  const bool batched = input.dim() == dims + 2;
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

  const c10::SymIntArrayRef spatial = in.slice(c + 1, dims), kernel = w.slice(2, dims);
  const auto blocks = sliding_blocks(op, spatial, kernel, stride, padding, dilation);
  if (!blocks.has_value()) {
    std::vector<c10::SymInt> padded, dilated;
    for (int64_t i = 0; i < dims; ++i) {
      padded.push_back(spatial[i] + 2 * padding[i]);
      dilated.push_back((kernel[i] - 1) * dilation[i] + 1);
    }
    TORCH_CHECK(false, op, ": calculated padded input size per channel: ", by(padded), ". Dilated kernel size: ",
                by(dilated), ". Kernel size can't be greater than actual input size");
  }
  std::vector<c10::SymInt> out;
  if (batched) {
    out.push_back(in[0]);
  }
  out.push_back(w[0]);
  out.insert(out.end(), blocks->begin(), blocks->end());
  check_numel_fits_int64(op, "output", out);
  std::vector<c10::SymInt> columns{in[c]};
  columns.insert(columns.end(), kernel.begin(), kernel.end());
  columns.insert(columns.end(), blocks->begin(), blocks->end());
  check_numel_fits_int64(op, "column matrix of one image", columns);
  return out;
}

void check_conv_backward(
    int64_t dims,
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  const char* op = conv_backward_op_name(dims);
  const auto expected = check_conv(op, dims, input, weight, std::nullopt, stride, padding, dilation, groups);
  check_tensor(op, "grad_output", grad_output);
  check_same(op, "input", input, "grad_output", grad_output);
  TORCH_CHECK(grad_output.sym_sizes().equals(expected), op,
              ": expected grad_output of size ", c10::SymIntArrayRef(expected), " (the size of conv", dims,
              "d's output), but got grad_output of size ", grad_output.sym_sizes());
}

std::vector<c10::SymInt> check_conv_transpose(
    const char* op,
    int64_t dims,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef output_padding,
    at::IntArrayRef dilation,
    int64_t groups) {
  const bool has_bias = bias.has_value() && bias->defined();
  check_list(op, "output_padding", output_padding, dims, Bound::NonNegative);
  check_conv_common(op, dims, input, weight, bias, stride, padding, dilation, groups,
                    weight_dims(dims, "in_channels", "out_channels/groups"));
  bool small_enough = true;
  for (int64_t i = 0; i < dims; ++i) {
    small_enough = small_enough && (output_padding[i] < stride[i] || output_padding[i] < dilation[i]);
  }
  if (!small_enough) {
    std::ostringstream got;
    const auto axes = axis_names(dims);
    const std::pair<const char*, at::IntArrayRef> lists[] = {
        {"output_padding", output_padding}, {"stride", stride}, {"dilation", dilation}};
    for (const auto& [kind, values] : lists) {
      for (int64_t i = 0; i < dims; ++i) {
        got << (got.tellp() > 0 ? " " : "") << kind << "_" << axes[i] << ": " << values[i];
      }
    }
    TORCH_CHECK(false, op, ": output padding must be smaller than either stride or dilation, but got ", got.str());
  }
  const auto in = input.sym_sizes();
  const auto w = weight.sym_sizes();
  const bool batched = input.dim() == dims + 2;
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

  std::vector<c10::SymInt> size, given;
  for (int64_t i = 0; i < dims; ++i) {
    const c10::SymInt& n = in[c + 1 + i];
    const c10::SymInt& k = w[2 + i];
    if (const auto ni = n.maybe_as_int(), ki = k.maybe_as_int(); ni && ki) {
      const __int128 s = (static_cast<__int128>(*ni) - 1) * stride[i] + static_cast<__int128>(dilation[i]) * (*ki - 1) +
                         output_padding[i] + 1;
      TORCH_CHECK(s <= kInt64Max, op, ": the output size along dimension ", c + 1 + i, " overflows int64");
    }
    size.push_back((n - 1) * stride[i] - 2 * padding[i] + (k - 1) * dilation[i] + output_padding[i] + 1);
    given.push_back(n);
  }
  TORCH_CHECK(std::all_of(size.begin(), size.end(), [](const c10::SymInt& s) { return s > 0; }), op,
              ": Given input size per channel: ", by(given), ". Calculated output size per channel: ", by(size),
              ". Output size is too small");
  std::vector<c10::SymInt> out;
  if (batched) {
    out.push_back(in[0]);
  }
  out.push_back(out_channels);
  out.insert(out.end(), size.begin(), size.end());
  check_numel_fits_int64(op, "output", out);
  std::vector<c10::SymInt> columns{out_channels};
  columns.insert(columns.end(), w.begin() + 2, w.end());
  columns.insert(columns.end(), in.begin() + c + 1, in.end());
  check_numel_fits_int64(op, "column matrix of one image", columns);
  return out;
}

StringPadding string_padding(const char* op, c10::string_view padding, at::IntArrayRef kernel,
                             at::IntArrayRef stride, at::IntArrayRef dilation) {
  const int64_t dims = static_cast<int64_t>(kernel.size());
  TORCH_CHECK(padding == "same" || padding == "valid", op, ": Invalid padding string: '",
              std::string(padding), "' (expected 'same' or 'valid')");
  check_list(op, "stride", stride, dims, Bound::Positive);
  check_list(op, "dilation", dilation, dims, Bound::Positive);
  StringPadding out{std::vector<int64_t>(dims, 0), std::vector<int64_t>(dims, 0)};
  if (padding == "valid") {
    return out;
  }
  TORCH_CHECK(std::all_of(stride.begin(), stride.end(), [](int64_t s) { return s == 1; }), op,
              ": padding='same' is not supported for strided convolutions, but got stride=", stride);
  for (int64_t i = 0; i < dims; ++i) {
    const int64_t total = dilation[i] * (kernel[i] - 1);
    out.both[i] = total / 2;
    out.extra[i] = total - 2 * (total / 2);
  }
  return out;
}

std::vector<int64_t> StringPadding::end_pads() const {
  if (std::all_of(extra.begin(), extra.end(), [](int64_t e) { return e == 0; })) {
    return {};
  }
  std::vector<int64_t> pads;
  for (auto e = extra.rbegin(); e != extra.rend(); ++e) {
    pads.insert(pads.end(), {0, *e});
  }
  return pads;
}

at::MemoryFormat channels_last_format(int64_t dim) {
  return dim == 5 ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::ChannelsLast;
}

at::MemoryFormat conv_memory_format(int64_t dims, const at::Tensor& input, const at::Tensor& weight) {
  if (dims < 2 || input.dim() != dims + 2) {
    return at::MemoryFormat::Contiguous;  // 1-D, or unbatched: no channels-last format
  }
  const at::MemoryFormat cl = channels_last_format(dims + 2);
  const bool channels_last = input.suggest_memory_format() == cl || weight.suggest_memory_format() == cl;
  return channels_last ? cl : at::MemoryFormat::Contiguous;
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
  const auto blocks = sliding_blocks(op, in.slice(c + 1, 2), symints(kernel_size), stride, padding, dilation);
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
  const auto blocks = sliding_blocks(op, output_size, symints(kernel_size), stride, padding, dilation);
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
