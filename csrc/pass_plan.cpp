// The plans of the three passes (see pass_plan.h; the matrices and the work
// items are described in conv_passes.h).
#include "pass_plan.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

#include "myconv/ops.h"
#include "workspace.h"

namespace myconv::detail {

const char* pass_name(Pass pass) {
  switch (pass) {
    case Pass::kForward:
      return "forward";
    case Pass::kGradInput:
      return "grad_input";
    case Pass::kGradWeight:
      return "grad_weight";
  }
  return "?";
}

const char* path_name(Path path) {
  switch (path) {
    case Path::kDirectGrouped:
      return "direct_grouped";
    case Path::kColumns:
      return "columns";
    case Path::kGemmOnViews:
      return "gemm_on_views";
  }
  return "?";
}

PlanSettings current_plan_settings(c10::DeviceType device) {
  return {workspace_limit_bytes(), buffer_alignment(device)};
}

namespace {

// Elements rounded up to whole buffer alignments.
int64_t aligned(const PlanSettings& s, int64_t elements, int64_t element_size) {
  return aligned_elements(elements, element_size, s.buffer_alignment);
}

// What every plan records: the pass, the problem's layout, the dtype, what it
// was planned with; no work yet.
PassPlan base(Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t, const PlanSettings& s) {
  PassPlan plan;
  plan.pass = pass;
  plan.path = use_direct_grouped(t, p) ? Path::kDirectGrouped : Path::kColumns;
  plan.layout = p.layout;
  plan.dtype = dtype;
  plan.element_size = static_cast<int64_t>(c10::elementSize(dtype));
  plan.tuning = t;
  plan.settings = s;
  plan.out_block_rows = p.group_out_channels();
  plan.blocks = Blocking{p.groups, p.group_channels(), 1, p.group_channels(), true};
  return plan;
}

// What every column pass shares: the tiles, and where the GEMMs may read the
// tensors in place.
PassPlan start(Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t, const PlanSettings& s) {
  PassPlan plan = base(pass, p, dtype, t, s);
  const int64_t es = plan.element_size;
  // 1x1 over tiles of several whole images: a batched GEMM over the images
  // (Tuning::image_batched_views), but for images too small for a GEMM of
  // their own. grad_weight's GEMMs write each image's product (float32 for
  // reduced precision), then summed: only where those products
  // take fewer bytes than the columns and gathered grad_output they replace
  // (out channels fewer than positions, about), for one worker's buffer.
  // (plan_grad_weight: the tile's products and, with several tiles, their
  // sum; within the workspace limit too)
  const int64_t acc_size = is_reduced_precision(dtype) ? 4 : es;
  const int64_t product_bytes = p.out_channels * p.group_channels() * acc_size;
  const bool products_smaller = pass != Pass::kGradWeight ||
                                (t.grad_weight_image_products && t.workers == 1 &&
                                 (!is_reduced_precision(dtype) || t.float_gemm_results) &&
                                 product_bytes < (p.geom.channels + p.out_channels) * p.L() * es);
  const bool image_views = t.gemm_on_views && t.image_batched_views && !p.channels_last() && products_smaller &&
                           p.L() >= kMinViewImagePositions && p.L() * es % kViewImageAlignment == 0;
  // A 1x1 pass that builds no columns (channels-last, or the images batched
  // on views): chunks by its own buffers (Tuning::view_chunks), not by the
  // columns it does not build.
  const bool view_chunks = t.view_chunks && t.tile_bytes <= 0 && p.pointwise() && t.gemm_on_views &&
                           (p.channels_last() || image_views);
  if (view_chunks) {
    const int64_t products = pass == Pass::kGradWeight && !p.channels_last() ? product_bytes : 0;
    // (channels-last: one GEMM over the chunk's positions; channels-first: a GEMM per image)
    const int64_t max_images = p.channels_last()
                                   ? std::numeric_limits<int32_t>::max() / std::max<int64_t>(p.L(), 1)
                                   : kMaxGemmBatch;
    // (the products' cap in their own type: float32 for 16-bit inputs)
    plan.tiles = plan_view_chunks(p, chunk_cap(t, acc_size), products, products, max_images, s.workspace_limit);
  } else {
    plan.tiles = plan_tiles(p, t, es, s.workspace_limit, s.buffer_alignment);
  }
  const bool single = plan.tiles.single_image_tiles();
  const bool in_place = t.gemm_on_views && (p.channels_last() || single);
  const int64_t products_held = plan.tiles.images_per_tile + (plan.tiles.count > 1 ? 1 : 0);
  const bool products_fit =
      products_smaller && (pass != Pass::kGradWeight || products_held * product_bytes <= s.workspace_limit);
  const bool batched_views = image_views && products_fit && plan.tiles.images_per_tile <= kMaxGemmBatch;
  plan.path = p.pointwise() && (in_place || batched_views) ? Path::kGemmOnViews : Path::kColumns;
  // (view chunks: one image's products past the limit take single-image tiles, in place)
  TORCH_INTERNAL_ASSERT(!view_chunks || plan.path == Path::kGemmOnViews);
  // GEMMs image by image (PassPlan::image_gemms): a 1x1 chunk on views;
  // with columns, images of image_gemm_min_positions or more, each image's
  // matrix where tensor-op kernels read it (its positions a multiple of 16
  // bytes); grad_input only where its columns, one matrix an image with its
  // rows padded per image, take no more bytes than the columns and gathered
  // grad_output they replace (which the chunk rule counted); grad_weight
  // only where its products (one more for a later chunk's sum) do
  const int64_t nb = plan.tiles.images_per_tile;
  const bool column_images = plan.path == Path::kColumns && !p.channels_last() && !single &&
                             t.image_gemm_min_positions > 0 && p.L() >= t.image_gemm_min_positions &&
                             p.L() * es % kViewImageAlignment == 0 && nb <= kMaxGemmBatch;
  // (each as charged: a worker's buffer rounded to the alignment, the
  // products exact; against the columns and gathered grad_output they
  // replace, and the limit)
  const int64_t products = products_held * p.out_channels * p.group_rows() * acc_size;
  const int64_t column_elems = p.geom.rows() * column_row_stride(t, nb * p.L(), es);
  const int64_t gathered_elems = p.out_channels * nb * p.L();
  const int64_t replaced_bytes =
      std::min(aligned(s, column_elems + gathered_elems, es) * es, s.workspace_limit);
  const int64_t image_column_bytes = aligned(s, p.geom.rows() * nb * column_row_stride(t, p.L(), es), es) * es;
  const bool fits = pass == Pass::kForward ||
                    (pass == Pass::kGradInput && image_column_bytes <= replaced_bytes) ||
                    (pass == Pass::kGradWeight && t.grad_weight_image_products && t.workers == 1 &&
                     (!is_reduced_precision(dtype) || t.float_gemm_results) &&
                     aligned(s, column_elems, es) * es + products <= replaced_bytes);
  plan.image_gemms = (plan.path == Path::kGemmOnViews && !p.channels_last() && !single) || (column_images && fits);
  plan.gather_grad_output = pass != Pass::kForward && !p.channels_last() && !single &&
                            plan.path == Path::kColumns && !plan.image_gemms;
  return plan;
}

// The columns of a tile of P positions for a block of `channels` channels
// per group of `groups` groups: channels-first rows column_row_stride apart.
int64_t column_elements(const PassPlan& plan, const ConvProblem& p, int64_t groups, int64_t channels) {
  if (plan.path == Path::kGemmOnViews) {
    return 0;
  }
  const int64_t P = plan.tiles.max_positions(), nb = plan.tiles.images_per_tile;
  if (plan.pass == Pass::kGradInput && plan.image_gemms) {  // a matrix an image, its rows padded
    return groups * channels * p.taps() * nb * column_row_stride(plan.tuning, p.L(), plan.element_size);
  }
  return groups * channels * p.taps() *
         (p.channels_last() ? P : column_row_stride(plan.tuning, P, plan.element_size));
}

// Forward. With enough tiles, one item per tile: im2col into the worker's
// buffer, then the GEMM while the columns are in its cache. With fewer than
// kTargetItems / 2 tiles (small batches of small images, deep layers), the
// output channels are cut into blocks of at least 2 * kMinBlockRows as well:
// the columns of a wave of tiles are built first, then every (tile, block)
// GEMM is an item, so that each GEMM still runs on one thread.
void plan_forward(PassPlan& plan, const ConvProblem& p) {
  const Tuning& t = plan.tuning;
  const PlanSettings& s = plan.settings;
  const int64_t G = p.groups, M = p.group_out_channels(), K = p.group_rows(), es = plan.element_size;
  const TilePlan& tiles = plan.tiles;
  const bool in_place = t.gemm_on_views && (p.channels_last() || tiles.single_image_tiles());
  plan.output_in_place = in_place || (tiles.single_image_tiles() && tiles.tiles_per_image == 1) ||
                         plan.path == Path::kGemmOnViews || plan.image_gemms;

  const int64_t count = std::max<int64_t>(tiles.count, 1);  // (no tiles: an empty batch)
  int64_t mblocks = 1;
  if (t.split_work && 2 * count < kTargetItems) {
    mblocks = std::clamp<int64_t>(ceil_div(kTargetItems / 2, count), 1,
                                  std::max<int64_t>(1, M / (2 * kMinBlockRows)));
  }
  const int64_t mb = ceil_div(M, mblocks);
  plan.out_blocks = ceil_div(M, mb);
  plan.out_block_rows = mb;

  const int64_t P = tiles.max_positions();
  plan.column_elems = column_elements(plan, p, G, p.group_channels());
  plan.scratch_elems = plan.output_in_place ? 0 : G * mb * P;
  plan.gemm = p.channels_last() ? GemmShape{G, P, mb, K} : GemmShape{G, mb, P, K};
  if (plan.image_gemms) {
    plan.gemm = GemmShape{tiles.images_per_tile, mb, p.L(), K, G};  // per group, a GEMM per image
  }

  if (plan.out_blocks == 1) {
    plan.items = tiles.count;
    plan.worker_bytes = aligned(s, plan.worker_elems(), es) * es;
    plan.workers = workers_for(t.workers, plan.items, plan.worker_bytes, 0, s.workspace_limit);
    return;
  }
  // Waves of tiles whose columns take at most half the workspace, and at
  // most kMaxWaveBytes.
  plan.wave_stride = aligned(s, plan.column_elems, es);
  const int64_t wave_bytes = std::min(s.workspace_limit / 2, kMaxWaveBytes);
  plan.wave = std::clamp<int64_t>(wave_bytes / std::max<int64_t>(1, plan.wave_stride * es), 1, count);
  plan.shared_bytes = plan.wave * plan.wave_stride * es;
  plan.items = tiles.count * plan.out_blocks;
  plan.worker_bytes = aligned(s, plan.worker_elems(), es) * es;  // the scratch alone
  plan.workers = workers_for(t.workers, plan.wave * plan.out_blocks, plan.worker_bytes, plan.shared_bytes,
                             s.workspace_limit);
}

void plan_grad_input(PassPlan& plan, const ConvProblem& p) {
  const Tuning& t = plan.tuning;
  const PlanSettings& s = plan.settings;
  const int64_t M = p.group_out_channels(), es = plan.element_size;
  const bool cl = p.channels_last();
  // Channels-last blocks of part of a group's channels need packed weight
  // columns: only when those fit a quarter of the workspace.
  const int64_t weight_bytes = p.out_channels * p.group_rows() * es;
  plan.blocks = plan_blocks(p, t, plan.tiles.sequences(), /*split_channels=*/!cl || weight_bytes <= s.workspace_limit / 4);
  // (block_weight copies a block's columns unless they are contiguous already:
  // one output channel of a 1x1 kernel a group)
  for (int64_t i = 0; i < plan.blocks.count() && cl && M * p.taps() > 1; ++i) {
    const Block b = plan.blocks.at(i);
    if (b.channels() != p.group_channels()) {
      plan.packed_bytes += b.groups() * M * p.taps() * b.channels() * es;
    }
  }
  const Block widest = plan.blocks.at(0);
  const int64_t P = plan.tiles.max_positions();
  plan.column_elems = column_elements(plan, p, widest.groups(), widest.channels());
  plan.scratch_elems = plan.gather_grad_output ? widest.groups() * M * P : 0;
  plan.items = plan.tiles.sequences() * plan.blocks.count();
  plan.worker_bytes = aligned(s, plan.worker_elems(), es) * es;
  plan.workers = workers_for(t.workers, plan.items, plan.worker_bytes, plan.packed_bytes, s.workspace_limit);
  const int64_t kb = widest.channels() * p.taps();
  plan.gemm = cl ? GemmShape{widest.groups(), P, kb, M} : GemmShape{widest.groups(), kb, P, M};
  if (plan.image_gemms) {
    plan.gemm = GemmShape{plan.tiles.images_per_tile, kb, p.L(), M, widest.groups()};  // per group, a GEMM per image
  }
}

void plan_grad_weight(PassPlan& plan, const ConvProblem& p) {
  const Tuning& t = plan.tuning;
  const PlanSettings& s = plan.settings;
  const int64_t G = p.groups, M = p.group_out_channels(), K = p.group_rows(), es = plan.element_size;
  const bool cl = p.channels_last();
  const bool reduced = is_reduced_precision(plan.dtype);
  const int64_t acc_size = reduced ? 4 : es;

  // Chunks of tiles, each summed into its own partial matrix (the partials
  // are added in chunk order), while there are fewer than kTargetItems items,
  // the partials fit a quarter of the workspace and each chunk sums
  // kMinChunkPositions positions; then blocks of columns. With one chunk,
  // each block's item accumulates straight into grad_weight (float32 partials
  // for reduced precision; and channels-last blocks of part of a group's
  // channels, which are no matrix of grad_weight, only when partials fit).
  const int64_t gw_bytes = G * M * K * acc_size;
  const int64_t room = std::min(s.workspace_limit / 4, kMaxPartialBytes);
  int64_t chunks = 1;
  if (t.split_work) {
    // each chunk sums at least kMinChunkPositions positions: fewer, larger
    // partials where the weight is large next to the work (deep layers)
    const int64_t by_work = std::max<int64_t>(1, p.batch * p.L() / kMinChunkPositions);
    chunks = std::clamp<int64_t>(kTargetItems, 1,
                                 std::min({std::max<int64_t>(plan.tiles.count, 1),
                                           std::max<int64_t>(1, room / std::max<int64_t>(gw_bytes, 1)), by_work}));
  }
  plan.chunks = chunks;
  // each image's product (image_gemms): blocks of whole groups, whose sums
  // are whole matrices of grad_weight
  const bool image_products = plan.image_gemms;
  plan.blocks = plan_blocks(p, t, chunks, /*split_channels=*/!image_products && (!cl || gw_bytes <= room));
  // reduced precision: each GEMM's product in the dtype, added in float, unless
  // the backend's GEMM writes float32 (into the float32 result or partials)
  const bool products_in_dtype = reduced && !t.float_gemm_results;
  plan.into_result = !products_in_dtype && chunks == 1 && !(cl && plan.blocks.splits_channels());
  for (int64_t i = 0; i < plan.blocks.count() && !plan.into_result; ++i) {
    const Block b = plan.blocks.at(i);
    plan.partial_bytes += chunks * b.groups() * M * b.channels() * p.taps() * acc_size;
  }
  const Block widest = plan.blocks.at(0);
  const int64_t kb = widest.channels() * p.taps(), P = plan.tiles.max_positions();
  plan.column_elems = column_elements(plan, p, widest.groups(), widest.channels());
  plan.scratch_elems = plan.gather_grad_output ? widest.groups() * M * P : 0;
  plan.product_elems = products_in_dtype ? widest.groups() * M * kb : 0;
  if (image_products) {
    // the widest block's products of a tile's images, and their sum where a
    // later tile adds it to the block's (one worker: start)
    const int64_t block_elems = widest.groups() * M * kb;
    plan.image_product_elems = plan.tiles.images_per_tile * block_elems + (plan.tiles.count > 1 ? block_elems : 0);
    plan.image_product_bytes = plan.image_product_elems * acc_size;
  }
  plan.items = chunks * plan.blocks.count();
  plan.worker_bytes = aligned(s, plan.worker_elems(), es) * es;
  plan.workers = workers_for(t.workers, plan.items, plan.worker_bytes, plan.partial_bytes + plan.image_product_bytes,
                             s.workspace_limit);
  plan.gemm = GemmShape{widest.groups(), M, kb, P};
  if (image_products) {
    plan.gemm = GemmShape{plan.tiles.images_per_tile, M, kb, p.L(), widest.groups()};  // per group, a GEMM per image
  }
}

} // namespace

PassPlan plan_pass(Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t, const PlanSettings& s) {
  if (p.batch == 0 || p.L() == 0 || p.out_channels == 0 || p.geom.channels == 0) {
    // nothing to compute: the ops return empty or zero results without running the pass
    return base(pass, p, dtype, t, s);
  }
  if (use_direct_grouped(t, p)) {
    PassPlan plan = base(pass, p, dtype, t, s);
    plan.items = 1;  // the backend's kernels, one launch (CPU: parallel inside)
    return plan;
  }
  PassPlan plan = start(pass, p, dtype, t, s);
  switch (pass) {
    case Pass::kForward:
      plan_forward(plan, p);
      break;
    case Pass::kGradInput:
      plan_grad_input(plan, p);
      break;
    case Pass::kGradWeight:
      plan_grad_weight(plan, p);
      break;
  }
  return plan;
}

void name_engine(const Backend& backend, PassPlan& plan) {
  plan.engine = plan.path == Path::kDirectGrouped
                    ? "direct"
                    : backend.gemm_engine(plan.dtype, plan.gemm.m, plan.gemm.n, plan.gemm.k);
}

} // namespace myconv::detail
