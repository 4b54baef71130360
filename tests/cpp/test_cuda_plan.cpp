// The CUDA backend's work plan (csrc/cuda_tuning.h), checked as plain data:
// how a pass is cut into chunks of whole images, and the row stride of the
// column buffers. The plan is a pure function of the problem, the Tuning and
// the workspace limit; no tensor is touched (meta tensors give the sizes).
#include "helpers.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "conv_plan.h"
#include "cuda_tuning.h"
#include "pass_plan.h"

namespace {

using myconv::detail::ConvProblem;
using myconv::detail::cuda_backend_tuning;
using myconv::detail::Layout;
using myconv::detail::plan_tiles;
using myconv::detail::TilePlan;
using myconv::detail::Tuning;
using myconv::detail::Window3d;

constexpr int64_t kLimit = int64_t{256} << 20;  // the default workspace limit

struct Layer {
  int64_t n, c, out, size, kernel;
};

ConvProblem problem(const Layer& l) {
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);
  const at::Tensor x = at::empty({l.n, l.c, 1, l.size, l.size}, meta);
  const at::Tensor w = at::empty({l.out, l.c, 1, l.kernel, l.kernel}, meta);
  const std::vector<int64_t> one{1, 1}, pad{l.kernel / 2, l.kernel / 2};
  return ConvProblem(x, w, Window3d(one, pad, one), 1, Layout::kChannelsFirst);
}

TEST(CudaPlan, ChunksOfWholeImagesFillTheGemmWithoutTakingTheWholeBatchsMemory) {
  const Tuning t = cuda_backend_tuning();
  ASSERT_GT(t.chunk_bytes, 0);
  ASSERT_GT(t.chunk_min_positions, 0);
  struct Want {
    Layer layer;
    int64_t images;  // per chunk
  };
  // bytes a chunk's image takes: (columns' rows + output channels) * positions * 4
  const std::vector<Want> cases = {
      {{32, 64, 64, 56, 3}, 4},    // 8 MB an image: 4 in 32 MiB (12,544 positions), 8 chunks
      {{32, 64, 128, 28, 3}, 11},  // 2.2 MB: 15 fit (4096 positions take 6); 3 chunks of equal size: 11
      {{32, 128, 128, 28, 3}, 8},  // 4 MB: 8 fit (4096 positions take 6); 4 chunks of 8
      {{32, 256, 256, 14, 3}, 16},  // 2 MB: 16 fit, but 4096 positions take 21: 2 chunks of equal size, 16
      {{32, 512, 512, 7, 3}, 32},   // 1 MB: 32 fit: the whole batch
      {{32, 8, 16, 32, 3}, 32},     // the seed layer, 0.36 MB: the whole batch
      {{12, 256, 64, 56, 1}, 6},    // 1x1 256->64: 4 MB, 8 fit; 12 images in 2 chunks of 6
      {{1, 512, 512, 7, 3}, 1},
      {{0, 64, 64, 56, 3}, 1},  // batch 0
  };
  for (const Want& w : cases) {
    const ConvProblem p = problem(w.layer);
    const TilePlan plan = plan_tiles(p, t, 4, kLimit, 64);
    const int64_t L = p.L(), per_image = (p.geom.rows() + p.out_channels) * L * 4;
    EXPECT_EQ(plan.images_per_tile, w.images) << "batch " << w.layer.n << ", " << w.layer.c << " channels, "
                                              << w.layer.size << "^2";
    EXPECT_EQ(plan.tiles_per_image, 1);
    // within the chunk bytes unless that is what 4096 positions take, and never more images than needed
    EXPECT_TRUE(plan.images_per_tile * per_image <= t.chunk_bytes ||
                (plan.images_per_tile - 1) * L < t.chunk_min_positions ||
                plan.images_per_tile == std::max<int64_t>(w.layer.n, 1));
    EXPECT_EQ(plan.count, w.layer.n == 0 ? 0 : (w.layer.n + plan.images_per_tile - 1) / plan.images_per_tile);
  }
}

