// The CUDA direct grouped launches (Backend::grouped_forward, grouped_grad_input,
// grouped_grad_weight): everything but the launch itself, shared by the device
// (cuda/grouped.cu) and the host tests (tests/cpp/test_cuda_grouped.cpp).
//
// Each launch plan checks the tensors, builds the kernels' plain-integer
// geometry, counts the elements, picks the dtype's memory access and hands
// (Work, Access, elements, geometry, pointers) to a Launcher:
//   launcher.elements<Work, Access>(total, geom, a, b, c, out)
//     a grid-stride loop over `total` elements, one per thread
//     (Work::run(geom, i, io));
//   launcher.reductions<Work, Access>(total, geom, a, b, c, out)
//     a block-stride loop over `total` items, one per block of kLanes
//     lanes: each lane's Work::partial(geom, r, lane, kLanes, io), the lanes'
//     fixed tree (lane_tree_step) down to Work::outputs(geom) sums, and for
//     each j below that, io.store(Work::target(geom, r, j), sums[j]) unless
//     the target is -1.
// The device's launcher runs __global__ kernels on PyTorch's current stream;
// the host tests' runs the same loops over every (block, thread) of the same
// grid.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/MemoryFormat.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <optional>

#include "../csrc/conv_geometry.h"
#include "grouped_elements.h"

namespace myconv::cuda {

// grad_weight's lanes per position (GroupedGeom::run): channels-last, a
// 32-byte sector of consecutive output channels (8 float32, 16 float16 /
// bfloat16, 4 float64), so that a warp's loads of one position fill whole
// sectors; channels-first, 1 (consecutive lanes, consecutive positions).
inline int64_t grouped_grad_weight_run(bool channels_last, int64_t element_size) {
  return channels_last ? std::clamp<int64_t>(kSectorBytes / element_size, 1, kLanes) : 1;
}

// The kernels' geometry of a grouped convolution of `batch` images with
// `out_channels` output channels; `run`: grad_weight's lanes per position
// (grouped_grad_weight_run; 1 for the other launches).
inline GroupedGeom make_grouped_geom(const detail::ConvGeometry& g, int64_t batch, int64_t out_channels,
                                     int64_t groups, bool channels_last, int64_t run = 1) {
  TORCH_INTERNAL_ASSERT(run >= 1 && run <= kLanes && (run & (run - 1)) == 0, "myconv: grad_weight's run of ",
                        run, " lanes is not a power of two up to ", kLanes);
  GroupedGeom k{};
  k.run = run;
  k.batch = batch;
  k.channels = g.channels;
  k.out_channels = out_channels;
  k.cg = g.channels / groups;
  k.mg = out_channels / groups;
  k.depth = g.depth;
  k.height = g.height;
  k.width = g.width;
  k.out_d = g.out_d;
  k.out_h = g.out_h;
  k.out_w = g.out_w;
  k.kernel_d = g.kernel_d;
  k.kernel_h = g.kernel_h;
  k.kernel_w = g.kernel_w;
  k.stride_d = g.stride_d;
  k.stride_h = g.stride_h;
  k.stride_w = g.stride_w;
  k.pad_d = g.pad_d;
  k.pad_h = g.pad_h;
  k.pad_w = g.pad_w;
  k.dilation_d = g.dilation_d;
  k.dilation_h = g.dilation_h;
  k.dilation_w = g.dilation_w;
  k.channels_last = channels_last;
  return with_strides(k);
}

// The tensors a grouped kernel is given, as Backend::grouped_* promises them:
// (N, C, D, H, W) of the expected sizes, contiguous in the layout; the weight
// (C_out, C_in/groups, kD, kH, kW) contiguous; one dtype.
inline void check_grouped_tensor(const at::Tensor& t, std::initializer_list<int64_t> sizes, bool channels_last,
                                 at::ScalarType dtype, const char* what) {
  TORCH_INTERNAL_ASSERT(t.sizes() == at::IntArrayRef(sizes), "myconv: the direct grouped kernels' ", what,
                        " has sizes ", t.sizes(), ", expected ", at::IntArrayRef(sizes));
  TORCH_INTERNAL_ASSERT(
      t.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Contiguous),
      "myconv: the direct grouped kernels' ", what, " must be contiguous in ",
      channels_last ? "channels-last" : "channels-first", " order");
  TORCH_INTERNAL_ASSERT(t.scalar_type() == dtype, "myconv: the direct grouped kernels' ", what, " is ",
                        t.scalar_type(), ", expected ", dtype);
}

