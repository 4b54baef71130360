// The plans of the passes (csrc/pass_plan.h) as plain data: made from the
// problem, the dtype, a Tuning and the settings alone, no tensor touched (meta
// tensors give the sizes). Checked here: the invariants the execution relies
// on (the cut of the work never depends on the thread count, the tiles and
// blocks cover the problem once, the workspace stays within its limit, the
// paths are the ones the shapes call for), for the CPU backend's tuning and
// the CUDA backend's.
#include "helpers.h"

#include <cstdint>
#include <string>
#include <vector>

#include "backend.h"
#include "conv_plan.h"
#include "cuda_tuning.h"
#include "pass_plan.h"
#include "plan_report.h"

namespace {

using myconv::detail::Block;
using myconv::detail::ConvProblem;
using myconv::detail::Layout;
using myconv::detail::Pass;
using myconv::detail::PassPlan;
using myconv::detail::Path;
using myconv::detail::plan_pass;
using myconv::detail::PlanSettings;
using myconv::detail::Tile;
using myconv::detail::Tuning;
using myconv::detail::Window3d;

constexpr Pass kPasses[] = {Pass::kForward, Pass::kGradInput, Pass::kGradWeight};

struct Layer {
  const char* name;
  int64_t n, c, out, size, kernel, stride, groups;
  Layout layout = Layout::kChannelsFirst;
};

ConvProblem problem(const Layer& l) {
  const auto meta = at::TensorOptions().device(at::kMeta).dtype(at::kFloat);
  const at::Tensor x = at::empty({l.n, l.c, 1, l.size, l.size}, meta);
  const at::Tensor w = at::empty({l.out, l.c / l.groups, 1, l.kernel, l.kernel}, meta);
  const std::vector<int64_t> stride{l.stride, l.stride}, pad{l.kernel / 2, l.kernel / 2}, one{1, 1};
  return ConvProblem(x, w, Window3d(stride, pad, one), l.groups, l.layout);
}

// The CPU backend's tuning (as its backend gives it) with `workers` threads.
Tuning cpu_tuning(int64_t workers) {
  const myconv::detail::Backend* cpu = myconv::detail::find_backend(c10::DeviceType::CPU);
  EXPECT_NE(cpu, nullptr);
  Tuning t = cpu->tuning(at::empty({1}, at::TensorOptions().device(at::kMeta)));
  t.workers = workers;
  return t;
}

const std::vector<Layer>& layers() {
  static const std::vector<Layer> all = {
      {"3x3 56^2", 8, 64, 64, 56, 3, 1, 1},
      {"3x3 7^2 deep", 8, 512, 512, 7, 3, 1, 1},
      {"3x3 7^2 batch 1", 1, 512, 512, 7, 3, 1, 1},
      {"1x1 56^2", 8, 256, 64, 56, 1, 1, 1},
      {"1x1 stride 2", 8, 256, 512, 28, 1, 2, 1},
      {"stem 7x7/2", 8, 3, 64, 224, 7, 2, 1},
      {"seed", 10, 8, 16, 32, 3, 1, 1},
      {"tiny images", 32, 16, 32, 4, 3, 1, 1},
      {"depthwise", 8, 128, 128, 28, 3, 1, 128},
      {"groups 4 wide", 4, 256, 256, 14, 3, 1, 4},
      {"channels-last 3x3", 8, 64, 64, 56, 3, 1, 1, Layout::kChannelsLast},
      {"channels-last 3x3 7^2", 2, 256, 256, 7, 3, 1, 1, Layout::kChannelsLast},
      {"channels-last 1x1", 8, 256, 64, 28, 1, 1, 1, Layout::kChannelsLast},
      {"batch 0", 0, 16, 16, 8, 3, 1, 1},
  };
  return all;
}

// Everything of a plan but its workers (and what follows from them): the
// cut, and every buffer's size.
std::string cut_of(const PassPlan& plan) {
  PassPlan c = plan;
  c.workers = 0;
  c.tuning.workers = 0;
  return myconv::detail::plan_summary(c) + " columns=" + std::to_string(c.column_elems) +
         " scratch=" + std::to_string(c.scratch_elems) + " product=" + std::to_string(c.product_elems) +
         " per_worker=" + std::to_string(c.worker_bytes) + " shared=" + std::to_string(c.shared_bytes) +
         " partials=" + std::to_string(c.partial_bytes) + " packed=" + std::to_string(c.packed_bytes) +
         " into_result=" + std::to_string(c.into_result);
}

TEST(PassPlan, TheCutOfTheWorkIsTheSameForEveryThreadCount) {
  const PlanSettings s{int64_t{256} << 20, 4096};
  for (const Layer& l : layers()) {
    const ConvProblem p = problem(l);
    for (const Pass pass : kPasses) {
      for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        const PassPlan one = plan_pass(pass, p, dtype, cpu_tuning(1), s);
        for (const int64_t threads : {2, 3, 8, 64}) {
          const PassPlan many = plan_pass(pass, p, dtype, cpu_tuning(threads), s);
          EXPECT_EQ(cut_of(one), cut_of(many)) << l.name << ", " << threads << " threads";
          EXPECT_LE(many.workers, std::max<int64_t>(1, std::min(threads, many.items))) << l.name;
          EXPECT_GE(many.workers, 1);
        }
      }
    }
  }
}