TEST(CudaPlan, TheWorkspaceLimitStillBoundsAChunk) {
  const ConvProblem p = problem({32, 64, 64, 56, 3});  // 8 MB an image
  const TilePlan plan = plan_tiles(p, cuda_backend_tuning(), 4, int64_t{8} << 20, 64);
  EXPECT_EQ(plan.images_per_tile, 1);
  EXPECT_EQ(plan.count, 32);
}

TEST(CudaPlan, ChunksCountTheirPaddedRowsAgainstTheWorkspaceLimit) {
  // 1-D, 64 -> 64 channels, width 1001, k3 p1: 4 images are 4,100,096 bytes of columns and output back to
  // back, but their padded rows (4004 -> 4008 positions) take 4,103,168: 3 images, chunks of equal size
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);
  const ConvProblem p(at::empty({8, 64, 1, 1, 1001}, meta), at::empty({64, 64, 1, 1, 3}, meta),
                      Window3d(std::vector<int64_t>{1}, std::vector<int64_t>{1}, std::vector<int64_t>{1}), 1,
                      Layout::kChannelsFirst);
  const Tuning t = cuda_backend_tuning();
  const TilePlan plan = plan_tiles(p, t, 4, 4 * (64 * 3 + 64) * 1001 * 4, 64);
  EXPECT_EQ(myconv::detail::column_row_stride(t, 4 * 1001, 4), 4008);
  EXPECT_EQ(plan.images_per_tile, 3);
  EXPECT_EQ(plan.count, 3);
  // and their buffer's rounding up to the alignment: 3 images take 3,078,912 bytes (rows of 3008), 752
  // pages of 4096 bytes (the CPU replay's buffers) 3,080,192: under a limit of 3,078,912, chunks of 2
  const int64_t three = (64 * 3 * 3008 + 64 * 3 * 1001) * 4;
  EXPECT_EQ(plan_tiles(p, t, 4, three, 64).images_per_tile, 3);
  EXPECT_EQ(plan_tiles(p, t, 4, three, 4096).images_per_tile, 2);
  EXPECT_EQ(plan_tiles(p, t, 4, three + 4096, 4096).images_per_tile, 3);
}

// A backend for tuning_for's adjustments: it has a Tuning (the CUDA one, as
// changed by a test) and no kernels.
struct TuningOnly final : myconv::detail::Backend {
  Tuning tuning_of_all = cuda_backend_tuning();
  Tuning tuning(const at::Tensor&) const override { return tuning_of_all; }
  void im2col(const at::Tensor&, const myconv::detail::ConvGeometry&, const myconv::detail::ColumnTile&,
              const at::Tensor&, myconv::detail::ColumnLayout) const override {}
  void col2im(const at::Tensor&, myconv::detail::ColumnLayout, const myconv::detail::ColumnTile&,
              const myconv::detail::ConvGeometry&, const at::Tensor&, bool) const override {}
  void bmm(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool) const override {}
  const char* gemm_engine(at::ScalarType, int64_t, int64_t, int64_t) const override { return "none"; }
};

