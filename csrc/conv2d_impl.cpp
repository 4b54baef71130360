// conv2d forward / backward and the im2col / col2im ops, composed once from a
// Backend's im2col, col2im, bmm and run_items. Nothing here depends on the
// device: the tensor bookkeeping uses ATen tensor methods, the heavy lifting
// goes through the backend, and every choice of path is made here.
//
// The matrices. With L output positions per image, groups G, M = C_out/G
// output channels and K = C_in/G*kH*kW column rows per group, a *tile* holds
// some output positions (part of one image, or a run of whole images) and its
// columns are one (K x P) matrix per group (channels-first, NCHW) or one
// (P x K) matrix (channels-last, NHWC: rows ordered (kh, kw, c), so that
// im2col copies contiguous channel runs and the GEMM writes NHWC rows):
//
//   forward      out[g]  = W[g] @ cols[g]          NCHW   (M x P)
//                out[g]  = cols[g] @ W[g]^T        NHWC   (P x M)
//   grad_input   cols[g] = W[g]^T @ gy[g];  gI += col2im(cols)
//   grad_weight  gW[g]  += gy[g] @ cols[g]^T       (im2col recomputed, never stored)
//
// Paths, chosen per call (choose_layout, use_direct_grouped, plan_tiles):
//  * columns: im2col into a tile-sized buffer, then GEMM. CPU tiles are sized
//    to the L2 cache so the GEMM reads columns that im2col has just written;
//    CUDA tiles are whole images, as many as the workspace limit allows.
//  * 1x1, stride 1, no padding: the input already is the column matrix; the
//    GEMM reads it (and writes grad_input) in place, no im2col / col2im.
//  * channels_last input: NHWC columns and output (backends that can).
//  * grouped with a tiny per-group K (depthwise): the backend's direct
//    kernels instead of G tiny GEMMs (backends that have them).
//
// Work items, and why results do not depend on the thread count:
//  * forward: one item per tile; every output element is one GEMM dot product.
//  * grad_input: one item per (sequence of tiles that write the same images,
//    block of input channels); an item adds its tiles in order.
//  * grad_weight: one item per (chunk of tiles, block of columns): each item
//    sums its chunk into its own partial matrix; the partials are added in
//    chunk order.
// The tiles, blocks and chunks depend on the problem, the dtype, the cache
// size and the workspace limit, never on the number of threads; a worker only
// lends its buffers.
#include "conv2d_impl.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "myconv.h"

namespace myconv {
namespace {

constexpr int64_t kDefaultWorkspaceBytes = int64_t{256} << 20;

int64_t workspace_limit_from_env() {
  const char* env = std::getenv("MYCONV_WORKSPACE_MB");
  if (env == nullptr || *env == '\0') {
    return kDefaultWorkspaceBytes;
  }
  char* end = nullptr;
  const double mb = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(mb > 0) || mb > 1e12) {
    TORCH_WARN("myconv: ignoring MYCONV_WORKSPACE_MB='", env,
               "' (expected a positive number of MiB); using the default of 256 MiB");
    return kDefaultWorkspaceBytes;
  }
  return static_cast<int64_t>(mb * (1 << 20));
}

std::atomic<int64_t>& workspace_limit() {
  static std::atomic<int64_t> limit{workspace_limit_from_env()};
  return limit;
}

std::atomic<int64_t>& tile_bytes_value() {
  static std::atomic<int64_t> bytes{0};
  return bytes;
}

std::atomic<bool>& whole_image_plan_value() {
  static std::atomic<bool> on{false};
  return on;
}

} // namespace

int64_t workspace_limit_bytes() {
  return workspace_limit().load(std::memory_order_relaxed);
}

void set_workspace_limit_bytes(int64_t bytes) {
  TORCH_CHECK(bytes > 0, "myconv: expected a positive workspace limit, but got ", bytes, " bytes");
  workspace_limit().store(bytes, std::memory_order_relaxed);
}

int64_t tile_bytes() {
  return tile_bytes_value().load(std::memory_order_relaxed);
}

bool cpu_whole_image_plan() {
  return whole_image_plan_value().load(std::memory_order_relaxed);
}

void set_cpu_whole_image_plan(bool on) {
  whole_image_plan_value().store(on, std::memory_order_relaxed);
}

int64_t last_workspace_peak_bytes() {
  return detail::workspace_stats().peak;
}

void set_tile_bytes(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "myconv: expected a non-negative tile size (0: from the cache size), but got ",
              bytes, " bytes");
  tile_bytes_value().store(bytes, std::memory_order_relaxed);
}