inline void check_grouped(const GroupedGeom& k, int64_t groups, const at::Tensor& w, at::ScalarType dtype) {
  TORCH_INTERNAL_ASSERT(groups >= 1 && k.cg * groups == k.channels && k.mg * groups == k.out_channels,
                        "myconv: the direct grouped kernels: ", k.channels, " input and ", k.out_channels,
                        " output channels in ", groups, " groups");
  check_grouped_tensor(w, {k.out_channels, k.cg, k.kernel_d, k.kernel_h, k.kernel_w}, false, dtype, "weight");
  TORCH_INTERNAL_ASSERT(k.stride_d >= 1 && k.stride_h >= 1 && k.stride_w >= 1 && k.dilation_d >= 1 &&
                        k.dilation_h >= 1 && k.dilation_w >= 1 && k.pad_d >= 0 && k.pad_h >= 0 && k.pad_w >= 0);
}

// Hands a launch to the launcher in the dtype's type: Work over `total`
// elements (kReduce: one block of lanes each), summing first * second
// products (GroupedProductAccess).
template <typename Work, bool kReduce, typename Launcher>
void launch_products(const Launcher& launcher, int64_t total, const GroupedGeom& k, const at::Tensor& first,
                     const at::Tensor& second, const at::Tensor* bias, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "myconv_grouped_cuda", [&] {
    using Access = GroupedProductAccess<scalar_t, at::opmath_type<scalar_t>>;
    const scalar_t* b = bias != nullptr ? bias->const_data_ptr<scalar_t>() : nullptr;
    if constexpr (kReduce) {
      launcher.template reductions<Work, Access>(total, k, first.const_data_ptr<scalar_t>(),
                                                 second.const_data_ptr<scalar_t>(), b, out.mutable_data_ptr<scalar_t>());
    } else {
      launcher.template elements<Work, Access>(total, k, first.const_data_ptr<scalar_t>(),
                                               second.const_data_ptr<scalar_t>(), b, out.mutable_data_ptr<scalar_t>());
    }
  });
}

// out <- bias + conv(x, w); x (N, C_in, D, H, W), out (N, C_out, OD, OH, OW).
template <typename Launcher>
void launch_grouped_forward(const Launcher& launcher, const at::Tensor& x, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, const detail::ConvGeometry& g, int64_t groups,
                            bool channels_last, const at::Tensor& out) {
  const GroupedGeom k = make_grouped_geom(g, x.size(0), w.size(0), groups, channels_last);
  const at::ScalarType dtype = x.scalar_type();
  check_grouped(k, groups, w, dtype);
  check_grouped_tensor(x, {k.batch, k.channels, k.depth, k.height, k.width}, channels_last, dtype, "input");
  check_grouped_tensor(out, {k.batch, k.out_channels, k.out_d, k.out_h, k.out_w}, channels_last, dtype, "output");
  if (bias) {
    check_grouped_tensor(*bias, {k.out_channels}, false, dtype, "bias");
  }
  const int64_t total = grouped_forward_elements(k);
  if (total == 0) {
    return;
  }
  launch_products<GroupedForwardWork, false>(launcher, total, k, w, x, bias ? &*bias : nullptr, out);
}