TEST(CudaPlan, ReducedPrecisionIsChunkedLikeFloat32WhereTheGemmWritesFloat32) {
  // grad_weight rounds each chunk's part to the dtype before adding it in float unless the GEMM
  // writes float32 (the CUDA backend's): then float32's images a chunk (chunk_bytes is float32's: half
  // the bytes for 16-bit types, twice for float64); else as few as the workspace allows
  TuningOnly backend;
  const auto meta = at::TensorOptions().device(at::kMeta);
  ASSERT_TRUE(cuda_backend_tuning().float_gemm_results);
  for (const auto dtype : {at::kBFloat16, at::kHalf, at::kFloat, at::kDouble}) {
    const Tuning t = myconv::detail::tuning_for(backend, at::empty({1}, meta.dtype(dtype)));
    EXPECT_EQ(t.chunk_bytes, cuda_backend_tuning().chunk_bytes);
    const int64_t size = static_cast<int64_t>(c10::elementSize(dtype));
    EXPECT_EQ(myconv::detail::chunk_cap(t, size), cuda_backend_tuning().chunk_bytes / 4 * size);
  }
  // a tiny chunk_bytes stays a tiny cap (not 0, the workspace limit's chunks); 0 stays no cap
  Tuning tiny = cuda_backend_tuning();
  tiny.chunk_bytes = 1;
  EXPECT_EQ(myconv::detail::chunk_cap(tiny, 2), 1);
  tiny.chunk_bytes = 0;
  EXPECT_EQ(myconv::detail::chunk_cap(tiny, 8), 0);
  // the profile's 256-channel 14x14 layer, batch 32: 2 chunks of 16 images in float32 and in float16 (32 MiB
  // took float16's whole batch)
  const at::Tensor x16 = at::empty({32, 256, 1, 14, 14}, meta.dtype(at::kHalf));
  const std::vector<int64_t> one{1, 1};
  const ConvProblem p(x16, at::empty({256, 256, 1, 3, 3}, meta.dtype(at::kHalf)), Window3d(one, one, one), 1,
                      Layout::kChannelsFirst);
  EXPECT_EQ(plan_tiles(p, myconv::detail::tuning_for(backend, x16), 2, kLimit, 64).images_per_tile, 16);
  Tuning bytes_of_the_dtype = cuda_backend_tuning();  // (32 MiB of float16 columns)
  bytes_of_the_dtype.chunk_bytes *= 2;
  EXPECT_EQ(plan_tiles(p, bytes_of_the_dtype, 2, kLimit, 64).images_per_tile, 32);
  backend.tuning_of_all.float_gemm_results = false;
  EXPECT_EQ(myconv::detail::tuning_for(backend, at::empty({1}, meta.dtype(at::kBFloat16))).chunk_bytes, 0);
  EXPECT_EQ(myconv::detail::tuning_for(backend, at::empty({1}, meta.dtype(at::kHalf))).chunk_bytes, 0);
  EXPECT_EQ(myconv::detail::tuning_for(backend, at::empty({1}, meta.dtype(at::kFloat))).chunk_bytes,
            cuda_backend_tuning().chunk_bytes);
}

TEST(CudaPlan, WithoutChunkBytesChunksAreAsLargeAsTheWorkspaceLimitAllows) {
  Tuning t = cuda_backend_tuning();
  t.chunk_bytes = 0;
  const ConvProblem p = problem({32, 64, 64, 56, 3});
  EXPECT_EQ(plan_tiles(p, t, 4, kLimit, 64).images_per_tile, 32);  // 256 MiB hold the whole batch
}

