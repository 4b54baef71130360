// The one place that validates arguments and computes output shapes.
//
// Every backend kernel (CPU, CUDA) and the Meta kernel call these functions, so
// a bad argument produces the same RuntimeError (c10::Error) everywhere and the
// shapes FakeTensor / torch.compile see are the shapes the kernels produce.
// Sizes are c10::SymInt so the Meta kernel works under dynamic shapes; the real
// kernels read concrete values back with PlaneGeometry.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/core/SymInt.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

namespace myconv::detail {

// Number of positions a window of `kernel` taps (spaced `dilation` apart) takes
// along an axis of `size` elements padded by `padding` on both sides, moving by
// `stride`. Callers check beforehand that the dilated kernel fits the padded
// size, so the numerator is never negative.
template <typename T>
T sliding_output_size(const T& size, const T& kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return (size + 2 * padding - (kernel - 1) * dilation - 1) / stride + 1;
}

// One (C, H, W) image and the sliding window over it: everything an
// im2col / col2im kernel needs. Column matrix rows are (c, kh, kw), columns
// are output positions (oh, ow).
struct PlaneGeometry {
  int64_t channels = 0, height = 0, width = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;

  PlaneGeometry() = default;
  PlaneGeometry(int64_t channels, int64_t height, int64_t width,
                at::IntArrayRef kernel, at::IntArrayRef stride,
                at::IntArrayRef padding, at::IntArrayRef dilation);

  int64_t rows() const { return channels * kernel_h * kernel_w; }
  int64_t cols() const { return out_h * out_w; }
};

// A column tile: the columns of `nb` images (a batch slice), for output
// positions [l_begin, l_end) of each image and input channels
// [c_begin, c_end) with all their kH*kW taps. Rows are ordered (c, kh, kw) for
// channels-first (NCHW) images and (kh, kw, c) for channels-last (NHWC) ones
// (ColumnLayout::channels_last), c counted from c_begin.
struct ColumnTile {
  int64_t l_begin = 0, l_end = 0;
  int64_t c_begin = 0, c_end = 0;

  // The whole column matrix of images with `g`'s geometry.
  static ColumnTile whole(const PlaneGeometry& g) { return {0, g.cols(), 0, g.channels}; }
  int64_t positions() const { return l_end - l_begin; }
  int64_t channels() const { return c_end - c_begin; }
};

// Where column-tile element (image b, row r, position l) lives in a buffer:
//   b * batch_stride + r * row_stride + (l - l_begin) * col_stride.
//  - the im2col / col2im ops use (N, rows, L):  batch_stride = rows * L, row_stride = L, col_stride = 1
//  - conv2d's channels-first tiles are (rows, nb * positions): batch_stride = positions,
//    row_stride = nb * positions, col_stride = 1 (one GEMM covers the tile's images)
//  - conv2d's channels-last tiles are (nb * positions, rows): batch_stride = positions * rows,
//    row_stride = 1, col_stride = rows
// channels_last: the images are NHWC and the rows (kh, kw, c); else NCHW
// images and (c, kh, kw) rows.
struct ColumnLayout {
  int64_t batch_stride;
  int64_t row_stride;
  int64_t col_stride = 1;
  bool channels_last = false;
};

// conv2d argument check; returns the output size (4-D, or 3-D for an
// unbatched input). `op` names the operator in error messages.
std::vector<c10::SymInt> check_conv2d(
    const char* op,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups);

// conv2d_backward argument check: the conv2d check, plus grad_output must have
// the output's shape, dtype and device.
void check_conv2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups);

// conv_transpose2d argument check (F.conv_transpose2d semantics; weight
// (in_channels, out_channels/groups, kH, kW)); returns the output size (4-D,
// or 3-D for an unbatched input): per axis
//   (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1.
std::vector<c10::SymInt> check_conv_transpose2d(
    const char* op,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef output_padding,
    at::IntArrayRef dilation,
    int64_t groups);

// padding='same' / 'valid' (the conv2d.padding overload). 'same' keeps the
// spatial size: per axis dilation*(kernel-1) zeros in all, half before, half
// after, the odd one after (bottom / right), as PyTorch does.
struct StringPadding {
  std::array<int64_t, 2> both;   // symmetric padding given to conv2d
  std::array<int64_t, 2> extra;  // additional zeros at the bottom / right
};
StringPadding string_padding(const char* op, c10::string_view padding, at::IntArrayRef kernel,
                             at::IntArrayRef stride, at::IntArrayRef dilation);

// Layout of conv2d's output and gradients, mirroring F.conv2d: channels_last
// when the input or the weight is channels_last, contiguous otherwise.
at::MemoryFormat conv2d_memory_format(const at::Tensor& input, const at::Tensor& weight);

// im2col / col2im argument checks (F.unfold / F.fold semantics); return the
// output size.
std::vector<c10::SymInt> check_im2col(
    const at::Tensor& input,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride);

std::vector<c10::SymInt> check_col2im(
    const at::Tensor& input,
    c10::SymIntArrayRef output_size,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride);

} // namespace myconv::detail
