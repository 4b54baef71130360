// The three passes over column tiles (see conv_passes.h for the matrices and
// the work items).
#include "conv_passes.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "myconv/ops.h"
#include "tile_matrices.h"
#include "workspace.h"

namespace myconv::detail {

// Forward (the plan: pass_plan.cpp, plan_forward). One item per tile, or per
// (tile, block of output channels) after the wave's columns are built.
void forward_columns(const Backend& backend, const PassPlan& plan, const ConvProblem& p, const at::Tensor& x,
                     const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& out) {
  const TilePlan& tiles = plan.tiles;
  const int64_t G = p.groups, M = p.group_out_channels(), K = p.group_rows(), L = p.L();
  const int64_t es = plan.element_size;
  const bool cl = p.channels_last();
  const at::Tensor w = weight_matrix(p, weight);  // (G, M, K)
  const at::Tensor wt = cl ? w.transpose(1, 2) : at::Tensor();  // (G, K, M)
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->reshape({G, M}) : at::Tensor();
  const Block all{0, G, 0, p.group_channels()};
  const bool columns_are_input = plan.path == Path::kGemmOnViews;
  const bool output_in_place = plan.output_in_place;
  const int64_t column_elems = plan.column_elems, scratch_elems = plan.scratch_elems;
  const int64_t mblocks = plan.out_blocks, mb = plan.out_block_rows;

  // The GEMM of output channels [m0, m0 + rows) of every group for a tile.
  const auto gemm_item = [&](const Tile& tile, const at::Tensor& cols, int64_t m0, int64_t rows,
                             const at::Tensor& scratch) {
    if (plan.image_gemms && tile.nb > 1) {
      // several images (channels-first; 1x1 on views, or large images' columns): per group, one GEMM per
      // image, batched, the weight broadcast, each image's result written in place
      const bool whole_bias = has_bias && rows == M;  // every output channel: one copy of the bias
      if (whole_bias) {
        const at::Tensor images = out.narrow(0, tile.n0, tile.nb);
        images.copy_(b.view({1, G * M, 1, 1, 1}).expand_as(images));
      }
      for (int64_t g = 0; g < G; ++g) {
        const at::Tensor dst = images_view(p, out, tile, M, g, m0, rows);  // (nb, rows, L)
        if (has_bias && !whole_bias) {
          dst.copy_(b.select(0, g).narrow(0, m0, rows).view({1, rows, 1}).expand_as(dst));
        }
        backend.bmm(w.select(0, g).narrow(0, m0, rows).expand({tile.nb, rows, K}),
                    columns_are_input ? images_view(p, x, tile, p.group_channels(), g, 0, p.group_channels())
                                      : image_columns(cols.select(0, g), tile.nb),
                    dst, has_bias);
      }
      return;
    }
    const int64_t n = tile.positions();
    const at::Tensor dst = output_in_place ? part(output_view(p, out, tile, 0, G), cl ? 2 : 1, m0, rows)
                                           : scratch.view({G, rows, n});
    if (has_bias) {
      const at::Tensor bb = part(b, 1, m0, rows);
      dst.copy_(cl ? bb.unsqueeze(1).expand_as(dst) : bb.unsqueeze(2).expand_as(dst));
    }
    if (cl) {
      backend.bmm(cols, part(wt, 2, m0, rows), dst, /*accumulate=*/has_bias);
    } else {
      backend.bmm(part(w, 1, m0, rows), cols, dst, /*accumulate=*/has_bias);
    }
    if (!output_in_place) {
      // (G, rows, nb, L) -> the images' (nb, G, rows, L)
      out.narrow(0, tile.n0, tile.nb)
          .view({tile.nb, G, M, L})
          .narrow(2, m0, rows)
          .copy_(dst.view({G, rows, tile.nb, L}).permute({2, 0, 1, 3}));
    }
  };
  // The tile's columns in `buffer` (at least column_elems long).
  const auto tile_columns = [&](const Tile& tile, const at::Tensor& buffer) {
    if (columns_are_input) {
      return tile.nb > 1 && !cl ? at::Tensor() : pointwise_view(p, x, tile, all);  // (several images: gemm_item)
    }
    const int64_t n = tile.positions();
    const at::Tensor cols = cl ? part(buffer, 0, 0, G * n * K).view({G, n, K})
                               : column_matrix(buffer, G, K, n, column_row_stride(plan.tuning, n, es));
    im2col_block(backend, p, x, tile, all, cols);
    return cols;
  };

  const WorkerBuffers buffers(plan.workers, plan.worker_elems(), x.options());
  if (mblocks == 1) {
    backend.run_items(plan.items, plan.workers, [&](int64_t i, int64_t worker) {
      const Tile tile = tiles.at(i);
      const int64_t n = tile.positions();
      const at::Tensor cols = tile_columns(tile, column_elems ? buffers.get(worker, 0, {column_elems}) : at::Tensor());
      gemm_item(tile, cols, 0, M,
                scratch_elems ? buffers.get(worker, plan.scratch_offset(), {G * M * n}) : at::Tensor());
    });
    return;
  }

  // Waves of tiles: their columns first, shared by the blocks' GEMMs.
  const int64_t column_stride = plan.wave_stride, wave = plan.wave;
  const Workspace shared_columns(wave * column_stride, x.options());
  const at::Tensor& shared = shared_columns.tensor();
  std::vector<at::Tensor> cols(wave);
  for (int64_t first = 0; first < tiles.count; first += wave) {
    const int64_t count = std::min(wave, tiles.count - first);
    for (int64_t j = 0; j < count; ++j) {
      const Tile tile = tiles.at(first + j);
      cols[j] = tile_columns(tile, column_elems ? shared.narrow(0, j * column_stride, column_elems) : at::Tensor());
    }
    backend.run_items(count * mblocks, plan.workers, [&](int64_t i, int64_t worker) {
      const Tile tile = tiles.at(first + i / mblocks);
      const int64_t m0 = (i % mblocks) * mb, rows = std::min(mb, M - m0);
      gemm_item(tile, cols[i / mblocks], m0, rows,
                scratch_elems ? buffers.get(worker, plan.scratch_offset(), {G * rows * tile.positions()})
                              : at::Tensor());
    });
  }
}

void grad_input_columns(const Backend& backend, const PassPlan& plan, const ConvProblem& p, const at::Tensor& gy,
                        const at::Tensor& weight, const at::Tensor& gi) {
  const TilePlan& tiles = plan.tiles;
  const Blocking& blocking = plan.blocks;
  const bool cl = p.channels_last();
  const int64_t M = p.group_out_channels(), es = plan.element_size;
  const at::Tensor w = weight_matrix(p, weight);
  std::vector<at::Tensor> wblocks;  // views, or packed copies (channels-last blocks of part of a group)
  int64_t packed = 0;
  for (int64_t i = 0; i < blocking.count(); ++i) {
    wblocks.push_back(block_weight(p, w, blocking.at(i)));
    packed += wblocks.back().is_alias_of(w) ? 0 : wblocks.back().numel() * wblocks.back().element_size();
  }
  TORCH_INTERNAL_ASSERT(packed == plan.packed_bytes, "myconv: the plan counted ", plan.packed_bytes,
                        " bytes of packed weight blocks, the pass made ", packed);
  const WorkspaceCharge packed_charge(packed);
  const bool columns_are_grad_input = plan.path == Path::kGemmOnViews;
  const WorkerBuffers buffers(plan.workers, plan.worker_elems(), gy.options());

  backend.run_items(plan.items, plan.workers, [&](int64_t i, int64_t worker) {
    const Block b = blocking.at(i % blocking.count());
    const at::Tensor& wb = wblocks[i % blocking.count()];
    const int64_t ng = b.groups(), kb = b.channels() * p.taps();
    const auto [first, last] = tiles.sequence(i / blocking.count());
    for (int64_t k = first; k < last; ++k) {
      const Tile tile = tiles.at(k);
      const int64_t n = tile.positions();
      if (plan.image_gemms && tile.nb > 1) {
        // several images: per group, one GEMM per image, batched, the weight broadcast, reading each image's
        // grad_output in place; 1x1 on views writes grad_input itself, otherwise each image's columns, a
        // matrix an image (its rows padded: column_row_stride), which col2im then sums into the images
        at::Tensor cols;
        if (!columns_are_grad_input) {
          const int64_t row_stride = column_row_stride(plan.tuning, p.L(), es);
          cols = buffers.get(worker, 0, {tile.nb, ng * kb, row_stride}).narrow(2, 0, p.L());  // (nb, G' K', L)
        }
        for (int64_t g = b.g0; g < b.g1; ++g) {
          backend.bmm(wb.select(0, g - b.g0).t().expand({tile.nb, kb, M}), images_view(p, gy, tile, M, g, 0, M),
                      columns_are_grad_input ? images_view(p, gi, tile, p.group_channels(), g, b.c0, b.channels())
                                             : cols.narrow(1, (g - b.g0) * kb, kb),
                      false);
        }
        if (!columns_are_grad_input) {
          col2im_images(backend, p, cols, tile, b, gi, /*accumulate=*/k > first);
        }
        continue;
      }
      const at::Tensor gym = grad_output_matrix(p, gy, tile, b.g0, ng, [&] {
        return buffers.get(worker, plan.scratch_offset(), {ng, M, n});
      });
      if (columns_are_grad_input) {
        const at::Tensor dst = pointwise_view(p, gi, tile, b);
        cl ? backend.bmm(gym, wb, dst, false) : backend.bmm(wb.transpose(1, 2), gym, dst, false);
        continue;
      }
      const at::Tensor cols = cl ? buffers.get(worker, 0, {ng, n, kb})
                                 : buffers.rows(worker, ng, kb, n, column_row_stride(plan.tuning, n, es));
      cl ? backend.bmm(gym, wb, cols, false) : backend.bmm(wb.transpose(1, 2), gym, cols, false);
      col2im_block(backend, p, cols, tile, b, gi, /*accumulate=*/k > first);
    }
  });
}

// Returns grad_weight as (C_out, C_in/G, kD, kH, kW), laid out in the problem's
// layout (channels_last strides for channels-last problems).
at::Tensor grad_weight_columns(const Backend& backend, const PassPlan& plan, const ConvProblem& p,
                               const at::Tensor& x, const at::Tensor& gy) {
  const TilePlan& tiles = plan.tiles;
  const Blocking& blocking = plan.blocks;
  const int64_t G = p.groups, M = p.group_out_channels(), K = p.group_rows(), cg = p.group_channels();
  const int64_t chunks = plan.chunks;
  const bool cl = p.channels_last(), into_result = plan.into_result;
  const bool reduced = is_reduced_precision(x.scalar_type());
  const at::TensorOptions acc_options = x.options().dtype(reduced ? at::kFloat : x.scalar_type());

  const at::Tensor gw = at::empty(cl ? at::IntArrayRef{G, M, p.taps(), cg} : at::IntArrayRef{G, M, K}, acc_options);
  // The (G', M, K') matrix of a block in grad_weight (into_result).
  const auto result_block = [&](const Block& b) {
    return cl ? gw.view({G, M, K}).narrow(0, b.g0, b.groups())
              : gw.narrow(0, b.g0, b.groups()).narrow(2, b.c0 * p.taps(), b.channels() * p.taps());
  };
  std::vector<Workspace> partial_space;
  std::vector<at::Tensor> partials;  // per block: (chunks, G', M, K')
  for (int64_t i = 0; i < blocking.count() && !into_result; ++i) {
    const Block b = blocking.at(i);
    const int64_t kb = b.channels() * p.taps();
    partial_space.emplace_back(chunks * b.groups() * M * kb, acc_options);
    partials.push_back(partial_space.back().tensor().view({chunks, b.groups(), M, kb}));
  }
  const bool columns_are_input = plan.path == Path::kGemmOnViews;
  const WorkerBuffers buffers(plan.workers, plan.worker_elems(), x.options());
  const int64_t items = plan.items, workers = plan.workers;
  // 1x1 tiles of several images on views: each image's product (one worker, see the plan)
  const Workspace image_space(plan.image_product_elems, acc_options);

  backend.run_items(items, workers, [&](int64_t i, int64_t worker) {
    const int64_t chunk = i / blocking.count();
    const Block b = blocking.at(i % blocking.count());
    const at::Tensor acc = into_result ? result_block(b) : partials[i % blocking.count()].select(0, chunk);  // (G', M, K')
    const int64_t ng = b.groups(), kb = b.channels() * p.taps();
    const int64_t first = chunk * tiles.count / chunks, last = (chunk + 1) * tiles.count / chunks;
    for (int64_t k = first; k < last; ++k) {
      const Tile tile = tiles.at(k);
      const int64_t n = tile.positions();
      at::Tensor cols;
      if (!columns_are_input) {
        cols = cl ? buffers.get(worker, 0, {ng, n, kb})
                  : buffers.rows(worker, ng, kb, n, column_row_stride(plan.tuning, n, plan.element_size));
        im2col_block(backend, p, x, tile, b, cols);
      }
      if (plan.image_gemms && tile.nb > 1) {
        // several images (1x1 on views, or large images' columns): per group, one GEMM per image,
        // batched, into each image's product (in the sums' type), then the images' products summed (an
        // ATen reduction: no TF32, a fixed order) into the block's sum
        const int64_t block_elems = ng * M * kb;
        const at::Tensor products =
            image_space.tensor().narrow(0, 0, tile.nb * block_elems).view({tile.nb, ng, M, kb});
        for (int64_t g = b.g0; g < b.g1; ++g) {
          const at::Tensor images = columns_are_input ? images_view(p, x, tile, cg, g, 0, cg)
                                                      : image_columns(cols.select(0, g - b.g0), tile.nb);
          backend.bmm(images_view(p, gy, tile, M, g, 0, M), images.transpose(1, 2), products.select(1, g - b.g0),
                      false);
        }
        // the first tile's sum straight into the block's, a later one's into the slot after the products
        at::Tensor sum = k == first ? acc
                                    : image_space.tensor()
                                          .narrow(0, plan.image_product_elems - block_elems, block_elems)
                                          .view({ng, M, kb});
        at::sum_out(sum, products, 0);
        if (k > first) {
          acc.add_(sum);
        }
        continue;
      }
      if (columns_are_input) {
        cols = pointwise_view(p, x, tile, b);
      }
      const at::Tensor gym = grad_output_matrix(p, gy, tile, b.g0, ng, [&] {
        return buffers.get(worker, plan.scratch_offset(), {ng, M, n});
      });
      // (G', M, P) @ (G', P, K')
      const at::Tensor lhs = cl ? gym.transpose(1, 2) : gym;
      const at::Tensor rhs = cl ? cols : cols.transpose(1, 2);
      if (plan.product_elems > 0) {  // reduced precision: the product in the dtype, added in float
        const at::Tensor part = buffers.get(worker, plan.product_offset(), {ng, M, kb});
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
  const ConvGeometry& g = p.geom;
  const at::Tensor result = cl ? gw.view({p.out_channels, g.kernel_d, g.kernel_h, g.kernel_w, cg}).permute({0, 4, 1, 2, 3})
                               : gw.view({p.out_channels, cg, g.kernel_d, g.kernel_h, g.kernel_w});
  return result.to(x.scalar_type());
}


} // namespace myconv::detail