TEST(CudaPlan, ChannelsLastInputsRunOnChannelsLastColumns) {
  using myconv::detail::GemmShape;
  using myconv::detail::Pass;
  using myconv::detail::PassPlan;
  using myconv::detail::Path;
  const Tuning t = cuda_backend_tuning();
  const myconv::detail::PlanSettings s{kLimit, 256};
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);
  const std::vector<int64_t> one{1, 1};
  {
    // channels-last columns for ungrouped layers and direct grouped ones (depthwise: either layout);
    // grouped layers that take columns run channels-first (each group's channels-last columns would be
    // a launch of their own); the CPU has them all
    const auto layout = [&](const Tuning& tuning, int64_t c, int64_t out, int64_t groups, bool cl_input) {
      const ConvProblem p(at::empty({2, c, 1, 9, 9}, meta), at::empty({out, c / groups, 1, 3, 3}, meta),
                          Window3d(one, one, one), groups, Layout::kChannelsFirst);
      return myconv::detail::choose_layout(tuning, p, cl_input);
    };
    EXPECT_EQ(layout(t, 64, 64, 1, true), Layout::kChannelsLast);
    EXPECT_EQ(layout(t, 64, 64, 1, false), Layout::kChannelsFirst);
    EXPECT_EQ(layout(t, 64, 64, 64, true), Layout::kChannelsLast);  // depthwise: direct kernels
    EXPECT_EQ(layout(t, 128, 128, 32, true), Layout::kChannelsFirst);  // ResNeXt 32x4d: K = 36
    Tuning cpu;
    cpu.gemm_on_views = cpu.channels_last = true;
    EXPECT_EQ(layout(cpu, 128, 128, 32, true), Layout::kChannelsLast);
  }
  const auto same = [](const GemmShape& a, const GemmShape& b) {
    return a.batch == b.batch && a.m == b.m && a.n == b.n && a.k == b.k;
  };
  {
    // 3x3 64 -> 64 at 56x56, batch 32: chunks of 4 images' (positions, rows) columns, no row padding, every
    // pass one GEMM over the chunk's 12,544 positions, grad_output read in place (no gather)
    const ConvProblem p(at::empty({32, 64, 1, 56, 56}, meta), at::empty({64, 64, 1, 3, 3}, meta),
                        Window3d(one, one, one), 1, Layout::kChannelsLast);
    const int64_t P = 4 * 56 * 56;
    for (const Pass pass : {Pass::kForward, Pass::kGradInput, Pass::kGradWeight}) {
      const PassPlan plan = myconv::detail::plan_pass(pass, p, at::kFloat, t, s);
      EXPECT_EQ(plan.path, Path::kColumns);
      EXPECT_EQ(plan.layout, Layout::kChannelsLast);
      EXPECT_EQ(plan.tiles.images_per_tile, 4);
      EXPECT_EQ(plan.column_elems, P * 64 * 9);
      EXPECT_FALSE(plan.gather_grad_output);
      EXPECT_EQ(plan.scratch_elems, 0);
      EXPECT_EQ(plan.items, pass == Pass::kGradWeight ? 1 : 8);  // grad_weight: the chunks add into one sum
      const GemmShape want = pass == Pass::kForward     ? GemmShape{1, P, 64, 576}
                             : pass == Pass::kGradInput ? GemmShape{1, P, 576, 64}
                                                        : GemmShape{1, 64, 576, P};
      EXPECT_TRUE(same(plan.gemm, want)) << myconv::detail::pass_name(pass);
    }
    EXPECT_TRUE(myconv::detail::plan_pass(Pass::kForward, p, at::kFloat, t, s).output_in_place);
  }
  {
    // 1x1 256 -> 64 at 56x56, batch 12: no columns in any pass; each GEMM covers a chunk's positions at
    // once, grad_weight's too
    const std::vector<int64_t> zero{0, 0};
    const ConvProblem p(at::empty({12, 256, 1, 56, 56}, meta), at::empty({64, 256, 1, 1, 1}, meta),
                        Window3d(one, zero, one), 1, Layout::kChannelsLast);
    for (const Pass pass : {Pass::kForward, Pass::kGradInput, Pass::kGradWeight}) {
      const PassPlan plan = myconv::detail::plan_pass(pass, p, at::kFloat, t, s);
      const int64_t P = plan.tiles.images_per_tile * 56 * 56;
      EXPECT_EQ(plan.path, Path::kGemmOnViews) << myconv::detail::pass_name(pass);
      EXPECT_EQ(plan.workspace_bytes(), 0) << myconv::detail::pass_name(pass);
      const GemmShape want = pass == Pass::kForward     ? GemmShape{1, P, 64, 256}
                             : pass == Pass::kGradInput ? GemmShape{1, P, 256, 64}
                                                        : GemmShape{1, 64, 256, P};
      EXPECT_TRUE(same(plan.gemm, want)) << myconv::detail::pass_name(pass) << " " << plan.gemm.batch << "x"
                                         << plan.gemm.m << "x" << plan.gemm.n << "x" << plan.gemm.k;
    }
  }
}

