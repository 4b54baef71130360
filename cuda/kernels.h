// Launchers of the CUDA im2col / col2im kernels (cuda/im2col.cu). Both run on
// PyTorch's current stream of the current device.
#pragma once

#include <ATen/core/Tensor.h>

#include "../csrc/conv_shape.h"

namespace myconv::cuda {

// columns <- im2col(images); images: contiguous (B, C, H, W) on the device.
void im2col(const at::Tensor& images, const detail::PlaneGeometry& g, const at::Tensor& columns,
            detail::ColumnLayout layout);

// images <- col2im(columns); a gather: each image element sums its own column
// entries in (kh, kw) order, in float for reduced precision. No atomics, so
// the result is bitwise reproducible.
void col2im(const at::Tensor& columns, detail::ColumnLayout layout,
            const detail::PlaneGeometry& g, const at::Tensor& images);

} // namespace myconv::cuda
