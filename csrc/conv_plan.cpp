#include "conv_plan.h"

#include <algorithm>
#include <limits>

#include "workspace.h"

namespace myconv::detail {

bool is_reduced_precision(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

Tuning tuning_for(const Backend& backend, const at::Tensor& input) {
  Tuning t = backend.tuning(input);
  if (is_reduced_precision(input.scalar_type())) {
    t.split_images = false;
    // grad_weight's GEMM writes each chunk's part in the dtype before it is
    // added in float (unless the GEMM writes float32): chunks as large as the
    // workspace allows keep those roundings few
    if (!t.float_gemm_results) {
      t.chunk_bytes = 0;
    }
  }
  return t;
}


namespace {

// v, with `fill` prepended up to three entries.
std::array<int64_t, 3> lift(at::IntArrayRef v, int64_t fill) {
  TORCH_INTERNAL_ASSERT(v.size() >= 1 && v.size() <= 3);
  std::array<int64_t, 3> out{fill, fill, fill};
  std::copy(v.begin(), v.end(), out.end() - v.size());
  return out;
}

} // namespace

Window3d::Window3d(at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation)
    : stride(lift(stride, 1)), padding(lift(padding, 0)), dilation(lift(dilation, 1)) {}

ConvProblem::ConvProblem(int64_t batch, int64_t channels, at::IntArrayRef size, const at::Tensor& weight5d,
                         const Window3d& window, int64_t groups, Layout layout)
    : geom(channels, size, weight5d.sizes().slice(2), window.stride, window.padding, window.dilation),
      batch(batch), out_channels(weight5d.size(0)), groups(groups), layout(layout) {}

ConvProblem::ConvProblem(const at::Tensor& input5d, const at::Tensor& weight5d, const Window3d& window,
                         int64_t groups, Layout layout)
    : ConvProblem(input5d.size(0), input5d.size(1), input5d.sizes().slice(2), weight5d, window, groups, layout) {}

ConvProblem ConvProblem::transposed(const at::Tensor& input5d, const at::Tensor& weight5d, at::IntArrayRef out_size,
                                    const Window3d& window, int64_t groups, Layout layout) {
  ConvProblem p(input5d.size(0), weight5d.size(1) * groups, out_size.slice(2), weight5d, window, groups, layout);
  p.geom.out_d = input5d.size(2);
  p.geom.out_h = input5d.size(3);
  p.geom.out_w = input5d.size(4);
  return p;
}

bool ConvProblem::pointwise() const {
  const ConvGeometry& g = geom;
  return g.taps() == 1 && g.stride_d == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_d == 0 && g.pad_h == 0 &&
         g.pad_w == 0 && g.out_d == g.depth && g.out_h == g.height && g.out_w == g.width;
}

bool use_direct_grouped(const Tuning& t, const ConvProblem& p) {
  return t.direct_grouped && p.groups > 1 && p.group_rows() <= kDirectMaxGroupRows;
}

Layout choose_layout(const Tuning& t, const ConvProblem& p, bool channels_last_input) {
  // Channels-last columns are read and written through views (gemm_on_views).
  if (!(t.channels_last && t.gemm_on_views && channels_last_input)) {
    return Layout::kChannelsFirst;
  }
  if (p.groups > 1 && !t.grouped_channels_last_columns && !use_direct_grouped(t, p)) {
    return Layout::kChannelsFirst;
  }
  return Layout::kChannelsLast;
}

int64_t column_row_stride(const Tuning& t, int64_t positions, int64_t element_size) {
  if (t.column_row_bytes <= element_size || t.column_row_bytes % element_size != 0) {
    return positions;
  }
  const int64_t per_row = t.column_row_bytes / element_size;
  return ceil_div(positions, per_row) * per_row;
}

int64_t chunk_cap(const Tuning& t, int64_t element_size) {
  return t.chunk_bytes > 0 ? std::max<int64_t>(1, t.chunk_bytes * element_size / 4) : 0;
}

Tile TilePlan::at(int64_t i) const {
  if (tiles_per_image > 1) {
    const int64_t j = i % tiles_per_image;
    return {i / tiles_per_image, 1, j * tile_positions, std::min(L, (j + 1) * tile_positions)};
  }
  const int64_t n0 = i * images_per_tile;
  return {n0, std::min(images_per_tile, batch - n0), 0, L};
}

TilePlan plan_tiles(const ConvProblem& p, const Tuning& t, int64_t element_size, int64_t workspace_limit,
                    int64_t buffer_alignment) {
  TilePlan plan;
  plan.batch = p.batch;
  plan.L = p.L();
  // One worker's buffers per output position: columns, plus a GEMM result or
  // gathered grad_output of a multi-image tile.
  const int64_t bytes_per_position = (p.geom.rows() + p.out_channels) * element_size;
  if (t.tile_bytes <= 0) {
    // (channels-last chunks write the output and read grad_output in place: columns only)
    const int64_t scratch_rows = p.channels_last() ? 0 : p.out_channels;
    const int64_t per_image = (p.geom.rows() + scratch_rows) * element_size * plan.L;
    int64_t images = batch_chunk(p.batch, per_image, plan.L, workspace_limit);
    if (const int64_t cap = chunk_cap(t, element_size); cap > 0 && per_image > 0 && p.batch > 0) {
      const int64_t fill = ceil_div(t.chunk_min_positions, std::max<int64_t>(plan.L, 1));
      images = std::clamp<int64_t>(std::max(cap / per_image, fill), 1, images);
    }
    // with padded column rows (column_row_stride; channels-first columns): the
    // chunk's buffer, rounded up to the buffers' alignment, within the
    // workspace limit, and its rows' stride within BLAS's 32 bits
    const auto fits = [&](int64_t n) {
      const int64_t stride = p.channels_last() ? n * plan.L : column_row_stride(t, n * plan.L, element_size);
      const int64_t elements = p.geom.rows() * stride + scratch_rows * n * plan.L;
      return aligned_elements(elements, element_size, buffer_alignment) * element_size <= workspace_limit &&
             stride <= std::numeric_limits<int32_t>::max();
    };
    while (images > 1 && !fits(images)) {
      --images;
    }
    if (p.batch > 0) {
      images = ceil_div(p.batch, ceil_div(p.batch, images));  // chunks of equal size
    }
    plan.images_per_tile = std::max<int64_t>(images, 1);
  } else {
    // The larger of a tile's columns and its block of the output (or of
    // grad_output) fits tile_bytes.
    const int64_t per_position = std::max(p.geom.rows(), p.out_channels) * element_size;
    const int64_t by_cache = std::max({t.min_tile_positions, 2 * p.group_out_channels(),
                                      t.tile_bytes / std::max<int64_t>(1, per_position)});
    // Half the limit: the rest is for partial sums, packed weights, other workers.
    const int64_t by_limit = std::max<int64_t>(1, workspace_limit / 2 / bytes_per_position);
    int64_t target = std::max<int64_t>(1, std::min(by_cache, by_limit));
    // 1x1 / stride 1 / no padding, channels-first: the GEMMs read the images
    // in place (no columns to keep in cache), so whole images make the
    // largest GEMMs, unless images are too small to be views worth having.
    if (p.pointwise() && t.gemm_on_views && !p.channels_last() && plan.L >= t.min_tile_positions) {
      target = plan.L;
    }
    if (t.split_images && plan.L > target) {
      int64_t tile = ceil_div(plan.L, ceil_div(plan.L, target));
      // whole vectors, except at the end (unless that would pass the limit)
      if (const int64_t whole = std::min(plan.L, ceil_div(tile, 8) * 8); whole <= by_limit) {
        tile = whole;
      }
      plan.tile_positions = tile;
      plan.tiles_per_image = ceil_div(plan.L, tile);
    } else if (4 * plan.L < target) {
      // Joined images: at most target positions, tiles of equal size, and
      // at least kMinJoinedTiles tiles (work for every thread, not one tile
      // on one of them) while each keeps min_tile_positions, or 2 * C_out/G
      // where the weights outgrow a tile (their packing must stay small next
      // to each GEMM: 3x3 512->512 at 7x7).
      const int64_t L = std::max<int64_t>(plan.L, 1);
      const int64_t by_blas = std::numeric_limits<int32_t>::max() / L;
      const int64_t weight_bytes = p.group_out_channels() * p.group_rows() * element_size;
      const int64_t fewest_positions = weight_bytes > t.tile_bytes
                                           ? std::max(t.min_tile_positions, 2 * p.group_out_channels())
                                           : t.min_tile_positions;
      const int64_t by_items = std::max({int64_t{1}, p.batch / kMinJoinedTiles, ceil_div(fewest_positions, L)});
      int64_t images = std::clamp<int64_t>(std::min({target / L, by_blas, by_items}), 1, std::max<int64_t>(p.batch, 1));
      if (p.batch > 0) {
        images = ceil_div(p.batch, ceil_div(p.batch, images));  // tiles of equal size
      }
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

TilePlan plan_view_chunks(const ConvProblem& p, int64_t chunk_bytes, int64_t per_image, int64_t per_chunked,
                          int64_t max_images, int64_t workspace_limit) {
  TilePlan plan;
  plan.batch = p.batch;
  plan.L = p.L();
  int64_t images = std::clamp<int64_t>(max_images, 1, std::max<int64_t>(p.batch, 1));
  const int64_t cap = chunk_bytes > 0 ? std::min(chunk_bytes, workspace_limit) : workspace_limit;
  // (several chunks: the slot of their sum too)
  if (per_image > 0 && images * per_image + (images < p.batch ? per_chunked : 0) > cap) {
    images = std::clamp<int64_t>((cap - per_chunked) / per_image, 1, images);
  }
  if (p.batch > 0) {
    images = ceil_div(p.batch, ceil_div(p.batch, images));  // chunks of equal size
  }
  plan.images_per_tile = images;
  plan.tile_positions = plan.L;
  plan.count = ceil_div(p.batch, plan.images_per_tile);
  return plan;
}

Block Blocking::at(int64_t i) const {
  if (all_groups) {
    return {0, groups, 0, group_channels};
  }
  const int64_t g = i / per_group, j = i % per_group;
  return {g, g + 1, j * block_channels, std::min(group_channels, (j + 1) * block_channels)};
}

Blocking plan_blocks(const ConvProblem& p, const Tuning& t, int64_t other_items, bool split_channels) {
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
  const int64_t n = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, std::min(by_runs, by_rows)));
  if (n > 1 && split_channels) {
    b.all_groups = false;
    b.block_channels = ceil_div(b.group_channels, n);
    b.per_group = ceil_div(b.group_channels, b.block_channels);
  }
  return b;
}

} // namespace myconv::detail