TEST(CudaPlan, ChunksOfLargeImagesRunTheirGemmsImageByImage) {
  using myconv::detail::Pass;
  using myconv::detail::PassPlan;
  const Tuning t = cuda_backend_tuning();
  ASSERT_EQ(t.image_gemm_min_positions, 2048);
  const myconv::detail::PlanSettings s{kLimit, 64};
  const auto plan = [&](Pass pass, const Layer& l, at::ScalarType dtype = at::kFloat) {
    return myconv::detail::plan_pass(pass, problem(l), dtype, t, s);
  };
  // 3x3 64 -> 64 at 56x56 (3136 positions an image), batch 32, chunks of 4 images: the forward runs one
  // GEMM per image batched over the chunk, into the output in place: its workspace is the columns alone
  // (was + 64 x 12,544 floats of result); grad_input's GEMMs write each image's columns, a matrix an
  // image (was + 3 MiB of gathered grad_output); grad_weight sums the images' 64 x 576 products (4 + 1
  // for the sum of a later chunk: 0.7 MiB, against 3 MiB of gathered grad_output)
  for (const at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    const Layer layer{32, 64, 64, 56, 3};
    const PassPlan forward = plan(Pass::kForward, layer, dtype);
    const PassPlan grad_input = plan(Pass::kGradInput, layer, dtype);
    const PassPlan grad_weight = plan(Pass::kGradWeight, layer, dtype);
    const int64_t es = c10::elementSize(dtype), rows_stride = 4 * 3136;  // (whole sectors already)
    ASSERT_EQ(forward.tiles.images_per_tile, 4);
    EXPECT_TRUE(forward.image_gemms && forward.output_in_place);
    EXPECT_EQ(forward.scratch_elems, 0);
    EXPECT_EQ(forward.workspace_bytes(), 576 * rows_stride * es);
    EXPECT_EQ(forward.gemm.batch, 4);
    EXPECT_EQ(forward.gemm.n, 3136);
    EXPECT_EQ(forward.gemm.calls, 1);
    EXPECT_TRUE(grad_weight.image_gemms);
    EXPECT_FALSE(grad_weight.gather_grad_output);
    EXPECT_EQ(grad_weight.image_product_bytes, 5 * 64 * 576 * 4);  // float32 products in every dtype
    EXPECT_EQ(grad_weight.gemm.k, 3136);
    EXPECT_TRUE(grad_input.image_gemms);
    EXPECT_FALSE(grad_input.gather_grad_output);
    EXPECT_EQ(grad_input.gemm.batch, 4);
    EXPECT_EQ(grad_input.gemm.n, 3136);
    EXPECT_EQ(grad_input.workspace_bytes(), 576 * 4 * 3136 * es);  // a matrix an image (rows whole sectors)
  }
  // smaller images keep the chunk's one GEMM: 128 at 28x28 (784 positions), 256 at 14x14
  for (const Layer& l : {Layer{32, 128, 128, 28, 3}, Layer{32, 256, 256, 14, 3}}) {
    for (const Pass pass : {Pass::kForward, Pass::kGradInput, Pass::kGradWeight}) {
      const PassPlan p = plan(pass, l);
      EXPECT_FALSE(p.image_gemms) << l.size;
      EXPECT_EQ(p.gemm.batch, 1) << l.size;
      EXPECT_EQ(pass == Pass::kGradWeight ? p.gemm.k : p.gemm.n, p.tiles.images_per_tile * l.size * l.size);
    }
  }
  // grad_weight's products where they outgrow the gathered grad_output they replace (a 512-channel 3x3
  // layer at 48x48: 512 x 4608 floats an image against 512 x 2304): gathered
  EXPECT_TRUE(plan(Pass::kForward, {4, 512, 512, 48, 3}).image_gemms);
  EXPECT_FALSE(plan(Pass::kGradWeight, {4, 512, 512, 48, 3}).image_gemms);
  EXPECT_TRUE(plan(Pass::kGradWeight, {4, 512, 512, 48, 3}).gather_grad_output);
}

