// Convolution composed once from a few device primitives.
//
// A backend (CPU in csrc/cpu/, CUDA in cuda/) supplies im2col, col2im, a
// batched GEMM and a way to run independent work items; conv2d forward and
// backward and the im2col / col2im ops are written once in conv2d_impl.cpp on
// top of them. What differs between devices is stated by the backend's
// Tuning (tile sizes, concurrency, which fast paths it implements); the
// composition makes every path choice in one place (conv2d_impl.cpp,
// choose_path / plan_tiles). The backends register these compositions under
// their dispatch key with register_backend_kernels().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <tuple>

#include "conv_shape.h"

namespace myconv::detail {

// How a backend wants the convolution cut into work, and which fast paths it
// implements. The composition reads it once per call.
struct Tuning {
  // Work items that run at once, each with its own buffers (CPU: the thread
  // count; CUDA: 1, the kernels queue on one stream).
  int64_t workers = 1;
  // Target size in bytes of one column tile (CPU: from the L2 cache). 0: no
  // cache tiling; chunks of whole images as large as the workspace limit allows.
  int64_t tile_bytes = 0;
  // Fewest output positions per tile (a GEMM needs some width to run fast).
  int64_t min_tile_positions = 1;
  // Tiles may hold part of an image's output positions.
  bool split_images = false;
  // Work is cut into items (tiles, channel blocks, partial sums) that the
  // backend runs concurrently. When false: one item per pass, all groups in
  // one batched GEMM.
  bool split_work = false;
  // bmm may read operands from views of the input / grad_output and write its
  // result into views of the output (1x1 convolutions without columns, GEMMs
  // straight into NCHW output rows).
  bool gemm_on_views = false;
  // Channels-last (NHWC) columns for channels_last tensors.
  bool channels_last = false;
  // Direct kernels (no columns) for grouped convolutions with a tiny
  // per-group K, such as depthwise ones.
  bool direct_grouped = false;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Tuning tuning(const at::Tensor& like) const = 0;

  // columns <- im2col(images) for one tile. images: (B, C, H, W), contiguous
  // in NCHW, or in channels_last when layout.channels_last (which also orders
  // the rows (kh, kw, c), see ColumnTile). Every tile entry is written (zero
  // where the window is in the padding).
  virtual void im2col(const at::Tensor& images, const PlaneGeometry& g, const ColumnTile& tile,
                      const at::Tensor& columns, ColumnLayout layout) const = 0;

  // images (+)<- col2im(columns) for one tile: each image element of the
  // tile's channels gets the sum of the tile entries that came from it, added
  // in a fixed order (deterministic), in float for reduced precision. With
  // accumulate = false the tile's channels of the images are overwritten
  // (zero where no entry lands), else added to.
  virtual void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile,
                      const PlaneGeometry& g, const at::Tensor& images, bool accumulate) const = 0;

  // c[i] = a[i] @ b[i] (+ c[i] when accumulate), for 3-D tensors of one dtype.
  // a and b may be strided views; c is contiguous unless Tuning::gemm_on_views.
  virtual void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                   bool accumulate) const = 0;

  // Runs fn(item, worker) for every item in [0, items), at most `workers` at
  // once; `worker` (in [0, workers)) names the buffers the item may use. Each
  // item's result must not depend on which worker runs it. Default: in order.
  virtual void run_items(int64_t items, int64_t workers,
                         const std::function<void(int64_t item, int64_t worker)>& fn) const {
    for (int64_t i = 0; i < items; ++i) {
      fn(i, 0);
    }
  }

  // Direct grouped convolution (Tuning::direct_grouped). x, gy, out, gi:
  // (N, C, H, W)-shaped, all NCHW-contiguous, or all channels_last-contiguous
  // when channels_last; w: (C_out, C_in/groups, kH, kW) contiguous; out, gi,
  // gw are overwritten. Each result element is summed by one thread in a
  // fixed order.
  virtual void grouped_forward(const at::Tensor& x, const at::Tensor& w,
                               const std::optional<at::Tensor>& bias, const PlaneGeometry& g,
                               int64_t groups, bool channels_last, const at::Tensor& out) const;
  virtual void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w,
                                  const PlaneGeometry& g, int64_t groups, bool channels_last,
                                  const at::Tensor& gi) const;
  virtual void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x,
                                   const PlaneGeometry& g, int64_t groups, bool channels_last,
                                   const at::Tensor& gw) const;
};

// The compositions. Each validates its arguments with conv_shape.h first.
at::Tensor conv2d(const Backend& backend, const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const Backend& backend, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask);

// The transposed convolution: conv2d's input-gradient pass (GEMM, col2im).
at::Tensor conv_transpose2d(const Backend& backend, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                            at::IntArrayRef dilation);

at::Tensor im2col(const Backend& backend, const at::Tensor& input, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride);

at::Tensor col2im(const Backend& backend, const at::Tensor& input, c10::SymIntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride);

// Images per chunk so that a chunk's workspace (bytes_per_image each) stays
// within the workspace limit and a chunk's cols_per_image * images columns fit
// the 32-bit dimensions of BLAS; at least 1, at most `batch`.
int64_t batch_chunk(int64_t batch, int64_t bytes_per_image, int64_t cols_per_image);

// The CPU tile size setting: 0 (default) sizes tiles from the L2 cache.
int64_t tile_bytes_setting();

// Workspace bytes the compositions hold in this thread: now, and at most
// since the start of the latest conv2d / conv2d_backward call.
struct WorkspaceStats {
  int64_t live = 0;
  int64_t peak = 0;
};
WorkspaceStats& workspace_stats();

// Registers the compositions, bound to the backend B, in a
// TORCH_LIBRARY_IMPL block: `register_backend_kernels<CpuBackend>(m);`.
template <class B>
struct BackendKernels {
  static const Backend& backend() {
    static const B instance;
    return instance;
  }
  static at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
    return detail::conv2d(backend(), input, weight, bias, stride, padding, dilation, groups);
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
      std::array<bool, 3> output_mask) {
    return detail::conv2d_backward(backend(), grad_output, input, weight, stride, padding,
                                   dilation, groups, output_mask);
  }
  static at::Tensor conv_transpose2d(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef output_padding,
                                     int64_t groups, at::IntArrayRef dilation) {
    return detail::conv_transpose2d(backend(), input, weight, bias, stride, padding, output_padding,
                                    groups, dilation);
  }
  static at::Tensor im2col(const at::Tensor& input, at::IntArrayRef kernel_size,
                           at::IntArrayRef dilation, at::IntArrayRef padding,
                           at::IntArrayRef stride) {
    return detail::im2col(backend(), input, kernel_size, dilation, padding, stride);
  }
  static at::Tensor col2im(const at::Tensor& input, c10::SymIntArrayRef output_size,
                           at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                           at::IntArrayRef padding, at::IntArrayRef stride) {
    return detail::col2im(backend(), input, output_size, kernel_size, dilation, padding, stride);
  }
};

template <class B>
void register_backend_kernels(torch::Library& m) {
  using K = BackendKernels<B>;
  m.impl("conv2d", TORCH_FN(K::conv2d));
  m.impl("conv2d_backward", TORCH_FN(K::conv2d_backward));
  m.impl("conv_transpose2d", TORCH_FN(K::conv_transpose2d));
  m.impl("im2col", TORCH_FN(K::im2col));
  m.impl("col2im", TORCH_FN(K::col2im));
}

} // namespace myconv::detail
