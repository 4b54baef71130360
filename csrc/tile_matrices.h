// The matrices of a tile: the GEMM's views of the weight, the input, the
// output and the gradients for a tile of output positions and a block of
// channels, and the tile's column buffers (im2col / col2im through the
// backend). Tensors are the problem's 5-D views.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "backend.h"
#include "conv_plan.h"

namespace myconv::detail {

// t.narrow(dim, start, length), or t itself when that is all of it (no view
// op: a tiny call pays for each).
inline at::Tensor part(const at::Tensor& t, int64_t dim, int64_t start, int64_t length) {
  return start == 0 && length == t.size(dim) ? t : t.narrow(dim, start, length);
}

// (G, M, K) weight matrices, K in the layout's row order: (c, kd, kh, kw) or
// (kd, kh, kw, c).
at::Tensor weight_matrix(const ConvProblem& p, const at::Tensor& weight5d);

// The weight columns of a block: (G', M, K') with K' = block channels * taps.
// Channels-first blocks are views; channels-last blocks of part of a group's
// channels are packed (their rows are not contiguous in (kd, kh, kw, c) order).
at::Tensor block_weight(const ConvProblem& p, const at::Tensor& w, const Block& b);

// The tile's part of an output-shaped tensor (out, grad_output) for groups
// [g0, g0 + ng): (G', M, P) channels-first (a tile within one image) or
// (G', P, M) channels-last (any tile).
at::Tensor output_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t g0, int64_t ng);

// The tile's part of an input-shaped tensor (input, grad_input) of a 1x1 /
// stride 1 / no padding convolution, which is its column matrix.
at::Tensor pointwise_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, const Block& b);

// The tile's whole images of a channels-first image-shaped tensor t (input,
// output or a gradient; per_group channels a group) for group g, channels
// [c0, c0 + nc) of the group: (nb, nc, L), one matrix per image, for a
// batched GEMM over the images (Tuning::image_batched_views).
at::Tensor images_view(const ConvProblem& p, const at::Tensor& t, const Tile& tile, int64_t per_group, int64_t g,
                       int64_t c0, int64_t nc);

// The columns (rows, nb * L) of a tile of nb whole images (one group's
// block), images side by side in each row, as one (rows, L) matrix per image:
// (nb, rows, L), for a batched GEMM over the images (image_gemms).
at::Tensor image_columns(const at::Tensor& columns, int64_t nb);

// The (groups, rows, n) channels-first column matrix at the start of the
// contiguous 1-D buffer `flat` (at least groups * rows * row_stride long),
// its rows `row_stride` elements apart (column_row_stride).
at::Tensor column_matrix(const at::Tensor& flat, int64_t groups, int64_t rows, int64_t n, int64_t row_stride);

// im2col of a tile for a block into `columns`: (G', K', P) channels-first
// (rows any stride apart: column_matrix), (G', P, K') channels-last.
void im2col_block(const Backend& backend, const ConvProblem& p, const at::Tensor& images,
                  const Tile& tile, const Block& b, const at::Tensor& columns);

// images (+)<- col2im of a tile's block columns.
void col2im_block(const Backend& backend, const ConvProblem& p, const at::Tensor& columns,
                  const Tile& tile, const Block& b, const at::Tensor& images, bool accumulate);

// images (+)<- col2im of a tile's block columns laid out one matrix an image:
// (nb, G' K', L), rows any stride apart (grad_input with image_gemms).
void col2im_images(const Backend& backend, const ConvProblem& p, const at::Tensor& columns, const Tile& tile,
                   const Block& b, const at::Tensor& images, bool accumulate);

// grad_output of a tile for groups [g0, g0 + ng): a view when the tile lies in
// one image or the layout is channels-last; else the tile's images are
// gathered side by side into `scratch` ((ng, M, P), channels-first).
at::Tensor grad_output_matrix(const ConvProblem& p, const at::Tensor& gy, const Tile& tile, int64_t g0,
                              int64_t ng, const std::function<at::Tensor()>& scratch);

} // namespace myconv::detail
