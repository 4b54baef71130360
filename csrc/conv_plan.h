// The convolution problem in concrete sizes, and how its work is cut: tiles
// of output positions, blocks of channels. Every choice of how to cut depends
// on the problem, the dtype, the backend's Tuning, the cache size and the
// workspace limit, never on the number of threads, so that results do not
// either.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <array>
#include <cstdint>
#include <utility>

#include "backend.h"
#include "conv_geometry.h"

namespace myconv::detail {

// Work items a pass aims at when it may split its work: enough for the
// threads of a usual machine to share it. A constant, so that the way work is
// cut (and therefore every sum) never depends on the thread count.
constexpr int64_t kTargetItems = 16;
// Fewest tiles small images are joined into (while each tile keeps
// Tuning::min_tile_positions positions).
constexpr int64_t kMinJoinedTiles = 8;
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
// Most bytes of columns the forward builds at once to share between blocks of
// output channels: below glibc's largest mmap threshold (32 MiB), so the
// buffer comes from the heap and is not page-faulted in afresh on every
// call, and about what a shared L3 holds.
constexpr int64_t kMaxWaveBytes = int64_t{16} << 20;
// Largest per-group K that goes to the direct grouped kernels.
constexpr int64_t kDirectMaxGroupRows = 32;
// Tuning::image_batched_views: the fewest output positions an image's GEMM
// keeps (smaller images are joined into one wide GEMM over columns), the
// byte multiple an image's plane keeps (so that every image's matrix starts
// where tensor-op GEMM kernels can read it), and the most images one batched
// GEMM takes (cuBLAS's grid limit on some devices).
constexpr int64_t kMinViewImagePositions = 64;
constexpr int64_t kViewImageAlignment = 16;
constexpr int64_t kMaxGemmBatch = 65535;

bool is_reduced_precision(at::ScalarType t);

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

enum class Layout { kChannelsFirst, kChannelsLast };

// The backend's tuning, adjusted for the dtype: reduced-precision images are
// never split into tiles, so that col2im sums each image element once, in
// float, and rounds once; and, unless the backend's GEMM writes float32
// results, are chunked as coarsely as the workspace allows.
Tuning tuning_for(const Backend& backend, const at::Tensor& input);


// The window of a convolution, lifted to three spatial dimensions
// (depth, height, width): missing leading axes get kernel 1, stride 1, no
// padding, dilation 1.
struct Window3d {
  std::array<int64_t, 3> stride, padding, dilation;
  Window3d(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation);
};

// A convolution of 1 to 3 spatial dimensions in concrete sizes, as the 3-D
// problem of its 5-D views (N, C, D, H, W).
struct ConvProblem {
  ConvGeometry geom;
  int64_t batch, out_channels, groups;
  Layout layout;

  // input5d (N, C_in, D, H, W), weight5d (C_out, C_in/groups, kD, kH, kW).
  ConvProblem(const at::Tensor& input5d, const at::Tensor& weight5d, const Window3d& window, int64_t groups,
              Layout layout);

  // The convolution whose input gradient is the transposed convolution of
  // input5d with weight5d: its input is the transposed convolution's output
  // (out_size: (N, C_out, D, H, W)), its output positions are input5d's
  // pixels (with output_padding the sliding window would fit one more row;
  // the extra positions do not exist).
  static ConvProblem transposed(const at::Tensor& input5d, const at::Tensor& weight5d, at::IntArrayRef out_size,
                                const Window3d& window, int64_t groups, Layout layout);

  int64_t L() const { return geom.cols(); }
  int64_t taps() const { return geom.taps(); }
  int64_t group_channels() const { return geom.channels / groups; }    // C_in/G
  int64_t group_rows() const { return group_channels() * taps(); }     // K
  int64_t group_out_channels() const { return out_channels / groups; }  // M
  bool channels_last() const { return layout == Layout::kChannelsLast; }
  at::MemoryFormat memory_format() const {
    return channels_last() ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Contiguous;
  }
  // 1x1, stride 1, no padding (one output position per pixel): the input
  // already is the column matrix.
  bool pointwise() const;

 private:
  ConvProblem(int64_t batch, int64_t channels, at::IntArrayRef size, const at::Tensor& weight5d,
              const Window3d& window, int64_t groups, Layout layout);
};

// Direct kernels instead of columns: grouped with a tiny per-group K
// (depthwise), where the backend has them.
bool use_direct_grouped(const Tuning& t, const ConvProblem& p);

// The layout problem p (laid out channels-first) runs in: channels-last
// columns for a channels-last input where the backend has them
// (Tuning::channels_last), but for grouped problems that take columns on a
// backend without grouped channels-last columns
// (Tuning::grouped_channels_last_columns).
Layout choose_layout(const Tuning& t, const ConvProblem& p, bool channels_last_input);

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

  Tile at(int64_t i) const;
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
// groups' columns, or of the output's channels where there are more of them
// (tiny K: a wav2vec-style first layer), and at least min_tile_positions and twice a group's output
// channels (so that packing the weights for each GEMM costs little next to
// the GEMM), within half the workspace limit for one worker. An image with at
// least a quarter of that is a tile of its own (or cut into tiles): joining
// images costs a copy of the GEMM result (and of grad_output), worth it only
// for small images; joined tiles are of equal size. Backends without cache
// tiling (tile_bytes == 0) get chunks of whole images of equal size: as many
// as the workspace limit allows, or, with Tuning::chunk_bytes, as many as
// that many bytes hold, but at least chunk_min_positions positions' worth.
// workspace_limit: myconv::workspace_limit_bytes(), read once per call;
// buffer_alignment: the bytes a worker's buffer is rounded up to
// (buffer_alignment(device)), counted against the limit.
TilePlan plan_tiles(const ConvProblem& p, const Tuning& t, int64_t element_size, int64_t workspace_limit,
                    int64_t buffer_alignment);

// Chunks of whole images for a pass that builds no columns (a 1x1 pass on
// views, Tuning::view_chunks): its buffers take `per_image` bytes an image
// (grad_weight's image products; 0: none) and `per_chunked` more when the
// batch takes several chunks (their sum's slot); chunks of equal size, as
// large as chunk_bytes (0: no cap but the limit; chunk_cap of the buffers'
// type, the products' float32 for 16-bit inputs) and the workspace limit
// allow, at most max_images images (the GEMMs' 32-bit sizes).
TilePlan plan_view_chunks(const ConvProblem& p, int64_t chunk_bytes, int64_t per_image, int64_t per_chunked,
                          int64_t max_images, int64_t workspace_limit);

// Tuning::chunk_bytes (float32's bytes) for buffers of element_size bytes:
// as many elements, so that every dtype takes the same chunks; never 0 ("no
// cap") from a positive one.
int64_t chunk_cap(const Tuning& t, int64_t element_size);

// Row stride, in elements, of a channels-first column buffer of `positions`
// columns: rounded up to whole Tuning::column_row_bytes.
int64_t column_row_stride(const Tuning& t, int64_t positions, int64_t element_size);

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
  Block at(int64_t i) const;
  bool splits_channels() const { return !all_groups && per_group > 1; }
};

// Blocks of input channels for `other_items` items of another kind (tile
// sequences, partial-sum chunks): one block per group, cut further while the
// pass has fewer than kTargetItems items and blocks keep kMinBlockRows rows
// (and, channels-last, runs of kMinBlockChannels channels for im2col to copy).
Blocking plan_blocks(const ConvProblem& p, const Tuning& t, int64_t other_items, bool split_channels = true);

} // namespace myconv::detail
