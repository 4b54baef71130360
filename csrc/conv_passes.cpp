// The three passes over column tiles (see conv_passes.h for the matrices and
// the work items).
#include "conv_passes.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "myconv/ops.h"
#include "tile_matrices.h"
#include "workspace.h"

namespace myconv::detail {

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
  const at::Tensor wt = cl ? w.transpose(1, 2) : at::Tensor();  // (G, K, M)
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
  // one tile's columns, (G, K, P) rows column_row_stride apart, or (G, P, K) channels-last
  const int64_t column_elems = columns_are_input ? 0 : G * K * (cl ? P : column_row_stride(t, P, es));
  const int64_t scratch_elems = output_in_place ? 0 : G * mb * P;  // one item's GEMM result

  // The GEMM of output channels [m0, m0 + rows) of every group for a tile.
  const auto gemm_item = [&](const Tile& tile, const at::Tensor& cols, int64_t m0, int64_t rows,
                             const at::Tensor& scratch) {
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
      return pointwise_view(p, x, tile, all);
    }
    const int64_t n = tile.positions();
    const at::Tensor cols = cl ? part(buffer, 0, 0, G * n * K).view({G, n, K})
                               : column_matrix(buffer, G, K, n, column_row_stride(t, n, es));
    im2col_block(backend, p, x, tile, all, cols);
    return cols;
  };

  if (mblocks == 1) {
    const int64_t elems = column_elems + scratch_elems;
    const int64_t workers = workers_for(t.workers, plan.count, aligned_elements(elems, x.options()) * es);
    const WorkerBuffers buffers(workers, elems, x.options());
    backend.run_items(plan.count, workers, [&](int64_t i, int64_t worker) {
      const Tile tile = plan.at(i);
      const int64_t n = tile.positions();
      const at::Tensor cols = tile_columns(tile, column_elems ? buffers.get(worker, 0, {column_elems}) : at::Tensor());
      gemm_item(tile, cols, 0, M, scratch_elems ? buffers.get(worker, column_elems, {G * M * n}) : at::Tensor());
    });
    return;
  }

  // Waves of tiles whose columns take at most half the workspace, and at
  // most kMaxWaveBytes.
  const int64_t column_stride = aligned_elements(column_elems, x.options());
  const int64_t wave_bytes = std::min(workspace_limit_bytes() / 2, kMaxWaveBytes);
  const int64_t wave = std::clamp<int64_t>(wave_bytes / std::max<int64_t>(1, column_stride * es), 1, plan.count);
  const Workspace shared_columns(wave * column_stride, x.options());
  const at::Tensor& shared = shared_columns.tensor();
  const int64_t workers =
      workers_for(t.workers, wave * mblocks, aligned_elements(scratch_elems, x.options()) * es, wave * column_stride * es);
  const WorkerBuffers buffers(workers, scratch_elems, x.options());
  std::vector<at::Tensor> cols(wave);
  for (int64_t first = 0; first < plan.count; first += wave) {
    const int64_t count = std::min(wave, plan.count - first);
    for (int64_t j = 0; j < count; ++j) {
      const Tile tile = plan.at(first + j);
      cols[j] = tile_columns(tile, column_elems ? shared.narrow(0, j * column_stride, column_elems) : at::Tensor());
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
  const int64_t P = plan.max_positions(), es = gy.element_size();
  const Block widest = blocking.at(0);
  const int64_t column_elems = columns_are_grad_input ? 0
                                                      : widest.groups() * widest.channels() * p.taps() *
                                                            (cl ? P : column_row_stride(t, P, es));
  const int64_t elems = column_elems + (gather_gy ? widest.groups() * M * P : 0);
  const int64_t items = plan.sequences() * blocking.count();
  const int64_t workers = workers_for(t.workers, items, aligned_elements(elems, gy.options()) * gy.element_size(), packed);
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
      const at::Tensor cols = cl ? buffers.get(worker, 0, {ng, n, kb})
                                 : buffers.rows(worker, ng, kb, n, column_row_stride(t, n, es));
      cl ? backend.bmm(gym, wb, cols, false) : backend.bmm(wb.transpose(1, 2), gym, cols, false);
      col2im_block(backend, p, cols, tile, b, gi, /*accumulate=*/k > first);
    }
  });
}

// Returns grad_weight as (C_out, C_in/G, kD, kH, kW), laid out in the problem's
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
  const int64_t column_elems =
      columns_are_input ? 0 : widest.groups() * kb_max * (cl ? P : column_row_stride(t, P, x.element_size()));
  const int64_t gy_elems = gather_gy ? widest.groups() * M * P : 0;
  const int64_t elems = column_elems + gy_elems + (reduced ? widest.groups() * M * kb_max : 0);
  const int64_t items = chunks * blocking.count();
  const int64_t workers =
      workers_for(t.workers, items, aligned_elements(elems, x.options()) * x.element_size(), partial_bytes);
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
        cols = cl ? buffers.get(worker, 0, {ng, n, kb})
                  : buffers.rows(worker, ng, kb, n, column_row_stride(t, n, x.element_size()));
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
  const ConvGeometry& g = p.geom;
  const at::Tensor result = cl ? gw.view({p.out_channels, g.kernel_d, g.kernel_h, g.kernel_w, cg}).permute({0, 4, 1, 2, 3})
                               : gw.view({p.out_channels, cg, g.kernel_d, g.kernel_h, g.kernel_w});
  return result.to(x.scalar_type());
}


} // namespace myconv::detail