namespace detail {

WorkspaceStats& workspace_stats() {
  thread_local WorkspaceStats stats;
  return stats;
}

int64_t tile_bytes_setting() {
  return myconv::tile_bytes();
}

int64_t batch_chunk(int64_t batch, int64_t bytes_per_image, int64_t cols_per_image) {
  if (batch <= 1 || bytes_per_image <= 0) {
    return std::max<int64_t>(batch, 1);
  }
  const int64_t by_memory = workspace_limit_bytes() / bytes_per_image;
  const int64_t by_blas = std::numeric_limits<int32_t>::max() / std::max<int64_t>(cols_per_image, 1);
  return std::clamp<int64_t>(std::min(by_memory, by_blas), 1, batch);
}

void Backend::grouped_forward(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                              const PlaneGeometry&, int64_t, bool, const at::Tensor&) const {
  TORCH_INTERNAL_ASSERT(false, "myconv: this backend has no direct grouped convolution");
}
void Backend::grouped_grad_input(const at::Tensor&, const at::Tensor&, const PlaneGeometry&,
                                 int64_t, bool, const at::Tensor&) const {
  TORCH_INTERNAL_ASSERT(false, "myconv: this backend has no direct grouped convolution");
}
void Backend::grouped_grad_weight(const at::Tensor&, const at::Tensor&, const PlaneGeometry&,
                                  int64_t, bool, const at::Tensor&) const {
  TORCH_INTERNAL_ASSERT(false, "myconv: this backend has no direct grouped convolution");
}

namespace {

// Work items a pass aims at when it may split its work: enough for the
// threads of a usual machine to share it. A constant, so that the way work is
// cut (and therefore every sum) never depends on the thread count.
constexpr int64_t kTargetItems = 16;
// Fewest column rows of a channel block (a GEMM needs some width to run fast).
constexpr int64_t kMinBlockRows = 64;
// Fewest channels of a channels-last block: each tap's run of channels is one
// copy in im2col / col2im.
constexpr int64_t kMinBlockChannels = 16;
// Fewest output positions a grad_weight chunk sums (its partial matrix must be
// worth writing and adding).
constexpr int64_t kMinChunkPositions = 256;
// Most memory the partial sums of grad_weight may take.
constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;
// Largest per-group K that goes to the direct grouped kernels.
constexpr int64_t kDirectMaxGroupRows = 32;

bool is_reduced_precision(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

enum class Layout { kChannelsFirst, kChannelsLast };

// The backend's tuning, adjusted for the dtype: reduced-precision images are
// never split into tiles, so that col2im sums each image element once, in
// float, and rounds once.
Tuning tuning_for(const Backend& backend, const at::Tensor& input) {
  Tuning t = backend.tuning(input);
  if (is_reduced_precision(input.scalar_type())) {
    t.split_images = false;
  }
  return t;
}

Layout choose_layout(const Tuning& t, const at::Tensor& input4d) {
  // NHWC columns are read and written through views (gemm_on_views).
  return t.channels_last && t.gemm_on_views && input4d.suggest_memory_format() == at::MemoryFormat::ChannelsLast
             ? Layout::kChannelsLast
             : Layout::kChannelsFirst;
}

// The conv2d problem in concrete sizes, for a batched (4-D) input.
struct ConvProblem {
  PlaneGeometry plane;
  int64_t batch, out_channels, groups;
  Layout layout;

  ConvProblem(const at::Tensor& input4d, const at::Tensor& weight, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, Layout layout)
      : ConvProblem(input4d.size(0), input4d.size(1), input4d.size(2), input4d.size(3), weight, stride,
                    padding, dilation, groups, layout) {}

  // The convolution whose input gradient is conv_transpose2d(input4d, weight):
  // its input is the transposed convolution's output (out_size, channels
  // weight.size(1) * groups), its output positions are input4d's pixels
  // (with output_padding the sliding window would fit one more row or column;
  // the extra positions do not exist).
  static ConvProblem transposed(const at::Tensor& input4d, const at::Tensor& weight,
                                at::IntArrayRef out_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t groups, Layout layout) {
    ConvProblem p(input4d.size(0), weight.size(1) * groups, out_size[2], out_size[3], weight, stride,
                  padding, dilation, groups, layout);
    p.plane.out_h = input4d.size(2);
    p.plane.out_w = input4d.size(3);
    return p;
  }

  ConvProblem(int64_t batch, int64_t channels, int64_t height, int64_t width, const at::Tensor& weight,
              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
              Layout layout)
      : plane(channels, height, width, {weight.size(2), weight.size(3)}, stride, padding, dilation),
        batch(batch), out_channels(weight.size(0)), groups(groups), layout(layout) {}

  int64_t L() const { return plane.cols(); }
  int64_t taps() const { return plane.kernel_h * plane.kernel_w; }
  int64_t group_channels() const { return plane.channels / groups; }        // C_in/G
  int64_t group_rows() const { return group_channels() * taps(); }          // K
  int64_t group_out_channels() const { return out_channels / groups; }      // M
  bool channels_last() const { return layout == Layout::kChannelsLast; }
  at::MemoryFormat memory_format() const {
    return channels_last() ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }
  // 1x1, stride 1, no padding (one output position per pixel): the input
  // already is the column matrix.
  bool pointwise() const {
    return plane.kernel_h == 1 && plane.kernel_w == 1 && plane.stride_h == 1 &&
           plane.stride_w == 1 && plane.pad_h == 0 && plane.pad_w == 0 &&
           plane.out_h == plane.height && plane.out_w == plane.width;
  }
};

bool use_direct_grouped(const Tuning& t, const ConvProblem& p) {
  return t.direct_grouped && p.groups > 1 && p.group_rows() <= kDirectMaxGroupRows;
}

// ---- tiles ------------------------------------------------------------------

struct Tile {
  int64_t n0, nb;          // images [n0, n0 + nb)
  int64_t l_begin, l_end;  // output positions of each
  int64_t positions() const { return nb * (l_end - l_begin); }
};

struct TilePlan {
  int64_t batch = 0, L = 0;
  int64_t tiles_per_image = 1;  // > 1: tiles of tile_positions cut each image
  int64_t tile_positions = 0;
  int64_t images_per_tile = 1;  // > 1 only when tiles_per_image == 1
  int64_t count = 0;

  Tile at(int64_t i) const {
    if (tiles_per_image > 1) {
      const int64_t j = i % tiles_per_image;
      return {i / tiles_per_image, 1, j * tile_positions, std::min(L, (j + 1) * tile_positions)};
    }
    const int64_t n0 = i * images_per_tile;
    return {n0, std::min(images_per_tile, batch - n0), 0, L};
  }
  int64_t max_positions() const { return tiles_per_image > 1 ? tile_positions : images_per_tile * L; }
  // Tiles that write into the same images, in order: the tiles of one image
  // when images are split, else each tile alone.
  int64_t sequences() const { return tiles_per_image > 1 ? batch : count; }
  std::pair<int64_t, int64_t> sequence(int64_t s) const {
    return tiles_per_image > 1 ? std::make_pair(s * tiles_per_image, (s + 1) * tiles_per_image)
                               : std::make_pair(s, s + 1);
  }
  // Every tile lies within one image.
  bool single_image_tiles() const { return images_per_tile == 1; }
};

// Positions per tile (CPU): as many as the backend's tile_bytes hold of all
// groups' columns, and at least min_tile_positions and twice a group's output
// channels (so that packing the weights for each GEMM costs little next to
// the GEMM), within half the workspace limit for one worker. An image with at
// least a quarter of that is a tile of its own (or cut into tiles): joining
// images costs a copy of the GEMM result (and of grad_output), worth it only
// for small images; joined tiles are of equal size. Backends without cache
// tiling (tile_bytes == 0) get chunks of whole images, as many as the
// workspace limit allows.
TilePlan plan_tiles(const ConvProblem& p, const Tuning& t, int64_t element_size) {
  TilePlan plan;
  plan.batch = p.batch;
  plan.L = p.L();
  // One worker's buffers per output position: columns, plus a GEMM result or
  // gathered grad_output of a multi-image tile.
  const int64_t bytes_per_position = (p.plane.rows() + p.out_channels) * element_size;
  if (t.tile_bytes <= 0) {
    plan.images_per_tile = batch_chunk(p.batch, bytes_per_position * plan.L, plan.L);
  } else {
    const int64_t by_cache = std::max({t.min_tile_positions, 2 * p.group_out_channels(),
                                      t.tile_bytes / std::max<int64_t>(1, p.plane.rows() * element_size)});
    // Half the limit: the rest is for partial sums, packed weights, other workers.
    const int64_t by_limit = std::max<int64_t>(1, workspace_limit_bytes() / 2 / bytes_per_position);
    int64_t target = std::max<int64_t>(1, std::min(by_cache, by_limit));
    // 1x1 / stride 1 / no padding, channels-first: the GEMMs read the images
    // in place (no columns to keep in cache), so whole images make the
    // largest GEMMs, unless images are too small to be views worth having.
    if (p.pointwise() && t.gemm_on_views && !p.channels_last() && plan.L >= t.min_tile_positions) {
      target = plan.L;
    }
    if (t.split_images && plan.L > target) {
      int64_t tile = ceil_div(plan.L, ceil_div(plan.L, target));
      tile = std::min(plan.L, ceil_div(tile, 8) * 8);  // whole vectors, except at the end
      plan.tile_positions = tile;
      plan.tiles_per_image = ceil_div(plan.L, tile);
    } else if (4 * plan.L < target) {
      // Joined images: at most target positions, tiles of equal size.
      const int64_t L = std::max<int64_t>(plan.L, 1);
      const int64_t by_blas = std::numeric_limits<int32_t>::max() / L;
      int64_t images = std::clamp<int64_t>(std::min(target / L, by_blas), 1, std::max<int64_t>(p.batch, 1));
      images = ceil_div(p.batch, ceil_div(p.batch, images));
      plan.images_per_tile = std::max<int64_t>(images, 1);
    }
  }
  if (plan.tiles_per_image == 1) {
    plan.tile_positions = plan.L;
  }
  plan.count = plan.tiles_per_image > 1 ? p.batch * plan.tiles_per_image
                                        : ceil_div(p.batch, plan.images_per_tile);
  return plan;
}

// ---- channel blocks -----------------------------------------------------------

// Groups [g0, g1) and, within each, input channels [c0, c1). A block with
// several groups covers all their channels.
struct Block {
  int64_t g0, g1, c0, c1;
  int64_t groups() const { return g1 - g0; }
  int64_t channels() const { return c1 - c0; }
  // The images' channels of the block (contiguous: several whole groups, or
  // part of one).
  int64_t first_channel(int64_t group_channels) const { return g0 * group_channels + c0; }
  int64_t last_channel(int64_t group_channels) const { return (g1 - 1) * group_channels + c1; }
};

struct Blocking {
  int64_t groups = 1, group_channels = 1, per_group = 1, block_channels = 1;
  bool all_groups = true;
  int64_t count() const { return all_groups ? 1 : groups * per_group; }
  Block at(int64_t i) const {
    if (all_groups) {
      return {0, groups, 0, group_channels};
    }
    const int64_t g = i / per_group, j = i % per_group;
    return {g, g + 1, j * block_channels, std::min(group_channels, (j + 1) * block_channels)};
  }
  bool splits_channels() const { return !all_groups && per_group > 1; }
};

// Blocks of input channels for `other_items` items of another kind (tile
// sequences, partial-sum chunks): one block per group, cut further while the
// pass has fewer than kTargetItems items and blocks keep kMinBlockRows rows
// (and, channels-last, runs of kMinBlockChannels channels for im2col to copy).
Blocking plan_blocks(const ConvProblem& p, const Tuning& t, int64_t other_items, bool split_channels = true) {
  Blocking b;
  b.groups = p.groups;
  b.group_channels = p.group_channels();
  b.block_channels = b.group_channels;
  if (!t.split_work) {
    return b;
  }
  b.all_groups = p.groups == 1;
  const int64_t wanted = ceil_div(kTargetItems, std::max<int64_t>(1, other_items * p.groups));
  const int64_t by_rows = std::max<int64_t>(1, p.group_rows() / kMinBlockRows);
  const int64_t by_runs = p.channels_last() ? std::max<int64_t>(1, b.group_channels / kMinBlockChannels)
                                            : b.group_channels;
  const int64_t n = std::clamp<int64_t>(wanted, 1, std::min(by_runs, by_rows));
  if (n > 1 && split_channels) {
    b.all_groups = false;
    b.block_channels = ceil_div(b.group_channels, n);
    b.per_group = ceil_div(b.group_channels, b.block_channels);
  }
  return b;
}

// ---- matrices of a tile --------------------------------------------------------

// (G, M, K) weight matrices, K in the layout's row order: (c, kh, kw) or (kh, kw, c).
at::Tensor weight_matrix(const ConvProblem& p, const at::Tensor& weight) {
  const at::Tensor w = p.channels_last() ? weight.permute({0, 2, 3, 1}).contiguous() : weight.contiguous();
  return w.view({p.groups, p.group_out_channels(), p.group_rows()});
}

// The weight columns of a block: (G', M, K') with K' = block channels * taps.
// Channels-first blocks are views; channels-last blocks of part of a group's
// channels are packed (their rows are not contiguous in (kh, kw, c) order).
at::Tensor block_weight(const ConvProblem& p, const at::Tensor& w, const Block& b) {
  const at::Tensor wg = w.narrow(0, b.g0, b.groups());
  if (!p.channels_last()) {
    return wg.narrow(2, b.c0 * p.taps(), b.channels() * p.taps());
  }
  if (b.channels() == p.group_channels()) {
    return wg;
  }
  return wg.view({b.groups(), p.group_out_channels(), p.taps(), p.group_channels()})
      .narrow(3, b.c0, b.channels())
      .contiguous()
      .view({b.groups(), p.group_out_channels(), p.taps() * b.channels()});
}

// An NHWC tensor (N, C, H, W) as its (N*H*W, C) matrix of rows.
at::Tensor rows_of(const at::Tensor& t) {
  return t.permute({0, 2, 3, 1}).view({-1, t.size(1)});
}

// The tile's part of an image-shaped tensor t with `per_group` channels per
// group, for groups [g0, g0 + ng) and channels [c0, c0 + nc) of each: the
// GEMM's view of it, (G', nc, P) channels-first (a tile within one image) or
// (G', P, nc) channels-last (any tile).
at::Tensor tile_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t per_group, int64_t g0,
                     int64_t ng, int64_t c0, int64_t nc) {
  const int64_t P = tile.positions();
  if (p.channels_last()) {
    return rows_of(t)
        .narrow(0, tile.n0 * p.L() + tile.l_begin, P)
        .view({P, p.groups, per_group})
        .permute({1, 0, 2})
        .narrow(0, g0, ng)
        .narrow(2, c0, nc);
  }
  TORCH_INTERNAL_ASSERT(tile.nb == 1);
  return t.select(0, tile.n0)
      .view({p.groups, per_group, p.L()})
      .narrow(0, g0, ng)
      .narrow(1, c0, nc)
      .narrow(2, tile.l_begin, P);
}

// The tile's part of an output-shaped tensor (out, grad_output) for groups [g0, g0 + ng).
at::Tensor output_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t g0, int64_t ng) {
  const int64_t M = p.group_out_channels();
  return tile_view(p, t, tile, M, g0, ng, 0, M);
}

// The tile's part of an input-shaped tensor (input, grad_input) of a 1x1 /
// stride 1 / no padding convolution, which is its column matrix.
at::Tensor pointwise_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, const Block& b) {
  return tile_view(p, t, tile, p.group_channels(), b.g0, b.groups(), b.c0, b.channels());
}