TEST(PassPlan, TilesCoverEveryOutputPositionOnceAndBlocksEveryChannelOnce) {
  const PlanSettings s{int64_t{256} << 20, 4096};
  for (const Layer& l : layers()) {
    const ConvProblem p = problem(l);
    for (const Tuning& t : {cpu_tuning(2), myconv::detail::cuda_backend_tuning()}) {
      for (const Pass pass : kPasses) {
        const PassPlan plan = plan_pass(pass, p, at::kFloat, t, s);
        if (plan.path == Path::kDirectGrouped) {
          continue;
        }
        std::vector<int> seen(p.batch * p.L(), 0);
        for (int64_t i = 0; i < plan.tiles.count; ++i) {
          const Tile tile = plan.tiles.at(i);
          ASSERT_LE(tile.positions(), plan.tiles.max_positions()) << l.name;
          for (int64_t n = tile.n0; n < tile.n0 + tile.nb; ++n) {
            for (int64_t q = tile.l_begin; q < tile.l_end; ++q) {
              ++seen.at(n * p.L() + q);
            }
          }
        }
        for (const int v : seen) {
          ASSERT_EQ(v, 1) << l.name << ", " << myconv::detail::pass_name(pass);
        }
        std::vector<int> channels(p.geom.channels, 0);
        for (int64_t i = 0; i < plan.blocks.count(); ++i) {
          const Block b = plan.blocks.at(i);
          ASSERT_LE(b.channels(), plan.blocks.at(0).channels()) << "block 0 is the widest (buffers are sized by it)";
          for (int64_t g = b.g0; g < b.g1; ++g) {
            for (int64_t c = b.c0; c < b.c1; ++c) {
              ++channels.at(g * p.group_channels() + c);
            }
          }
        }
        for (const int v : channels) {
          ASSERT_EQ(v, 1) << l.name;
        }
        // the items: every (tile sequence | chunk | tile, block) once
        const int64_t want = pass == Pass::kForward    ? plan.tiles.count * plan.out_blocks
                             : pass == Pass::kGradInput ? plan.tiles.sequences() * plan.blocks.count()
                                                        : plan.chunks * plan.blocks.count();
        EXPECT_EQ(plan.items, p.batch == 0 ? 0 : want) << l.name;  // an empty batch: no work at all
        EXPECT_GE(plan.out_blocks * plan.out_block_rows, p.group_out_channels()) << l.name;
        EXPECT_LT((plan.out_blocks - 1) * plan.out_block_rows, std::max<int64_t>(p.group_out_channels(), 1));
      }
    }
  }
}

TEST(PassPlan, WorkspaceStaysWithinTheLimit) {
  for (const int64_t limit : {int64_t{256} << 20, int64_t{32} << 20, int64_t{8} << 20}) {
    const PlanSettings s{limit, 4096};
    for (const Layer& l : layers()) {
      const ConvProblem p = problem(l);
      for (const Pass pass : kPasses) {
        for (const Tuning& t : {cpu_tuning(2), cpu_tuning(16), myconv::detail::cuda_backend_tuning()}) {
          const PassPlan plan = plan_pass(pass, p, at::kFloat, t, s);
          EXPECT_LE(plan.workspace_bytes(), limit) << l.name << ", " << myconv::detail::plan_summary(plan);
          // a worker's buffer holds what the pass puts in it
          EXPECT_GE(plan.worker_bytes, plan.worker_elems() * plan.element_size) << l.name;
          EXPECT_EQ(plan.worker_bytes % s.buffer_alignment, 0) << l.name;
        }
      }
    }
  }
}

