#include "tile_matrices.h"

#include <c10/util/Exception.h>

namespace myconv::detail {

at::Tensor weight_matrix(const ConvProblem& p, const at::Tensor& weight5d) {
  const at::Tensor w =
      p.channels_last() ? weight5d.permute({0, 2, 3, 4, 1}).contiguous() : weight5d.contiguous();
  return w.view({p.groups, p.group_out_channels(), p.group_rows()});
}

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

namespace {

// The tile's part of an image-shaped tensor t with `per_group` channels per
// group, for groups [g0, g0 + ng) and channels [c0, c0 + nc) of each: the
// GEMM's view of it, (G', nc, P) channels-first (a tile within one image) or
// (G', P, nc) channels-last (any tile, its positions running across images).
// One view op from t's strides (a tiny call pays for every view it makes).
at::Tensor tile_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t per_group, int64_t g0,
                     int64_t ng, int64_t c0, int64_t nc) {
  // t is contiguous in its layout, so its strides are the layout's (those t
  // reports for size-1 dimensions may be anything).
  const int64_t P = tile.positions(), C = t.size(1), L = p.L();
  const int64_t first_channel = g0 * per_group + c0;
  if (p.channels_last()) {
    TORCH_INTERNAL_ASSERT(t.is_contiguous(at::MemoryFormat::ChannelsLast3d));
    return t.as_strided({ng, P, nc}, {per_group, C, 1},
                        t.storage_offset() + (tile.n0 * L + tile.l_begin) * C + first_channel);
  }
  TORCH_INTERNAL_ASSERT(tile.nb == 1 && t.is_contiguous());
  return t.as_strided({ng, nc, P}, {per_group * L, L, 1},
                      t.storage_offset() + (tile.n0 * C + first_channel) * L + tile.l_begin);
}

// The column layout of a tile buffer for blocks of `channels` channels:
// channels-first (rows, P) with the tile's images side by side, rows
// `row_stride` apart; channels-last (P, rows) per group.
ColumnLayout tile_layout(const ConvProblem& p, const Tile& tile, int64_t channels, int64_t row_stride) {
  const int64_t per_image = tile.l_end - tile.l_begin;
  const int64_t rows = channels * p.taps();
  if (p.channels_last()) {
    return {per_image * rows, 1, rows, /*channels_last=*/true};
  }
  return {per_image, row_stride, 1, /*channels_last=*/false};
}

// Calls fn(tile, layout, columns) for the column tiles of a tile's block:
// channels-first, one tile for all the block's channels, columns (G', K', P);
// channels-last, whose rows are (kd, kh, kw, c) per group, one per group,
// columns (P, K') each.
template <typename F>
void for_each_column_tile(const ConvProblem& p, const Tile& tile, const Block& b, const at::Tensor& columns,
                          const F& fn) {
  const int64_t cg = p.group_channels();
  if (!p.channels_last()) {
    const ColumnTile ct{tile.l_begin, tile.l_end, b.first_channel(cg), b.last_channel(cg)};
    fn(ct, tile_layout(p, tile, ct.channels(), columns.stride(1)), columns);
    return;
  }
  for (int64_t g = b.g0; g < b.g1; ++g) {
    fn(ColumnTile{tile.l_begin, tile.l_end, g * cg + b.c0, g * cg + b.c1}, tile_layout(p, tile, b.channels(), 0),
       columns.select(0, g - b.g0));
  }
}

} // namespace

at::Tensor column_matrix(const at::Tensor& flat, int64_t groups, int64_t rows, int64_t n, int64_t row_stride) {
  TORCH_INTERNAL_ASSERT(flat.dim() == 1 && flat.stride(0) == 1 && n <= row_stride &&
                        groups * rows * row_stride <= flat.numel());
  return flat.as_strided({groups, rows, n}, {rows * row_stride, row_stride, 1}, flat.storage_offset());
}

at::Tensor image_columns(const at::Tensor& columns, int64_t nb) {
  TORCH_INTERNAL_ASSERT(columns.dim() == 2 && nb >= 1 && columns.size(1) % nb == 0);
  const int64_t L = columns.size(1) / nb;
  return columns.as_strided({nb, columns.size(0), L}, {L * columns.stride(1), columns.stride(0), columns.stride(1)},
                            columns.storage_offset());
}

at::Tensor images_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t per_group, int64_t g,
                       int64_t c0, int64_t nc) {
  TORCH_INTERNAL_ASSERT(!p.channels_last() && t.is_contiguous() && tile.l_begin == 0 && tile.l_end == p.L());
  const int64_t C = t.size(1), L = p.L();
  return t.as_strided({tile.nb, nc, L}, {C * L, L, 1}, t.storage_offset() + (tile.n0 * C + g * per_group + c0) * L);
}

at::Tensor output_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t g0, int64_t ng) {
  const int64_t M = p.group_out_channels();
  return tile_view(p, t, tile, M, g0, ng, 0, M);
}

at::Tensor pointwise_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, const Block& b) {
  return tile_view(p, t, tile, p.group_channels(), b.g0, b.groups(), b.c0, b.channels());
}

void im2col_block(const Backend& backend, const ConvProblem& p, const at::Tensor& images,
                  const Tile& tile, const Block& b, const at::Tensor& columns) {
  const at::Tensor slice = images.narrow(0, tile.n0, tile.nb);
  for_each_column_tile(p, tile, b, columns, [&](const ColumnTile& ct, ColumnLayout layout, const at::Tensor& c) {
    backend.im2col(slice, p.geom, ct, c, layout);
  });
}

void col2im_block(const Backend& backend, const ConvProblem& p, const at::Tensor& columns,
                  const Tile& tile, const Block& b, const at::Tensor& images, bool accumulate) {
  const at::Tensor slice = images.narrow(0, tile.n0, tile.nb);
  for_each_column_tile(p, tile, b, columns, [&](const ColumnTile& ct, ColumnLayout layout, const at::Tensor& c) {
    backend.col2im(c, layout, ct, p.geom, slice, accumulate);
  });
}

void col2im_images(const Backend& backend, const ConvProblem& p, const at::Tensor& columns, const Tile& tile,
                   const Block& b, const at::Tensor& images, bool accumulate) {
  TORCH_INTERNAL_ASSERT(!p.channels_last() && columns.dim() == 3 && columns.size(0) == tile.nb &&
                        columns.size(2) == tile.l_end - tile.l_begin && columns.stride(2) == 1);
  const int64_t cg = p.group_channels();
  const ColumnTile ct{tile.l_begin, tile.l_end, b.first_channel(cg), b.last_channel(cg)};
  backend.col2im(columns, ColumnLayout{columns.stride(0), columns.stride(1), 1, false}, ct, p.geom,
                 images.narrow(0, tile.n0, tile.nb), accumulate);
}

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

} // namespace myconv::detail
