// What a device supplies to the convolution composition (csrc/convolution.h):
// im2col, col2im, a batched GEMM, a way to run independent work items, and
// optionally direct kernels for grouped convolutions with a tiny per-group K;
// and its Tuning, which says how it wants the work cut and which fast paths
// it implements. CPU: csrc/cpu/cpu_backend.cpp; CUDA: cuda/cuda_backend.cpp.
//
// Tensors given to a backend are 5-D, (N, C, D, H, W): the composition views
// 1-D and 2-D problems as 3-D ones with unit leading spatial sizes, so every
// primitive is written once for all three.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "conv_geometry.h"

namespace myconv::detail {

// How a backend wants the convolution cut into work, and which fast paths it
// implements. The composition reads it once per call.
struct Tuning {
  // Work items that run at once, each with its own buffers (CPU: the thread
  // count; CUDA: 1, the kernels queue on one stream).
  int64_t workers = 1;
  // Target size in bytes of one column tile (CPU: from the L2 cache). 0: no
  // cache tiling; chunks of whole images (see chunk_bytes).
  int64_t tile_bytes = 0;
  // Without cache tiling: a chunk of whole images takes at most chunk_bytes
  // of float32 workspace (other dtypes: as many elements, chunk_cap in
  // conv_plan.h, so that every dtype takes the same chunks and its memory
  // stays in proportion to its tensors'), as long as it keeps
  // chunk_min_positions output positions
  // for its GEMMs (a chunk of a few images already fills a GPU's GEMM; the
  // whole batch at once only multiplies the memory). 0: chunks as large as
  // the workspace limit allows. Always within the workspace limit (but for a
  // chunk of one image). Passes that build no columns: see view_chunks.
  int64_t chunk_bytes = 0;
  int64_t chunk_min_positions = 0;
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
  // straight into output rows).
  bool gemm_on_views = false;
  // With gemm_on_views, a 1x1 / stride 1 / no padding channels-first tile of
  // several whole images needs no columns either: the forward and grad_input
  // run one strided-batched GEMM per group over the tile's images, the weight
  // broadcast (batch stride 0). grad_weight, whose images all add into one
  // matrix, writes each image's product and sums them with
  // grad_weight_image_products, where those products take less memory than
  // the columns and gathered grad_output (one worker; float32 GEMM results
  // for float16 / bfloat16: pass_plan.cpp, start), and keeps columns
  // otherwise. For
  // backends whose GEMM is one launch per call (CUDA); the CPU joins images
  // only when they are too small for a GEMM of their own.
  bool image_batched_views = false;
  bool grad_weight_image_products = false;
  // Channels-first chunks of whole images that go through columns run their
  // GEMMs image by image, as above (one strided-batched call per group over
  // the chunk's images, reading each image's columns in place), where an
  // image has at least this many output positions: the forward's GEMMs write
  // each image's result straight into the output (no scratch, no copy out of
  // it), grad_input's read each image's grad_output in place and write its
  // columns as a matrix of their own (col2im reads them so), grad_weight's
  // write each image's product and sum them (grad_weight_image_products,
  // where the products take no more bytes than the gathered grad_output
  // they replace). Positions count the convolution's output (a transposed
  // convolution's input), and each image's must be a multiple of 16 bytes
  // (every image's matrix where tensor-op kernels read it). Smaller images keep one GEMM over the chunk's positions side
  // by side: a GEMM over a few hundred positions wastes much of its last
  // column of thread-block tiles. 0: never.
  int64_t image_gemm_min_positions = 0;
  // Without cache tiling: a 1x1 pass that builds no columns (on views, as
  // above, or channels-last) takes chunks as large as its own buffers allow
  // (none, or grad_weight's image products) within chunk_bytes and the
  // workspace limit: usually the whole batch, one GEMM per group. Off: chunks
  // sized as if the pass built columns.
  bool view_chunks = false;
  // Channels-last columns for channels-last tensors.
  bool channels_last = false;
  // ... for grouped ones too. A channels-last group's columns are a launch of
  // their own, and the groups' GEMM results interleave in each output row:
  // a backend that wants one launch for all groups (CUDA) runs grouped
  // problems that take columns channels-first (the direct grouped kernels
  // take either layout).
  bool grouped_channels_last_columns = true;
  // Direct kernels (no columns) for grouped convolutions with a tiny
  // per-group K, such as depthwise ones.
  bool direct_grouped = false;
  // bmm may write float32 results for float16 / bfloat16 operands (its own
  // float32 sums, never rounded to the dtype): grad_weight then adds every
  // chunk straight into its float32 sum, so reduced precision is chunked like
  // float32 (tuning_for keeps chunk_bytes).
  bool float_gemm_results = false;
  // Rows of channels-first column buffers start on a multiple of this many
  // bytes (0: rows follow each other). CUDA: a 32-byte sector, so that a
  // warp's stores of a row fill whole sectors, and cuBLAS's tensor-op kernels
  // get the 16-byte-aligned leading dimension they need.
  int64_t column_row_bytes = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Tuning tuning(const at::Tensor& like) const = 0;

  // The name of the engine that runs an (m x k) @ (k x n) GEMM of this dtype
  // (shown in plans: myconv.explain, MYCONV_VERBOSE); a static string.
  virtual const char* gemm_engine(at::ScalarType dtype, int64_t m, int64_t n, int64_t k) const = 0;

  // columns <- im2col(images) for one tile. images: (B, C, D, H, W),
  // contiguous, or channels-last contiguous when layout.channels_last (which
  // also orders the rows (kd, kh, kw, c), see ColumnTile). Every tile entry is
  // written (zero where the window is in the padding).
  virtual void im2col(const at::Tensor& images, const ConvGeometry& g, const ColumnTile& tile,
                      const at::Tensor& columns, ColumnLayout layout) const = 0;

  // images (+)<- col2im(columns) for one tile: each image element of the
  // tile's channels gets the sum of the tile entries that came from it, added
  // in a fixed order (deterministic), in float for reduced precision. With
  // accumulate = false the tile's channels of the images are overwritten
  // (zero where no entry lands), else added to.
  virtual void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile,
                      const ConvGeometry& g, const at::Tensor& images, bool accumulate) const = 0;

  // c[i] = a[i] @ b[i] (+ c[i] when accumulate), for 3-D tensors of one dtype
  // (or, with Tuning::float_gemm_results, a float32 c for float16 / bfloat16
  // a and b). a and b may be strided views; c is contiguous unless
  // Tuning::gemm_on_views.
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
  // (N, C, D, H, W)-shaped, all contiguous, or all channels-last contiguous
  // when channels_last; w: (C_out, C_in/groups, kD, kH, kW) contiguous; out,
  // gi, gw are overwritten. Each result element is summed by one thread in a
  // fixed order.
  virtual void grouped_forward(const at::Tensor& x, const at::Tensor& w,
                               const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                               int64_t groups, bool channels_last, const at::Tensor& out) const;
  virtual void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w,
                                  const ConvGeometry& g, int64_t groups, bool channels_last,
                                  const at::Tensor& gi) const;
  virtual void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x,
                                   const ConvGeometry& g, int64_t groups, bool channels_last,
                                   const at::Tensor& gw) const;
};

// The backend of each device type, registered with its kernels
// (register_backend_kernels): plans can be made for a device without running
// there (myconv.explain with meta tensors). Null where none is registered.
void register_backend(c10::DeviceType device, const Backend& backend);
const Backend* find_backend(c10::DeviceType device);

} // namespace myconv::detail
