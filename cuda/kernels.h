// The CUDA im2col / col2im launches: everything but the launch itself, shared
// by the device (cuda/im2col.cu) and the host tests.
//
// launch_im2col / launch_col2im build the kernels' geometry from the
// composition's, count the elements, pick the dtype's memory access and hand
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

// The kernels' plain-integer geometry of a whole-image column matrix.
inline Geom make_geom(const detail::ConvGeometry& g, detail::ColumnLayout layout) {
  return {g.channels,   g.depth,      g.height,  g.width,  g.kernel_d, g.kernel_h,          g.kernel_w,
          g.stride_d,   g.stride_h,   g.stride_w, g.pad_d, g.pad_h,    g.pad_w,             g.dilation_d,
          g.dilation_h, g.dilation_w, g.out_d,   g.out_h,  g.out_w,    layout.batch_stride, layout.row_stride};
}

#define MYCONV_CUDA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// columns <- im2col(images); images: contiguous (B, C, D, H, W).
template <typename Launcher>
void launch_im2col(const Launcher& launcher, const at::Tensor& images, const detail::ConvGeometry& g,
                   const at::Tensor& columns, detail::ColumnLayout layout) {
  const Geom geom = make_geom(g, layout);
  const int64_t total = im2col_elements(geom, images.size(0));
  if (total == 0) {
    return;
  }
  MYCONV_CUDA_DISPATCH(images.scalar_type(), "myconv_im2col_cuda", [&] {
    launcher.template run<Im2colWork, Im2colAccess<scalar_t>>(total, geom, images.const_data_ptr<scalar_t>(),
                                                              columns.mutable_data_ptr<scalar_t>());
  });
}

// images <- col2im(columns); a gather: each image element sums its own column
// entries in (kd, kh, kw) order, in float for reduced precision. No atomics,
// so the result is bitwise reproducible.
template <typename Launcher>
void launch_col2im(const Launcher& launcher, const at::Tensor& columns, detail::ColumnLayout layout,
                   const detail::ConvGeometry& g, const at::Tensor& images) {
  const Geom geom = make_geom(g, layout);
  const int64_t total = col2im_elements(geom, images.size(0));
  if (total == 0) {
    return;
  }
  MYCONV_CUDA_DISPATCH(images.scalar_type(), "myconv_col2im_cuda", [&] {
    using Access = Col2imAccess<scalar_t, at::opmath_type<scalar_t>>;
    launcher.template run<Col2imWork, Access>(total, geom, columns.const_data_ptr<scalar_t>(),
                                              images.mutable_data_ptr<scalar_t>());
  });
}

// The device's launches (cuda/im2col.cu), on PyTorch's current stream of the
// current device.
void im2col(const at::Tensor& images, const detail::ConvGeometry& g, const at::Tensor& columns,
            detail::ColumnLayout layout);
void col2im(const at::Tensor& columns, detail::ColumnLayout layout, const detail::ConvGeometry& g,
            const at::Tensor& images);

} // namespace myconv::cuda
