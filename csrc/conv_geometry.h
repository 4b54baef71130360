// The geometry of a convolution's window over an image, for 1, 2 or 3
// spatial dimensions, and where the columns of a tile of output positions live:
// the interface between the composition and every backend's im2col / col2im.
#pragma once

#include <c10/util/ArrayRef.h>

#include <cstdint>

namespace myconv::detail {

// Number of positions a window of `kernel` taps (spaced `dilation` apart) takes
// along an axis of `size` elements padded by `padding` on both sides, moving by
// `stride`. Callers check beforehand that the dilated kernel fits the padded
// size, so the numerator is never negative.
template <typename T>
T sliding_output_size(const T& size, const T& kernel, int64_t stride, int64_t padding, int64_t dilation) {
  return (size + 2 * padding - (kernel - 1) * dilation - 1) / stride + 1;
}

// Most spatial dimensions a convolution has (conv3d: depth, height, width).
constexpr int64_t kMaxSpatialDims = 3;

// One (C, D, H, W) image and the sliding window over it: everything an
// im2col / col2im kernel needs, for 1, 2 or 3 spatial dimensions. Fewer
// dimensions are the trailing ones with unit leading dimensions: a 2-D image
// has depth 1 (a kernel, stride and dilation of 1, no padding there), a 1-D
// one depth and height 1. Column matrix rows are (c, kd, kh, kw), columns are
// output positions (od, oh, ow).
struct ConvGeometry {
  // Unit sizes along the axes a problem of fewer dimensions does not have.
  int64_t channels = 0, depth = 1, height = 1, width = 1;
  int64_t kernel_d = 1, kernel_h = 1, kernel_w = 1;
  int64_t stride_d = 1, stride_h = 1, stride_w = 1;
  int64_t pad_d = 0, pad_h = 0, pad_w = 0;
  int64_t dilation_d = 1, dilation_h = 1, dilation_w = 1;
  int64_t out_d = 1, out_h = 1, out_w = 1;

  ConvGeometry() = default;
  // size, kernel, stride, padding, dilation: one entry per spatial dimension
  // (1 to 3), in (depth, height, width) order.
  ConvGeometry(int64_t channels, at::IntArrayRef size, at::IntArrayRef kernel, at::IntArrayRef stride,
               at::IntArrayRef padding, at::IntArrayRef dilation);

  int64_t taps() const { return kernel_d * kernel_h * kernel_w; }
  int64_t rows() const { return channels * taps(); }
  int64_t cols() const { return out_d * out_h * out_w; }
  int64_t pixels() const { return depth * height * width; }  // elements of one channel of one image
};

// A column tile: the columns of `nb` images (a batch slice), for output
// positions [l_begin, l_end) of each image and input channels
// [c_begin, c_end) with all their taps. Rows are ordered (c, kd, kh, kw) for
// channels-first (NC...) images and (kd, kh, kw, c) for channels-last ones
// (ColumnLayout::channels_last), c counted from c_begin.
struct ColumnTile {
  int64_t l_begin = 0, l_end = 0;
  int64_t c_begin = 0, c_end = 0;

  // The whole column matrix of images with `g`'s geometry.
  static ColumnTile whole(const ConvGeometry& g) { return {0, g.cols(), 0, g.channels}; }
  int64_t positions() const { return l_end - l_begin; }
  int64_t channels() const { return c_end - c_begin; }
};

// Where column-tile element (image b, row r, position l) lives in a buffer:
//   b * batch_stride + r * row_stride + (l - l_begin) * col_stride.
//  - the im2col / col2im ops use (N, rows, L):  batch_stride = rows * L, row_stride = L, col_stride = 1
//  - conv's channels-first tiles are (rows, nb * positions): batch_stride = positions,
//    row_stride = nb * positions, col_stride = 1 (one GEMM covers the tile's images)
//  - conv's channels-last tiles are (nb * positions, rows): batch_stride = positions * rows,
//    row_stride = 1, col_stride = rows
// channels_last: the images are channels-last (N, D, H, W, C) and the rows
// (kd, kh, kw, c); else channels-first images and (c, kd, kh, kw) rows.
struct ColumnLayout {
  int64_t batch_stride;
  int64_t row_stride;
  int64_t col_stride = 1;
  bool channels_last = false;
};

} // namespace myconv::detail