TEST(PassPlan, PathsFollowTheShapes) {
  const PlanSettings s{int64_t{256} << 20, 4096};
  const auto path = [&](const Layer& l, Pass pass, const Tuning& t) {
    return plan_pass(pass, problem(l), at::kFloat, t, s).path;
  };
  const Layer conv3x3{"3x3", 8, 64, 64, 56, 3, 1, 1}, pointwise{"1x1", 8, 256, 64, 56, 1, 1, 1},
      strided{"1x1/2", 8, 256, 512, 28, 1, 2, 1}, depthwise{"dw", 8, 128, 128, 28, 3, 1, 128};
  const Tuning cpu = cpu_tuning(2), cuda = myconv::detail::cuda_backend_tuning();
  for (const Pass pass : kPasses) {
    EXPECT_EQ(path(conv3x3, pass, cpu), Path::kColumns);
    EXPECT_EQ(path(pointwise, pass, cpu), Path::kGemmOnViews);  // the input is the column matrix
    EXPECT_EQ(path(strided, pass, cpu), Path::kColumns);        // a stride: no longer
    EXPECT_EQ(path(depthwise, pass, cpu), Path::kDirectGrouped);
    EXPECT_EQ(path(depthwise, pass, cuda), Path::kDirectGrouped);
    // CUDA: chunks of several images, each pass's GEMMs batched over the images; grad_weight (every
    // image adds into one matrix) writes each image's product and sums them, where those products take
    // fewer bytes than the columns and gathered grad_output: 64 x 256 of them against 320 x 3136 here;
    // 256 x 1024 against 1280 x 196 on a deep layer, which builds columns
    EXPECT_EQ(path(pointwise, pass, cuda), Path::kGemmOnViews);
    EXPECT_EQ(path({"1x1 deep", 8, 1024, 256, 14, 1, 1, 1}, pass, cuda),
              pass == Pass::kGradWeight ? Path::kColumns : Path::kGemmOnViews);
    EXPECT_EQ(path(strided, pass, cuda), Path::kColumns);
    // a chunk of one image (batch 1, or large images): every pass on the tensors themselves
    EXPECT_EQ(path({"1x1 batch 1", 1, 256, 64, 56, 1, 1, 1}, pass, cuda), Path::kGemmOnViews);
    // 7x7 images: a GEMM each would be too narrow, one GEMM over columns
    EXPECT_EQ(path({"1x1 7^2", 8, 256, 64, 7, 1, 1, 1}, pass, cuda), Path::kColumns);
  }
}

TEST(PassPlan, TheCudaPlanIsOneItemPerChunkOnOneWorker) {
  const PlanSettings s{int64_t{256} << 20, 64};
  const Tuning t = myconv::detail::cuda_backend_tuning();
  const ConvProblem p = problem({"3x3 56^2 batch 32", 32, 64, 64, 56, 3, 1, 1});
  for (const Pass pass : kPasses) {
    const PassPlan plan = plan_pass(pass, p, at::kFloat, t, s);
    EXPECT_EQ(plan.workers, 1);
    EXPECT_EQ(plan.tiles.tiles_per_image, 1);
    EXPECT_EQ(plan.tiles.images_per_tile, 4);  // 32 MiB chunks (test_cuda_plan.cpp)
    EXPECT_EQ(plan.blocks.count(), 1);         // all groups in one batched GEMM
    EXPECT_EQ(plan.out_blocks, 1);
    EXPECT_EQ(plan.chunks, 1);
    EXPECT_EQ(plan.items, pass == Pass::kGradWeight ? 1 : plan.tiles.count);
    // rows of columns on 32-byte sectors: 4 * 3136 positions, already whole sectors
    EXPECT_EQ(plan.column_elems, 64 * 9 * 4 * 3136);
  }
}

TEST(PassPlan, SmallBatchesOfDeepLayersCutTheOutputChannelsIntoWaves) {
  const PlanSettings s{int64_t{256} << 20, 4096};
  const ConvProblem p = problem({"3x3 7^2 batch 1", 1, 512, 512, 7, 3, 1, 1});
  const PassPlan plan = plan_pass(Pass::kForward, p, at::kFloat, cpu_tuning(2), s);
  EXPECT_EQ(plan.tiles.count, 1);
  EXPECT_GT(plan.out_blocks, 1);
  EXPECT_GE(plan.out_block_rows, 2 * myconv::detail::kMinBlockRows);
  EXPECT_EQ(plan.wave, 1);
  EXPECT_GT(plan.shared_bytes, 0);  // the columns, shared by the blocks
  EXPECT_EQ(plan.worker_elems(), plan.scratch_elems);
}