TEST(CudaPlan, OneByOnePassesWithoutColumnsTakeChunksByTheirOwnBuffers) {
  using myconv::detail::Pass;
  using myconv::detail::PassPlan;
  using myconv::detail::Path;
  const Tuning t = cuda_backend_tuning();
  ASSERT_TRUE(t.view_chunks);
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  const auto plan = [&](Pass pass, int64_t n, int64_t c, int64_t out, int64_t size, Layout layout, const Tuning& tuning,
                        int64_t limit) {
    const ConvProblem p(at::empty({n, c, 1, size, size}, meta), at::empty({out, c, 1, 1, 1}, meta),
                        Window3d(one, zero, one), 1, layout);
    return myconv::detail::plan_pass(pass, p, at::kFloat, tuning, myconv::detail::PlanSettings{limit, 256});
  };
  for (const Layout layout : {Layout::kChannelsFirst, Layout::kChannelsLast}) {
    for (const Pass pass : {Pass::kForward, Pass::kGradInput, Pass::kGradWeight}) {
      // the profile's 256 -> 64 at 56x56, batch 32: 4 chunks of 8 when sized for columns (4 MB an image);
      // now the whole batch (grad_weight: 32 images' 64 KiB products, channels-first; channels-last: one
      // GEMM over the positions, nothing held)
      const PassPlan whole = plan(pass, 32, 256, 64, 56, layout, t, kLimit);
      EXPECT_EQ(whole.path, Path::kGemmOnViews);
      EXPECT_EQ(whole.tiles.images_per_tile, 32) << myconv::detail::pass_name(pass);
      EXPECT_EQ(whole.tiles.count, 1);
      EXPECT_EQ(whole.workspace_bytes(),
                pass == Pass::kGradWeight && layout == Layout::kChannelsFirst ? 32 * 64 * 256 * 4 : 0);
      Tuning off = t;
      off.view_chunks = false;
      EXPECT_EQ(plan(pass, 32, 256, 64, 56, layout, off, kLimit).tiles.images_per_tile, 8);
    }
  }
  {
    // products past chunk_bytes: 512 -> 512 at 20x20 (1 MiB an image), batch 100: 31 of them and the sum's
    // slot fit 32 MiB; 4 chunks of equal size, 25 images
    const PassPlan gw = plan(Pass::kGradWeight, 100, 512, 512, 20, Layout::kChannelsFirst, t, kLimit);
    EXPECT_EQ(gw.path, Path::kGemmOnViews);
    EXPECT_EQ(gw.tiles.images_per_tile, 25);
    EXPECT_EQ(gw.tiles.count, 4);
    EXPECT_EQ(gw.image_product_bytes, 26 * (int64_t{1} << 20));
    EXPECT_EQ(plan(Pass::kForward, 100, 512, 512, 20, Layout::kChannelsFirst, t, kLimit).tiles.images_per_tile, 100);
    // float16: the same chunks (its products are float32, and chunk_bytes float32's); a review found 16-bit
    // products capped at float16's 16 MiB (3 chunks of 11 for 512 -> 512 at 56x56, batch 32)
    const auto meta16 = at::TensorOptions().device(at::kMeta).dtype(at::kHalf);
    const ConvProblem p16(at::empty({32, 512, 1, 56, 56}, meta16), at::empty({512, 512, 1, 1, 1}, meta16),
                          Window3d(one, zero, one), 1, Layout::kChannelsFirst);
    for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      const PassPlan gw16 =
          myconv::detail::plan_pass(Pass::kGradWeight, p16, dtype, t, myconv::detail::PlanSettings{kLimit, 256});
      EXPECT_EQ(gw16.path, Path::kGemmOnViews);
      EXPECT_EQ(gw16.tiles.images_per_tile, 32) << dtype;
    }
    // a workspace limit below one image's products and the slot: single images, each GEMM adding into
    // grad_weight in place (nothing held)
    const PassPlan tiny = plan(Pass::kGradWeight, 100, 512, 512, 20, Layout::kChannelsFirst, t, int64_t{3} << 19);
    EXPECT_EQ(tiny.path, Path::kGemmOnViews);
    EXPECT_EQ(tiny.tiles.images_per_tile, 1);
    EXPECT_EQ(tiny.workspace_bytes(), 0);
  }
  {
    // at most 65,535 images a strided-batched GEMM (channels-first), 2^31 - 1 positions a GEMM
    // (channels-last: one GEMM over the chunk's positions)
    const PassPlan cf = plan(Pass::kForward, 70000, 16, 16, 8, Layout::kChannelsFirst, t, kLimit);
    EXPECT_EQ(cf.tiles.images_per_tile, 35000);
    const PassPlan cl = plan(Pass::kForward, 70000, 16, 16, 256, Layout::kChannelsLast, t, kLimit);
    EXPECT_LE(cl.tiles.images_per_tile * 256 * 256, std::numeric_limits<int32_t>::max());
    EXPECT_EQ(cl.tiles.images_per_tile, 70000 / 3 + 1);
  }
}

} // namespace
