// The one place that validates arguments and computes output shapes, for
// convolutions of 1, 2 and 3 spatial dimensions.
//
// Every backend kernel (CPU, CUDA) and the Meta kernel call these functions, so
// a bad argument produces the same RuntimeError (c10::Error) everywhere and the
// shapes FakeTensor / torch.compile see are the shapes the kernels produce.
// Sizes are c10::SymInt so the Meta kernel works under dynamic shapes; the real
// kernels read concrete values back with ConvGeometry (conv_geometry.h).
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

#include "conv_geometry.h"

namespace myconv::detail {

// The operator names convolutions report in messages, by spatial dimensions.
const char* conv_op_name(int64_t dims);            // "myconv::conv2d"
const char* conv_backward_op_name(int64_t dims);   // "myconv::conv2d_backward"
const char* conv_transpose_op_name(int64_t dims);  // "myconv::conv_transpose2d"

// Convolution argument check for `dims` spatial dimensions (F.conv1d / 2d /
// 3d semantics); returns the output size ((dims + 2)-D, or (dims + 1)-D for an
// unbatched input). `op` names the operator in error messages.
std::vector<c10::SymInt> check_conv(
    const char* op,
    int64_t dims,
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups);

// The backward's check: the forward's, plus grad_output must have the
// output's shape, dtype and device.
void check_conv_backward(
    int64_t dims,
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups);

// Transposed convolution argument check (F.conv_transposeNd semantics; weight
// (in_channels, out_channels/groups, *kernel)); returns the output size: per
// axis (in - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1.
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
    int64_t groups);

// padding='same' / 'valid' (the convNd.padding overloads). 'same' keeps the
// spatial size: per axis dilation*(kernel-1) zeros in all, half before, half
// after, the odd one after, as PyTorch does.
struct StringPadding {
  std::vector<int64_t> both;   // symmetric padding given to the convolution
  std::vector<int64_t> extra;  // additional zeros at the end of each axis
  // The extra zeros as at::constant_pad_nd's pads (last axis first, (before,
  // after) each); empty when there are none.
  std::vector<int64_t> end_pads() const;
};
StringPadding string_padding(const char* op, c10::string_view padding, at::IntArrayRef kernel,
                             at::IntArrayRef stride, at::IntArrayRef dilation);

// Layout of the output of a convolution of `dims` spatial dimensions,
// mirroring F.convNd: for a batched 2-D (3-D) input, channels_last
// (channels_last_3d) when the input or the weight is; contiguous otherwise.
at::MemoryFormat conv_memory_format(int64_t dims, const at::Tensor& input, const at::Tensor& weight);

// The channels-last memory format of a tensor of `dim` dimensions
// (ChannelsLast for 4, ChannelsLast3d for 5).
at::MemoryFormat channels_last_format(int64_t dim);

// im2col / col2im argument checks (F.unfold / F.fold semantics, 2-D); return
// the output size.
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