// Workspace bytes counted in the calling thread's statistics while the charge
// lives (the statistics let tests check the workspace limit).
class WorkspaceCharge {
 public:
  explicit WorkspaceCharge(int64_t bytes = 0) : bytes_(bytes) {
    WorkspaceStats& s = workspace_stats();
    s.live += bytes_;
    s.peak = std::max(s.peak, s.live);
  }
  ~WorkspaceCharge() { workspace_stats().live -= bytes_; }
  WorkspaceCharge(const WorkspaceCharge&) = delete;
  WorkspaceCharge& operator=(const WorkspaceCharge&) = delete;
  WorkspaceCharge(WorkspaceCharge&& other) noexcept : bytes_(std::exchange(other.bytes_, 0)) {}

 private:
  int64_t bytes_;
};

// A workspace buffer of `elements` elements, charged while it lives.
class Workspace {
 public:
  Workspace(int64_t elements, const at::TensorOptions& options)
      : tensor_(elements > 0 ? at::empty({elements}, options) : at::Tensor()),
        charge_(elements > 0 ? elements * tensor_.element_size() : 0) {}

  const at::Tensor& tensor() const { return tensor_; }

 private:
  at::Tensor tensor_;
  WorkspaceCharge charge_;
};

// Starts a call's workspace statistics (its peak starts at zero).
struct WorkspaceCall {
  WorkspaceCall() { workspace_stats().peak = workspace_stats().live; }
};

