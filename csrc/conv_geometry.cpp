#include "conv_geometry.h"

#include <c10/util/Exception.h>

namespace myconv::detail {

ConvGeometry::ConvGeometry(int64_t channels, at::IntArrayRef size, at::IntArrayRef kernel,
                           at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation)
    : channels(channels) {
  const size_t dims = size.size();
  TORCH_INTERNAL_ASSERT(dims >= 1 && dims <= kMaxSpatialDims && kernel.size() == dims && stride.size() == dims &&
                        padding.size() == dims && dilation.size() == dims);
  // Fill (depth, height, width) from the back: missing leading axes keep unit sizes.
  int64_t* const sizes[] = {&depth, &height, &width};
  int64_t* const kernels[] = {&kernel_d, &kernel_h, &kernel_w};
  int64_t* const strides[] = {&stride_d, &stride_h, &stride_w};
  int64_t* const pads[] = {&pad_d, &pad_h, &pad_w};
  int64_t* const dilations[] = {&dilation_d, &dilation_h, &dilation_w};
  int64_t* const outs[] = {&out_d, &out_h, &out_w};
  for (size_t i = 0; i < dims; ++i) {
    const size_t a = kMaxSpatialDims - dims + i;
    *sizes[a] = size[i];
    *kernels[a] = kernel[i];
    *strides[a] = stride[i];
    *pads[a] = padding[i];
    *dilations[a] = dilation[i];
    *outs[a] = sliding_output_size(size[i], kernel[i], stride[i], padding[i], dilation[i]);
  }
}

} // namespace myconv::detail