TEST(PassPlan, GradWeightSumsChunksIntoPartialsOrStraightIntoTheResult) {
  const PlanSettings s{int64_t{256} << 20, 4096};
  const ConvProblem large = problem({"3x3 56^2", 8, 64, 64, 56, 3, 1, 1});
  const PassPlan chunked = plan_pass(Pass::kGradWeight, large, at::kFloat, cpu_tuning(2), s);
  EXPECT_EQ(chunked.chunks, myconv::detail::kTargetItems);
  EXPECT_FALSE(chunked.into_result);
  EXPECT_EQ(chunked.partial_bytes, chunked.chunks * 64 * 64 * 9 * 4);
  // one chunk, float32: straight into the result; bfloat16: float32 partials and a product buffer
  const ConvProblem one = problem({"tiny", 1, 64, 64, 8, 3, 1, 1});
  const PassPlan direct = plan_pass(Pass::kGradWeight, one, at::kFloat, cpu_tuning(2), s);
  EXPECT_EQ(direct.chunks, 1);
  EXPECT_TRUE(direct.into_result);
  EXPECT_EQ(direct.partial_bytes, 0);
  const PassPlan reduced = plan_pass(Pass::kGradWeight, one, at::kBFloat16, cpu_tuning(2), s);
  EXPECT_FALSE(reduced.into_result);
  EXPECT_EQ(reduced.partial_bytes, 64 * 64 * 9 * 4);
  EXPECT_GT(reduced.product_elems, 0);
  // the CUDA plan's GEMM writes float32: bfloat16 sums straight into the float32 result
  const PassPlan cuda = plan_pass(Pass::kGradWeight, one, at::kBFloat16, myconv::detail::cuda_backend_tuning(),
                                  {int64_t{256} << 20, 64});
  EXPECT_TRUE(cuda.into_result);
  EXPECT_EQ(cuda.partial_bytes, 0);
  EXPECT_EQ(cuda.product_elems, 0);
}

TEST(PassPlan, PlansAreMadeFromTheSettingsTheyAreGiven) {
  // the same problem, two limits: the plan reads the limit it is given, not the process's setting
  const ConvProblem p = problem({"3x3 56^2 batch 32", 32, 64, 64, 56, 3, 1, 1});
  const Tuning t = myconv::detail::cuda_backend_tuning();
  const PassPlan wide = plan_pass(Pass::kForward, p, at::kFloat, t, {int64_t{256} << 20, 64});
  const PassPlan narrow = plan_pass(Pass::kForward, p, at::kFloat, t, {int64_t{8} << 20, 64});
  EXPECT_EQ(wide.tiles.images_per_tile, 4);
  EXPECT_EQ(narrow.tiles.images_per_tile, 1);
  EXPECT_LE(narrow.workspace_bytes(), int64_t{8} << 20);
}

TEST(PassPlan, TheSummaryNamesWhatRuns) {
  const PlanSettings s{int64_t{256} << 20, 4096};
  PassPlan plan = plan_pass(Pass::kGradInput, problem({"1x1", 8, 256, 64, 56, 1, 1, 1}), at::kFloat, cpu_tuning(2), s);
  plan.engine = "blas";
  const std::string line = myconv::detail::plan_summary(plan);
  EXPECT_NE(line.find("grad_input path=gemm_on_views layout=channels_first engine=blas"), std::string::npos) << line;
  EXPECT_NE(line.find("tiles=8(1image*3136pos)"), std::string::npos) << line;
  EXPECT_NE(line.find("workers=2"), std::string::npos) << line;
}

} // namespace

namespace {

// The number after `"key": ` at or after `from` in a JSON text.
int64_t json_number(const std::string& json, const std::string& key, size_t from = 0) {
  const size_t at = json.find("\"" + key + "\": ", from);
  EXPECT_NE(at, std::string::npos) << key;
  return at == std::string::npos ? -1 : std::stoll(json.substr(at + key.size() + 4));
}

TEST(Explain, TheCppApiShowsThePlanACallRuns) {
  const at::Tensor x = at::randn({4, 32, 20, 20}), w = at::randn({48, 32, 3, 3});
  const std::string json = myconv::explain("conv2d", x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1);
  EXPECT_NE(json.find("\"op\": \"conv2d\", \"device\": \"cpu\", \"dtype\": \"float32\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"path\": \"columns\""), std::string::npos);
  // the forward's workspace is the peak the call holds
  myconv::conv2d(x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1);
  EXPECT_EQ(json_number(json, "total", json.find("\"forward\"")), myconv::last_workspace_peak_bytes());
  // meta tensors give the same plans; a 1x1 reads its tensors in place
  EXPECT_EQ(myconv::explain("conv2d", x.to(at::kMeta), w.to(at::kMeta), std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1),
            json);
  const std::string pointwise = myconv::explain("conv2d", x, w.narrow(2, 0, 1).narrow(3, 0, 1).contiguous(),
                                                std::nullopt, {1, 1}, {0, 0}, {1, 1}, 1);
  EXPECT_NE(pointwise.find("\"path\": \"gemm_on_views\""), std::string::npos) << pointwise;
  // a transposed op, output_padding defaulted; a bad op name is an error
  const std::string up = myconv::explain("conv_transpose2d", x, at::randn({32, 8, 4, 4}), std::nullopt, {2, 2},
                                         {1, 1}, {1, 1}, 1);
  EXPECT_NE(up.find("\"op\": \"conv_transpose2d\""), std::string::npos) << up;
  EXPECT_THROW(myconv::explain("conv4d", x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1), c10::Error);
}

} // namespace