// Elements rounded up to whole 64-byte lines: every worker's buffer (and
// every tile of shared columns) starts at the same alignment, so the GEMM
// library sees the same operand alignment, and takes the same code path,
// whichever worker runs an item (measured: MKL's results differed in the last
// bits between buffers 36 bytes apart).
int64_t aligned_elements(int64_t elements, const at::TensorOptions& options) {
  const int64_t per_line = std::max<int64_t>(1, 64 / static_cast<int64_t>(options.dtype().itemsize()));
  return ceil_div(elements, per_line) * per_line;
}

// One flat buffer per worker, handed out as views.
class WorkerBuffers {
 public:
  WorkerBuffers(int64_t workers, int64_t elements, const at::TensorOptions& options)
      : per_worker_(aligned_elements(elements, options)), workspace_(workers * per_worker_, options),
        storage_(workspace_.tensor()) {}

  // A (shape)-view at `offset` elements into the worker's buffer.
  at::Tensor get(int64_t worker, int64_t offset, at::IntArrayRef shape) const {
    int64_t numel = 1;
    for (const int64_t s : shape) {
      numel *= s;
    }
    TORCH_INTERNAL_ASSERT(offset + numel <= per_worker_);
    return storage_.narrow(0, worker * per_worker_ + offset, numel).view(shape);
  }

 private:
  int64_t per_worker_;
  Workspace workspace_;
  at::Tensor storage_;
};

// Workers for `items` items that each need bytes_per_worker of buffers,
// within the workspace limit (less `reserved` bytes): at least one.
int64_t workers_for(const Tuning& t, int64_t items, int64_t bytes_per_worker, int64_t reserved = 0) {
  const int64_t room = std::max<int64_t>(0, workspace_limit_bytes() - reserved);
  const int64_t by_memory = bytes_per_worker > 0 ? room / bytes_per_worker : items;
  return std::clamp<int64_t>(std::min({t.workers, items, by_memory}), 1, std::max<int64_t>(items, 1));
}

// The column layout of a tile buffer for blocks of `channels` channels:
// channels-first (rows, P) with the tile's images side by side; channels-last
// (P, rows) per group.
ColumnLayout tile_layout(const ConvProblem& p, const Tile& tile, int64_t channels) {
  const int64_t per_image = tile.l_end - tile.l_begin;
  const int64_t rows = channels * p.taps();
  if (p.channels_last()) {
    return {per_image * rows, 1, rows, /*channels_last=*/true};
  }
  return {per_image, tile.positions(), 1, /*channels_last=*/false};
}

// Calls fn(tile, layout, columns) for the column tiles of a tile's block:
// channels-first, one tile for all the block's channels, columns (G', K', P);
// channels-last, whose rows are (kh, kw, c) per group, one per group, columns
// (P, K') each.
template <typename F>
void for_each_column_tile(const ConvProblem& p, const Tile& tile, const Block& b, const at::Tensor& columns,
                          const F& fn) {
  const int64_t cg = p.group_channels();
  if (!p.channels_last()) {
    const ColumnTile ct{tile.l_begin, tile.l_end, b.first_channel(cg), b.last_channel(cg)};
    fn(ct, tile_layout(p, tile, ct.channels()), columns);
    return;
  }
  for (int64_t g = b.g0; g < b.g1; ++g) {
    fn(ColumnTile{tile.l_begin, tile.l_end, g * cg + b.c0, g * cg + b.c1}, tile_layout(p, tile, b.channels()),
       columns.select(0, g - b.g0));
  }
}

