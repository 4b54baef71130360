// The CPU backend's kernels, and what they share: the column kernels
// (im2col_cpu.cpp: im2col / col2im of column tiles, channels-first and
// channels-last) and the direct grouped kernels (grouped_cpu.cpp: depthwise
// and other grouped convolutions with a tiny per-group K). Images are 5-D
// (N, C, D, H, W); 1-D and 2-D problems come with unit leading spatial sizes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <optional>

#include "../conv_geometry.h"

// Functions marked MYCONV_VECTOR_CLONES are compiled for AVX-512, AVX2+FMA and
// baseline x86-64, and the loader picks the best the machine has (GCC
// function multiversioning).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MYCONV_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MYCONV_VECTOR_CLONES
#endif

namespace myconv::detail {

// Positions o in [0, count) whose tap o*stride + offset lands in [0, size):
// the half-open range [begin, end).
struct ValidRange {
  int64_t begin, end;
};

inline ValidRange valid_range(int64_t offset, int64_t stride, int64_t size, int64_t count) {
  // o*stride + offset >= 0    <=>  o >= ceil(-offset / stride)
  // o*stride + offset < size  <=>  o <  ceil((size - offset) / stride)
  const int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t end = size - offset <= 0 ? 0 : (size - offset + stride - 1) / stride;
  const int64_t clamped_end = std::clamp<int64_t>(end, 0, count);
  return {std::min(begin, clamped_end), clamped_end};
}

// Items per parallel task, so that each task has about as much work as ATen's
// own grain (32768 elements) and small problems stay on one thread.
inline int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kGrainElements = 32768;
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_item));
}

// The input row (depth, height) that tap (kd, kh) of output row (od, oh)
// reads, as an index id * height + ih, or -1 when it lies in the padding.
inline int64_t input_row(const ConvGeometry& g, int64_t od, int64_t oh, int64_t kd, int64_t kh) {
  const int64_t id = od * g.stride_d - g.pad_d + kd * g.dilation_d;
  const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
  return id >= 0 && id < g.depth && ih >= 0 && ih < g.height ? id * g.height + ih : -1;
}

// The kernels read and write (N, C, D, H, W) tensors contiguous, or
// channels-last contiguous when `channels_last`.
inline void check_layout(const at::Tensor& t, bool channels_last) {
  TORCH_INTERNAL_ASSERT(
      t.dim() == 5 && t.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Contiguous),
      "myconv: expected a 5-D tensor contiguous in ", channels_last ? "channels-last" : "channels-first", " order");
}

// Column kernels (Backend::im2col / col2im).
void im2col_cpu(const at::Tensor& images, const ConvGeometry& g, const ColumnTile& tile, const at::Tensor& columns,
                ColumnLayout layout);
void col2im_cpu(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile, const ConvGeometry& g,
                const at::Tensor& images, bool accumulate);

// Direct grouped kernels (Backend::grouped_*).
void grouped_forward_cpu(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                         const ConvGeometry& g, int64_t groups, bool channels_last, const at::Tensor& out);
void grouped_grad_input_cpu(const at::Tensor& gy, const at::Tensor& w, const ConvGeometry& g, int64_t groups,
                            bool channels_last, const at::Tensor& gi);
void grouped_grad_weight_cpu(const at::Tensor& gy, const at::Tensor& x, const ConvGeometry& g, int64_t groups,
                             bool channels_last, const at::Tensor& gw);

} // namespace myconv::detail

#define MYCONV_CPU_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)