// gi <- the input gradient of conv(., w) for grad_output gy; gy (N, C_out,
// OD, OH, OW), gi (N, C_in, D, H, W), overwritten (zero where no tap reads).
template <typename Launcher>
void launch_grouped_grad_input(const Launcher& launcher, const at::Tensor& gy, const at::Tensor& w,
                               const detail::ConvGeometry& g, int64_t groups, bool channels_last,
                               const at::Tensor& gi) {
  const GroupedGeom k = make_grouped_geom(g, gi.size(0), w.size(0), groups, channels_last);
  const at::ScalarType dtype = gy.scalar_type();
  check_grouped(k, groups, w, dtype);
  check_grouped_tensor(gy, {k.batch, k.out_channels, k.out_d, k.out_h, k.out_w}, channels_last, dtype,
                       "grad_output");
  check_grouped_tensor(gi, {k.batch, k.channels, k.depth, k.height, k.width}, channels_last, dtype, "grad_input");
  const int64_t total = grouped_grad_input_elements(k);
  if (total == 0) {
    return;
  }
  launch_products<GroupedGradInputWork, false>(launcher, total, k, w, gy, nullptr, gi);
}

// gw <- the weight gradient for grad_output gy and input x; gw (C_out,
// C_in/groups, kD, kH, kW) contiguous, overwritten (zero for an empty batch).
template <typename Launcher>
void launch_grouped_grad_weight(const Launcher& launcher, const at::Tensor& gy, const at::Tensor& x,
                                const detail::ConvGeometry& g, int64_t groups, bool channels_last,
                                const at::Tensor& gw) {
  const GroupedGeom k = make_grouped_geom(g, x.size(0), gw.size(0), groups, channels_last,
                                          grouped_grad_weight_run(channels_last, gw.element_size()));
  const at::ScalarType dtype = gy.scalar_type();
  check_grouped(k, groups, gw, dtype);
  check_grouped_tensor(gy, {k.batch, k.out_channels, k.out_d, k.out_h, k.out_w}, channels_last, dtype,
                       "grad_output");
  check_grouped_tensor(x, {k.batch, k.channels, k.depth, k.height, k.width}, channels_last, dtype, "input");
  const int64_t elements = grouped_grad_weight_elements(k), slices = grouped_grad_weight_slices(k);
  const int64_t items = grouped_grad_weight_items(k);
  if (elements == 0) {
    return;
  }
  if (slices == 1) {  // a block per weight element (or run of them), its totals stored in grad_weight
    launch_products<GroupedGradWeightWork, true>(launcher, items, k, gy, x, nullptr, gw);
    return;
  }
  // a block per (element or run of them, slice), its totals stored in acc_t (double for float64, float
  // otherwise); then each element's slices added in order (items < 2 * kSliceTargetBlocks, so at most
  // 8192 * run accumulators: channels-first 32 kB in float32, 64 kB in float64; channels-last 256 kB for
  // float32's runs of 8 and float64's of 4, 512 kB for float16's / bfloat16's of 16)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gw.scalar_type(), "myconv_grouped_grad_weight_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor sums = at::empty({elements * slices}, gw.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    launcher.template reductions<GroupedGradWeightWork, GroupedSliceAccess<scalar_t, acc_t>>(
        items, k, gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), nullptr,
        sums.mutable_data_ptr<acc_t>());
    launcher.template elements<GroupedSliceSumWork, GroupedSliceSumAccess<scalar_t, acc_t>>(
        elements, k, sums.const_data_ptr<acc_t>(), nullptr, nullptr, gw.mutable_data_ptr<scalar_t>());
  });
}

// The device's launches (cuda/grouped.cu), on PyTorch's current stream of the
// current device.
void grouped_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                     const detail::ConvGeometry& g, int64_t groups, bool channels_last, const at::Tensor& out);
void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w, const detail::ConvGeometry& g, int64_t groups,
                        bool channels_last, const at::Tensor& gi);
void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x, const detail::ConvGeometry& g,
                         int64_t groups, bool channels_last, const at::Tensor& gw);

} // namespace myconv::cuda