// im2col of a tile for a block into `columns`.
void im2col_block(const Backend& backend, const ConvProblem& p, const at::Tensor& images,
                  const Tile& tile, const Block& b, const at::Tensor& columns) {
  const at::Tensor slice = images.narrow(0, tile.n0, tile.nb);
  for_each_column_tile(p, tile, b, columns, [&](const ColumnTile& ct, ColumnLayout layout, const at::Tensor& c) {
    backend.im2col(slice, p.plane, ct, c, layout);
  });
}

// images (+)<- col2im of a tile's block columns.
void col2im_block(const Backend& backend, const ConvProblem& p, const at::Tensor& columns,
                  const Tile& tile, const Block& b, const at::Tensor& images, bool accumulate) {
  const at::Tensor slice = images.narrow(0, tile.n0, tile.nb);
  for_each_column_tile(p, tile, b, columns, [&](const ColumnTile& ct, ColumnLayout layout, const at::Tensor& c) {
    backend.col2im(c, layout, ct, p.plane, slice, accumulate);
  });
}

// grad_output of a tile for groups [g0, g0 + ng): a view when the tile lies in
// one image or the layout is channels-last; else the tile's images are
// gathered side by side into `scratch` ((ng, M, P), channels-first).
at::Tensor grad_output_matrix(const ConvProblem& p, const at::Tensor& gy, const Tile& tile, int64_t g0,
                              int64_t ng, const std::function<at::Tensor()>& scratch) {
  if (p.channels_last() || tile.nb == 1) {
    return output_view(p, gy, tile, g0, ng);
  }
  const int64_t M = p.group_out_channels();
  at::Tensor m = scratch();
  m.view({ng, M, tile.nb, p.L()})
      .copy_(gy.narrow(0, tile.n0, tile.nb).view({tile.nb, p.groups, M, p.L()}).narrow(1, g0, ng).permute({1, 2, 0, 3}));
  return m;
}

// ---- the passes ------------------------------------------------------------------

// Forward. With enough tiles, one item per tile: im2col into the worker's
// buffer, then the GEMM while the columns are in its cache. With fewer than
// kTargetItems / 2 tiles (small batches of small images, deep layers), the
// output channels are cut into blocks of at least 2 * kMinBlockRows as well:
// the columns of a wave of tiles are built first (im2col parallel inside),
// then every (tile, block) GEMM is an item, so that each GEMM still runs on
// one thread.
void forward_columns(const Backend& backend, const Tuning& t, const ConvProblem& p, const at::Tensor& x,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     const at::Tensor& out) {
  const TilePlan plan = plan_tiles(p, t, x.element_size());
  const int64_t G = p.groups, M = p.group_out_channels(), K = p.group_rows(), L = p.L();
  const int64_t es = x.element_size();
  const bool cl = p.channels_last();
  const at::Tensor w = weight_matrix(p, weight);  // (G, M, K)
  const at::Tensor wt = w.transpose(1, 2);        // (G, K, M)
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->reshape({G, M}) : at::Tensor();
  const Block all{0, G, 0, p.group_channels()};

  // Where the GEMM can read the input and write the output in place.
  const bool in_place = t.gemm_on_views && (cl || plan.single_image_tiles());
  const bool columns_are_input = p.pointwise() && in_place;
  const bool output_in_place = in_place || (plan.single_image_tiles() && plan.tiles_per_image == 1);

  int64_t mblocks = 1;
  if (t.split_work && 2 * plan.count < kTargetItems) {
    mblocks = std::clamp<int64_t>(ceil_div(kTargetItems / 2, plan.count), 1,
                                  std::max<int64_t>(1, M / (2 * kMinBlockRows)));
  }
  const int64_t mb = ceil_div(M, mblocks);
  mblocks = ceil_div(M, mb);

  const int64_t P = plan.max_positions();
  const int64_t column_elems = columns_are_input ? 0 : G * K * P;  // one tile's columns
  const int64_t scratch_elems = output_in_place ? 0 : G * mb * P;  // one item's GEMM result

  // The GEMM of output channels [m0, m0 + rows) of every group for a tile.
  const auto gemm_item = [&](const Tile& tile, const at::Tensor& cols, int64_t m0, int64_t rows,
                             const at::Tensor& scratch) {
    const int64_t n = tile.positions();
    const at::Tensor dst = output_in_place ? output_view(p, out, tile, 0, G).narrow(cl ? 2 : 1, m0, rows)
                                           : scratch.view({G, rows, n});
    if (has_bias) {
      const at::Tensor bb = b.narrow(1, m0, rows);
      dst.copy_(cl ? bb.unsqueeze(1).expand_as(dst) : bb.unsqueeze(2).expand_as(dst));
    }
    if (cl) {
      backend.bmm(cols, wt.narrow(2, m0, rows), dst, /*accumulate=*/has_bias);
    } else {
      backend.bmm(w.narrow(1, m0, rows), cols, dst, /*accumulate=*/has_bias);
    }
    if (!output_in_place) {
      // (G, rows, nb, L) -> the images' (nb, G, rows, L)
      out.narrow(0, tile.n0, tile.nb)
          .view({tile.nb, G, M, L})
          .narrow(2, m0, rows)
          .copy_(dst.view({G, rows, tile.nb, L}).permute({2, 0, 1, 3}));
    }
  };
  const auto tile_columns = [&](const Tile& tile, const at::Tensor& buffer) {
    if (columns_are_input) {
      return pointwise_view(p, x, tile, all);
    }
    const int64_t n = tile.positions();
    const at::Tensor cols = buffer.view(cl ? at::IntArrayRef{G, n, K} : at::IntArrayRef{G, K, n});
    im2col_block(backend, p, x, tile, all, cols);
    return cols;
  };

  if (mblocks == 1) {
    const int64_t elems = column_elems + scratch_elems;
    const int64_t workers = workers_for(t, plan.count, aligned_elements(elems, x.options()) * es);
    const WorkerBuffers buffers(workers, elems, x.options());
    backend.run_items(plan.count, workers, [&](int64_t i, int64_t worker) {
      const Tile tile = plan.at(i);
      const int64_t n = tile.positions();
      const at::Tensor cols = tile_columns(tile, column_elems ? buffers.get(worker, 0, {G * K * n}) : at::Tensor());
      gemm_item(tile, cols, 0, M, scratch_elems ? buffers.get(worker, column_elems, {G * M * n}) : at::Tensor());
    });
    return;
  }

  // Waves of tiles whose columns take at most half the workspace.
  const int64_t column_stride = aligned_elements(column_elems, x.options());
  const int64_t wave = std::clamp<int64_t>(workspace_limit_bytes() / 2 / std::max<int64_t>(1, column_stride * es),
                                           1, plan.count);
  const Workspace shared_columns(wave * column_stride, x.options());
  const at::Tensor& shared = shared_columns.tensor();
  const int64_t workers =
      workers_for(t, wave * mblocks, aligned_elements(scratch_elems, x.options()) * es, wave * column_stride * es);
  const WorkerBuffers buffers(workers, scratch_elems, x.options());
  std::vector<at::Tensor> cols(wave);
  for (int64_t first = 0; first < plan.count; first += wave) {
    const int64_t count = std::min(wave, plan.count - first);
    for (int64_t j = 0; j < count; ++j) {
      const Tile tile = plan.at(first + j);
      cols[j] = tile_columns(
          tile, column_elems ? shared.narrow(0, j * column_stride, G * K * tile.positions()) : at::Tensor());
    }
    backend.run_items(count * mblocks, workers, [&](int64_t i, int64_t worker) {
      const Tile tile = plan.at(first + i / mblocks);
      const int64_t m0 = (i % mblocks) * mb, rows = std::min(mb, M - m0);
      gemm_item(tile, cols[i / mblocks], m0, rows,
                scratch_elems ? buffers.get(worker, 0, {G * rows * tile.positions()}) : at::Tensor());
    });
  }
}

