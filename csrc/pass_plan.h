// The plan of one pass of a convolution (forward, grad_input, grad_weight),
// made before any work: which path it takes, how its work is cut (tiles,
// blocks of channels or of output channels, partial-sum chunks), how many
// workers share it and what workspace each buffer takes. plan_pass() is a
// pure function of the problem, the dtype, the backend's Tuning and the
// settings (workspace limit, buffer alignment): it allocates nothing and
// touches no tensor, so tests check plans directly. The passes
// (conv_passes.h) walk a plan; myconv.explain() and MYCONV_VERBOSE show it
// (plan_report.h).
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <cstdint>

#include "backend.h"
#include "conv_plan.h"

namespace myconv::detail {

enum class Pass { kForward, kGradInput, kGradWeight };
const char* pass_name(Pass pass);

// How a pass computes:
//  kDirectGrouped  the backend's direct grouped kernels, no columns, no GEMM
//  kColumns        im2col (col2im for grad_input) into column buffers + GEMM
//  kGemmOnViews    1x1 / stride 1 / no padding: the GEMMs read and write the
//                  tensors themselves, no columns
enum class Path { kDirectGrouped, kColumns, kGemmOnViews };
const char* path_name(Path path);

// What the plan reads besides the problem and the Tuning: the process-wide
// settings, read once per call.
struct PlanSettings {
  int64_t workspace_limit = 0;   // bytes (myconv::set_workspace_limit_bytes)
  int64_t buffer_alignment = 64;  // bytes: where the composition's buffers start
};
// The settings now, for buffers on `device` (CPU: page-aligned, workspace.h).
PlanSettings current_plan_settings(c10::DeviceType device);

// The GEMM shape of one work item: `calls` strided-batched GEMMs, each of
// `batch` products of (m x k) @ (k x n) (image_gemms: a call per group, each
// over the tile's images; otherwise one call over the groups).
struct GemmShape {
  int64_t batch = 0, m = 0, n = 0, k = 0, calls = 1;
};

struct PassPlan {
  Pass pass = Pass::kForward;
  Path path = Path::kColumns;
  Layout layout = Layout::kChannelsFirst;
  at::ScalarType dtype = at::kFloat;
  int64_t element_size = 4;
  Tuning tuning;        // as planned with (an autotuned tile size included)
  PlanSettings settings;

  // The cut of the work.
  TilePlan tiles;       // tiles of output positions (or chunks of whole images)
  Blocking blocks;      // grad_input / grad_weight: blocks of input channels
  int64_t out_blocks = 1;      // forward: blocks of output channels per tile
  int64_t out_block_rows = 0;  // forward: output channels of a block (per group)
  int64_t wave = 0;            // forward with out_blocks > 1: tiles whose columns are built at once
  int64_t wave_stride = 0;     // elements from one of the wave's tiles' columns to the next (aligned)
  int64_t chunks = 1;          // grad_weight: partial sums, added in chunk order
  bool into_result = false;    // grad_weight: items add straight into the result (no partials)
  bool output_in_place = false;  // forward: GEMMs write the output itself (no scratch, no copy)
  bool gather_grad_output = false;  // grad_output of multi-image tiles gathered into scratch
  // Channels-first tiles of several whole images whose GEMMs run image by
  // image: a strided-batched call per group over the tile's images, on views
  // of the tensors (1x1 on views; Tuning::image_gemm_min_positions with
  // columns). The forward writes each image's result into the output in
  // place; grad_input reads grad_output in place (with columns: into a
  // matrix of columns an image); grad_weight writes each image's product and
  // sums them.
  bool image_gemms = false;
  int64_t items = 0;    // work items (each independent of the thread count)
  int64_t workers = 1;  // items running at once, each with its own buffers

  // A tile's columns, in elements (in a worker's buffer, or in the shared
  // wave of the forward's blocks of output channels).
  int64_t column_elems = 0;
  // The scratch: the forward's GEMM result, or gathered grad_output; and
  // reduced-precision grad_weight's GEMM result before it is added in float.
  int64_t scratch_elems = 0, product_elems = 0;
  // A worker's buffer: its columns (unless shared), then the scratch, then
  // the product.
  int64_t scratch_offset() const { return wave > 0 ? 0 : column_elems; }
  // grad_weight with image_gemms: each image's product (nb, G', M, K'), in
  // the sums' type, then (with more than one tile) their sum before it is
  // added to the block's (G', M, K').
  int64_t image_product_elems = 0;
  int64_t product_offset() const { return scratch_offset() + scratch_elems; }
  int64_t worker_elems() const { return product_offset() + product_elems; }
  // Workspace bytes, each as charged while the pass runs.
  int64_t worker_bytes = 0;   // one worker's buffer (aligned)
  int64_t shared_bytes = 0;   // forward waves: columns shared by the blocks of output channels
  int64_t partial_bytes = 0;  // grad_weight's partial sums
  int64_t packed_bytes = 0;   // grad_input: packed weight blocks (channels-last blocks of part of a group)
  int64_t image_product_bytes = 0;  // grad_weight: image_product_elems in the sums' type
  int64_t workspace_bytes() const {
    return workers * worker_bytes + shared_bytes + partial_bytes + packed_bytes + image_product_bytes;
  }

  // The GEMM of the widest item, and the engine the backend gives it (named
  // by name_engine from Backend::gemm_engine where the plan is shown: the
  // plan itself is pure, and each GEMM's engine is chosen as it runs).
  // (Static strings: a plan owns no heap memory, a call pays nothing for it.)
  GemmShape gemm;
  const char* engine = "";
  // Autotuning (CPU, opt-in): "off", "tuned" (a cached tile size),
  // "pending" (the next call times the candidates).
  const char* autotune = "off";
};

// The plan of `pass` for problem p in dtype under tuning t and settings s.
PassPlan plan_pass(Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t, const PlanSettings& s);

// Names the engine of the plan's GEMMs (Backend::gemm_engine), or "direct"
// for the direct grouped kernels.
void name_engine(const Backend& backend, PassPlan& plan);

} // namespace myconv::detail
