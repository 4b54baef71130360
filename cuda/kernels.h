// The CUDA im2col / col2im launches: everything but the launch itself, shared
// by the device (cuda/im2col.cu) and the host tests.
//
// launch_im2col / launch_col2im build the kernels' geometry from the
// composition's, count the elements, pick the index width (32-bit where the
// launch fits, see im2col_elements.h) and the dtype's memory access and hand
// (Work, Access, elements, geometry, input, output) to a Launcher: the
// device's launches a __global__ grid-stride loop on PyTorch's current
// stream; the host tests' runs the same grid-stride loops over every
// (block, thread) of the same grid.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include "../csrc/conv_geometry.h"
#include "im2col_elements.h"

namespace myconv::cuda {

// The kernels' plain-integer geometry of `batch` images' whole-image column
// matrix for the tile's channels (channels-first: all of them), of elements
// of element_size bytes (channels-last im2col over fewer channels than a
// 32-byte sector holds takes one element per column entry:
// Geom::entries_in_order).
inline Geom make_geom(const detail::ConvGeometry& g, detail::ColumnLayout layout, int64_t batch,
                      const detail::ColumnTile& tile, int64_t element_size) {
  Geom k;
  k.channels = layout.channels_last ? tile.channels() : g.channels;
  k.depth = g.depth, k.height = g.height, k.width = g.width;
  k.kernel_d = g.kernel_d, k.kernel_h = g.kernel_h, k.kernel_w = g.kernel_w;
  k.stride_d = g.stride_d, k.stride_h = g.stride_h, k.stride_w = g.stride_w;
  k.pad_d = g.pad_d, k.pad_h = g.pad_h, k.pad_w = g.pad_w;
  k.dilation_d = g.dilation_d, k.dilation_h = g.dilation_h, k.dilation_w = g.dilation_w;
  k.out_d = g.out_d, k.out_h = g.out_h, k.out_w = g.out_w;
  k.batch_stride = layout.batch_stride, k.row_stride = layout.row_stride, k.col_stride = layout.col_stride;
  k.batch = batch;
  k.channels_last = layout.channels_last;
  k.image_channels = g.channels;
  k.channel0 = layout.channels_last ? tile.c_begin : 0;
  k.entries_in_order = layout.channels_last && k.channels * element_size < kSectorBytes;
  return with_divisors(k);
}
// channels-first: the whole image's channels
inline Geom make_geom(const detail::ConvGeometry& g, detail::ColumnLayout layout, int64_t batch) {
  TORCH_INTERNAL_ASSERT(!layout.channels_last);
  return make_geom(g, layout, batch, detail::ColumnTile::whole(g), /*element_size=*/1);
}

#define MYCONV_CUDA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// columns <- im2col(images) for the tile's channels (channels-first: all of
// them) and all positions; images: (B, C, D, H, W), contiguous, or
// channels-last contiguous with a channels-last layout.
template <typename Launcher>
void launch_im2col(const Launcher& launcher, const at::Tensor& images, const detail::ConvGeometry& g,
                   const detail::ColumnTile& tile, const at::Tensor& columns, detail::ColumnLayout layout) {
  const Geom geom = make_geom(g, layout, images.size(0), tile, images.element_size());
  const int64_t total = im2col_elements(geom);
  if (total == 0) {
    return;
  }
  const bool narrow = narrow_launch(geom, total);
  MYCONV_CUDA_DISPATCH(images.scalar_type(), "myconv_im2col_cuda", [&] {
    using Access = Im2colAccess<scalar_t>;
    const scalar_t* in = images.const_data_ptr<scalar_t>();
    scalar_t* out = columns.mutable_data_ptr<scalar_t>();
    narrow ? launcher.template run<Im2colWork<uint32_t>, Access>(total, geom, in, out)
           : launcher.template run<Im2colWork<int64_t>, Access>(total, geom, in, out);
  });
}

// images <- col2im(columns) for the tile's channels (the other channels are
// left alone); a gather: each image element sums its own column entries in
// (kd, kh, kw) order, in float for reduced precision. No atomics, so the
// result is bitwise reproducible.
template <typename Launcher>
void launch_col2im(const Launcher& launcher, const at::Tensor& columns, detail::ColumnLayout layout,
                   const detail::ColumnTile& tile, const detail::ConvGeometry& g, const at::Tensor& images) {
  const Geom geom = make_geom(g, layout, images.size(0), tile, images.element_size());
  const int64_t total = col2im_elements(geom);
  if (total == 0) {
    return;
  }
  const bool narrow = narrow_launch(geom, total);
  MYCONV_CUDA_DISPATCH(images.scalar_type(), "myconv_col2im_cuda", [&] {
    using Access = Col2imAccess<scalar_t, at::opmath_type<scalar_t>>;
    const scalar_t* in = columns.const_data_ptr<scalar_t>();
    scalar_t* out = images.mutable_data_ptr<scalar_t>();
    narrow ? launcher.template run<Col2imWork<uint32_t>, Access>(total, geom, in, out)
           : launcher.template run<Col2imWork<int64_t>, Access>(total, geom, in, out);
  });
}

// The device's launches (cuda/im2col.cu), on PyTorch's current stream of the
// current device.
void im2col(const at::Tensor& images, const detail::ConvGeometry& g, const detail::ColumnTile& tile,
            const at::Tensor& columns, detail::ColumnLayout layout);
void col2im(const at::Tensor& columns, detail::ColumnLayout layout, const detail::ColumnTile& tile,
            const detail::ConvGeometry& g, const at::Tensor& images);

} // namespace myconv::cuda