void grad_input_columns(const Backend& backend, const Tuning& t, const ConvProblem& p,
                        const at::Tensor& gy, const at::Tensor& weight, const at::Tensor& gi) {
  const TilePlan plan = plan_tiles(p, t, gy.element_size());
  const int64_t M = p.group_out_channels();
  const bool cl = p.channels_last();
  const at::Tensor w = weight_matrix(p, weight);
  // Channels-last blocks of part of a group's channels need packed weight
  // columns: only when those fit a quarter of the workspace.
  const Blocking blocking =
      plan_blocks(p, t, plan.sequences(),
                  /*split_channels=*/!cl || weight.numel() * weight.element_size() <= workspace_limit_bytes() / 4);
  std::vector<at::Tensor> wblocks;  // views, or packed copies (channels-last blocks of part of a group)
  int64_t packed = 0;
  for (int64_t i = 0; i < blocking.count(); ++i) {
    wblocks.push_back(block_weight(p, w, blocking.at(i)));
    packed += wblocks.back().is_alias_of(w) ? 0 : wblocks.back().numel() * wblocks.back().element_size();
  }
  const WorkspaceCharge packed_charge(packed);

  // 1x1 / stride 1 / no padding: the GEMM writes grad_input itself.
  const bool in_place = t.gemm_on_views && (cl || plan.single_image_tiles());
  const bool columns_are_grad_input = p.pointwise() && in_place;
  const bool gather_gy = !cl && !plan.single_image_tiles();
  const int64_t P = plan.max_positions();
  const Block widest = blocking.at(0);
  const int64_t column_elems = columns_are_grad_input ? 0 : widest.groups() * widest.channels() * p.taps() * P;
  const int64_t elems = column_elems + (gather_gy ? widest.groups() * M * P : 0);
  const int64_t items = plan.sequences() * blocking.count();
  const int64_t workers = workers_for(t, items, aligned_elements(elems, gy.options()) * gy.element_size(), packed);
  const WorkerBuffers buffers(workers, elems, gy.options());

  backend.run_items(items, workers, [&](int64_t i, int64_t worker) {
    const Block b = blocking.at(i % blocking.count());
    const at::Tensor& wb = wblocks[i % blocking.count()];
    const int64_t ng = b.groups(), kb = b.channels() * p.taps();
    const auto [first, last] = plan.sequence(i / blocking.count());
    for (int64_t k = first; k < last; ++k) {
      const Tile tile = plan.at(k);
      const int64_t n = tile.positions();
      const at::Tensor gym = grad_output_matrix(p, gy, tile, b.g0, ng, [&] {
        return buffers.get(worker, column_elems, {ng, M, n});
      });
      if (columns_are_grad_input) {
        const at::Tensor dst = pointwise_view(p, gi, tile, b);
        cl ? backend.bmm(gym, wb, dst, false) : backend.bmm(wb.transpose(1, 2), gym, dst, false);
        continue;
      }
      const at::Tensor cols = buffers.get(worker, 0, cl ? at::IntArrayRef{ng, n, kb} : at::IntArrayRef{ng, kb, n});
      cl ? backend.bmm(gym, wb, cols, false) : backend.bmm(wb.transpose(1, 2), gym, cols, false);
      col2im_block(backend, p, cols, tile, b, gi, /*accumulate=*/k > first);
    }
  });
}

// Returns grad_weight as (C_out, C_in/G, kH, kW), laid out in the problem's
// layout (channels_last strides for channels-last problems).
at::Tensor grad_weight_columns(const Backend& backend, const Tuning& t, const ConvProblem& p,
                               const at::Tensor& x, const at::Tensor& gy) {
  const TilePlan plan = plan_tiles(p, t, x.element_size());
  const int64_t G = p.groups, M = p.group_out_channels(), K = p.group_rows(), cg = p.group_channels();
  const bool cl = p.channels_last();
  const bool reduced = is_reduced_precision(x.scalar_type());
  const at::TensorOptions acc_options = x.options().dtype(reduced ? at::kFloat : x.scalar_type());
  const int64_t acc_size = reduced ? 4 : x.element_size();

  // Chunks of tiles, each summed into its own partial matrix (the partials
  // are added in chunk order), while there are fewer than kTargetItems items,
  // the partials fit a quarter of the workspace and each chunk sums
  // kMinChunkPositions positions; then blocks of columns.
  // With one chunk, each block's item accumulates straight into grad_weight
  // (float32 partials for reduced precision; and channels-last blocks of part
  // of a group's channels, which are no matrix of grad_weight, only when
  // partials fit).
  const int64_t gw_bytes = G * M * K * acc_size;
  const int64_t room = std::min(workspace_limit_bytes() / 4, kMaxPartialBytes);
  int64_t chunks = 1;
  if (t.split_work) {
    // each chunk sums at least kMinChunkPositions positions: fewer, larger
    // partials where the weight is large next to the work (deep layers)
    const int64_t by_work = std::max<int64_t>(1, p.batch * p.L() / kMinChunkPositions);
    chunks = std::clamp<int64_t>(kTargetItems, 1,
                                 std::min({plan.count, std::max<int64_t>(1, room / gw_bytes), by_work}));
  }
  const Blocking blocking = plan_blocks(p, t, chunks, /*split_channels=*/!cl || gw_bytes <= room);
  const bool into_result = !reduced && chunks == 1 && !(cl && blocking.splits_channels());
  const at::Tensor gw = at::empty(cl ? at::IntArrayRef{G, M, p.taps(), cg} : at::IntArrayRef{G, M, K}, acc_options);
  // The (G', M, K') matrix of a block in grad_weight (into_result).
  const auto result_block = [&](const Block& b) {
    return cl ? gw.view({G, M, K}).narrow(0, b.g0, b.groups())
              : gw.narrow(0, b.g0, b.groups()).narrow(2, b.c0 * p.taps(), b.channels() * p.taps());
  };
  std::vector<Workspace> partial_space;
  std::vector<at::Tensor> partials;  // per block: (chunks, G', M, K')
  int64_t partial_bytes = 0;
  for (int64_t i = 0; i < blocking.count() && !into_result; ++i) {
    const Block b = blocking.at(i);
    const int64_t kb = b.channels() * p.taps();
    partial_space.emplace_back(chunks * b.groups() * M * kb, acc_options);
    partials.push_back(partial_space.back().tensor().view({chunks, b.groups(), M, kb}));
    partial_bytes += chunks * b.groups() * M * kb * acc_size;
  }

  const bool in_place = t.gemm_on_views && (cl || plan.single_image_tiles());
  const bool columns_are_input = p.pointwise() && in_place;
  const bool gather_gy = !cl && !plan.single_image_tiles();
  const int64_t P = plan.max_positions();
  const Block widest = blocking.at(0);
  const int64_t kb_max = widest.channels() * p.taps();
  const int64_t column_elems = columns_are_input ? 0 : widest.groups() * kb_max * P;
  const int64_t gy_elems = gather_gy ? widest.groups() * M * P : 0;
  const int64_t elems = column_elems + gy_elems + (reduced ? widest.groups() * M * kb_max : 0);
  const int64_t items = chunks * blocking.count();
  const int64_t workers =
      workers_for(t, items, aligned_elements(elems, x.options()) * x.element_size(), partial_bytes);
  const WorkerBuffers buffers(workers, elems, x.options());

  backend.run_items(items, workers, [&](int64_t i, int64_t worker) {
    const int64_t chunk = i / blocking.count();
    const Block b = blocking.at(i % blocking.count());
    const at::Tensor acc = into_result ? result_block(b) : partials[i % blocking.count()].select(0, chunk);  // (G', M, K')
    const int64_t ng = b.groups(), kb = b.channels() * p.taps();
    const int64_t first = chunk * plan.count / chunks, last = (chunk + 1) * plan.count / chunks;
    for (int64_t k = first; k < last; ++k) {
      const Tile tile = plan.at(k);
      const int64_t n = tile.positions();
      at::Tensor cols;
      if (columns_are_input) {
        cols = pointwise_view(p, x, tile, b);
      } else {
        cols = buffers.get(worker, 0, cl ? at::IntArrayRef{ng, n, kb} : at::IntArrayRef{ng, kb, n});
        im2col_block(backend, p, x, tile, b, cols);
      }
      const at::Tensor gym = grad_output_matrix(p, gy, tile, b.g0, ng, [&] {
        return buffers.get(worker, column_elems, {ng, M, n});
      });
      // (G', M, P) @ (G', P, K')
      const at::Tensor lhs = cl ? gym.transpose(1, 2) : gym;
      const at::Tensor rhs = cl ? cols : cols.transpose(1, 2);
      if (reduced) {
        const at::Tensor part = buffers.get(worker, column_elems + gy_elems, {ng, M, kb});
        backend.bmm(lhs, rhs, part, false);
        k == first ? acc.copy_(part) : acc.add_(part);
      } else {
        backend.bmm(lhs, rhs, acc, /*accumulate=*/k > first);
      }
    }
  });

  // Sum the partials in chunk order into each block's columns.
  for (int64_t i = 0; i < blocking.count() && !into_result; ++i) {
    const Block b = blocking.at(i);
    const at::Tensor dst =
        cl ? gw.narrow(0, b.g0, b.groups()).narrow(3, b.c0, b.channels())
           : gw.narrow(0, b.g0, b.groups()).narrow(2, b.c0 * p.taps(), b.channels() * p.taps());
    const auto part = [&](int64_t c) {
      const at::Tensor t = partials[i].select(0, c);
      return cl ? t.view({b.groups(), M, p.taps(), b.channels()}) : t;
    };
    dst.copy_(part(0));
    for (int64_t c = 1; c < chunks; ++c) {
      dst.add_(part(c));
    }
  }
  const int64_t kh = p.plane.kernel_h, kw = p.plane.kernel_w;
  const at::Tensor result = cl ? gw.view({p.out_channels, kh, kw, cg}).permute({0, 3, 1, 2})
                               : gw.view({p.out_channels, cg, kh, kw});
  return result.to(x.scalar_type());
}

} // namespace

at::Tensor conv2d(const Backend& backend, const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_conv2d("myconv::conv2d", input, weight, bias, stride, padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const WorkspaceCall workspace_call;
  const bool batched = input.dim() == 4;
  const at::Tensor x4 = batched ? input : input.unsqueeze(0);
  const Tuning t = tuning_for(backend, input);
  const ConvProblem p(x4, weight, stride, padding, dilation, groups, choose_layout(t, x4));
  const at::Tensor x = x4.contiguous(p.memory_format());

  at::Tensor out = at::empty({p.batch, p.out_channels, p.plane.out_h, p.plane.out_w},
                             x.options().memory_format(p.memory_format()));
  if (p.batch > 0 && out.numel() > 0) {
    const bool has_bias = bias.has_value() && bias->defined();
    if (use_direct_grouped(t, p)) {
      backend.grouped_forward(x, weight.contiguous(),
                              has_bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt,
                              p.plane, groups, p.channels_last(), out);
    } else {
      forward_columns(backend, t, p, x, weight, bias, out);
    }
  }
  out = out.contiguous(conv2d_memory_format(input, weight));
  return batched ? out : out.squeeze(0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const Backend& backend, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const WorkspaceCall workspace_call;
  const bool batched = input.dim() == 4;
  const at::Tensor x4 = batched ? input : input.unsqueeze(0);
  const at::Tensor gy4 = batched ? grad_output : grad_output.unsqueeze(0);
  const Tuning t = tuning_for(backend, input);
  const ConvProblem p(x4, weight, stride, padding, dilation, groups, choose_layout(t, x4));
  const auto [need_input, need_weight, need_bias] = output_mask;

  at::Tensor grad_input, grad_weight, grad_bias;
  if (need_bias) {
    grad_bias = gy4.sum(at::IntArrayRef{0, 2, 3});
  }
  const bool empty = p.batch == 0 || gy4.numel() == 0;
  if (need_input) {
    grad_input = empty ? at::zeros(x4.sizes(), x4.options().memory_format(p.memory_format()))
                       : at::empty(x4.sizes(), x4.options().memory_format(p.memory_format()));
  }
  if (need_weight && empty) {
    grad_weight = at::zeros(weight.sizes(), weight.options());
  }

  if ((need_input || need_weight) && !empty) {
    const at::Tensor gy = gy4.contiguous(p.memory_format());
    // The input is only read to rebuild columns for grad_weight.
    const at::Tensor x = need_weight ? x4.contiguous(p.memory_format()) : at::Tensor();
    if (use_direct_grouped(t, p)) {
      const at::Tensor w = weight.contiguous();
      if (need_input) {
        backend.grouped_grad_input(gy, w, p.plane, groups, p.channels_last(), grad_input);
      }
      if (need_weight) {
        grad_weight = at::empty(weight.sizes(), weight.options());
        backend.grouped_grad_weight(gy, x, p.plane, groups, p.channels_last(), grad_weight);
      }
    } else {
      if (need_input) {
        grad_input_columns(backend, t, p, gy, weight, grad_input);
      }
      if (need_weight) {
        grad_weight = grad_weight_columns(backend, t, p, x, gy);
      }
    }
  }

  if (need_input) {
    grad_input = grad_input.contiguous(input.suggest_memory_format());
    if (!batched) {
      grad_input = grad_input.squeeze(0);
    }
  }
  if (need_weight) {
    grad_weight = grad_weight.contiguous(weight.suggest_memory_format());
  }
  return {grad_input, grad_weight, grad_bias};
}

// conv_transpose2d is the input gradient of the convolution of its output
// with the same weight: the grad_input pass (GEMM, then col2im) with the
// transposed convolution's input as grad_output, then the bias.
at::Tensor conv_transpose2d(const Backend& backend, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef output_padding, int64_t groups,
                            at::IntArrayRef dilation) {
  const auto size = check_conv_transpose2d("myconv::conv_transpose2d", input, weight, bias, stride, padding,
                                           output_padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const WorkspaceCall workspace_call;
  const bool batched = input.dim() == 4;
  const at::Tensor x4 = batched ? input : input.unsqueeze(0);
  const Tuning t = tuning_for(backend, input);
  std::vector<int64_t> out_size;
  for (const c10::SymInt& s : size) {
    out_size.push_back(s.expect_int());
  }
  if (!batched) {
    out_size.insert(out_size.begin(), 1);
  }
  const ConvProblem p =
      ConvProblem::transposed(x4, weight, out_size, stride, padding, dilation, groups, choose_layout(t, x4));
  at::Tensor out = at::empty(out_size, x4.options().memory_format(p.memory_format()));
  if (p.batch > 0) {
    const at::Tensor gy = x4.contiguous(p.memory_format());
    if (use_direct_grouped(t, p)) {
      backend.grouped_grad_input(gy, weight.contiguous(), p.plane, groups, p.channels_last(), out);
    } else {
      grad_input_columns(backend, t, p, gy, weight, out);
    }
    if (bias.has_value() && bias->defined()) {
      out.add_(bias->view({1, -1, 1, 1}));
    }
  }
  out = out.contiguous(conv2d_memory_format(input, weight));
  return batched ? out : out.squeeze(0);
}

at::Tensor im2col(const Backend& backend, const at::Tensor& input, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  check_im2col(input, kernel_size, dilation, padding, stride);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 4;
  const at::Tensor x = batched ? input.contiguous() : input.unsqueeze(0).contiguous();
  const PlaneGeometry g(x.size(1), x.size(2), x.size(3), kernel_size, stride, padding, dilation);
  const at::Tensor out = at::empty({x.size(0), g.rows(), g.cols()}, x.options());
  if (out.numel() > 0) {
    backend.im2col(x, g, ColumnTile::whole(g), out, {g.rows() * g.cols(), g.cols(), 1});
  }
  return batched ? out : out.squeeze(0);
}

at::Tensor col2im(const Backend& backend, const at::Tensor& input, c10::SymIntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride) {
  check_col2im(input, output_size, kernel_size, dilation, padding, stride);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 3;
  const at::Tensor cols = batched ? input.contiguous() : input.unsqueeze(0).contiguous();
  const int64_t channels = cols.size(1) / (kernel_size[0] * kernel_size[1]);
  const PlaneGeometry g(channels, output_size[0].expect_int(), output_size[1].expect_int(),
                        kernel_size, stride, padding, dilation);
  const at::Tensor out = at::empty({cols.size(0), channels, g.height, g.width}, cols.options());
  if (out.numel() > 0) {
    backend.col2im(cols, {g.rows() * g.cols(), g.cols(), 1}, ColumnTile::whole(g), g, out,
                   /*accumulate=*/false);
  }
  return batched ? out : out.squeeze(0);
}

} // namespace detail
} // namespace myconv
