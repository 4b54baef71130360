// The CUDA direct grouped kernels' arithmetic, run on the host: the same
// per-element work (cuda/grouped_elements.h) and the same launch plans
// (cuda/grouped_kernels.h) as the device, through a launcher that runs every
// (block, thread) of the launch grids: forward and grad_input's grid-stride
// loops, grad_weight's block-stride loops with each block's lanes and their
// tree. Checked for 1-D, 2-D and 3-D windows (stride, padding, dilation,
// depthwise, channel multipliers, several input channels per group up to the
// direct threshold, batch 0 and 1, odd sizes), both layouts, against a
// textbook nested-loop reference, the CPU backend's direct kernels and ATen's
// convolution / convolution_backward; in float64 tightly, float32, float16
// and bfloat16 loosely. Coverage: each result element written exactly once,
// and summing exactly the products the textbook definition names; results
// independent of the grid; index arithmetic past 2^31 on sampled elements of
// problems too large to allocate.
#include "helpers.h"
#include "host_grid.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <sstream>
#include <vector>

#include "../../cuda/grouped_kernels.h"
#include "conv_plan.h"
#include "cpu/cpu_kernels.h"

namespace {

using myconv::cuda::GroupedGeom;
using myconv::cuda::kLanes;
using myconv::cuda::kThreads;
using myconv::detail::ConvGeometry;
using myconv_test::f64;

// ---- the host launcher -------------------------------------------------------------

// Elements 0 .. total-1 of Work as a launch's grid would run them (host_grid.h).
template <typename Work, typename Access>
void run_elements(int64_t total, const GroupedGeom& g, Access& io) {
  myconv_test::run_grid<Work>(total, g, io);
}

// Runs the blocks of a reduction launch (`blocks`, or as the device's
// launcher chooses): each block's elements, each element's kLanes lane sums,
// the tree down to Work::outputs sums, their stores at Work::target.
template <typename Work, typename Access>
void run_reductions(int64_t total, const GroupedGeom& g, Access& io, int64_t blocks = 0) {
  using Acc = decltype(Work::partial(g, 0, 0, kLanes, io));
  if (blocks == 0) {
    blocks = myconv::cuda::reduction_blocks_for(total);
  }
  std::vector<Acc> sums(kLanes);
  const int64_t outputs = Work::outputs(g);
  auto element = [&](int64_t e) {
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      sums[lane] = Work::partial(g, e, lane, kLanes, io);
    }
    for (int64_t half = kLanes / 2; half >= outputs; half /= 2) {
      for (int64_t lane = 0; lane < kLanes; ++lane) {  // in parallel on the device: no lane reads one written here
        myconv::cuda::lane_tree_step(sums.data(), lane, half);
      }
    }
    for (int64_t j = 0; j < outputs; ++j) {
      if (const int64_t target = Work::target(g, e, j); target >= 0) {
        io.store(target, sums[j]);
      }
    }
  };
  for (int64_t block = 0; block < blocks; ++block) {
    myconv::cuda::block_stride(block, blocks, total, element);
  }
}

// The launcher of cuda/grouped_kernels.h's launch plans, on the host.
// reduction_blocks != 0: that many blocks for grad_weight instead of the
// device's choice (the result must not change).
struct HostLauncher {
  int64_t reduction_blocks = 0;
  template <typename Work, typename Access>
  void elements(int64_t total, const GroupedGeom& g, const typename Access::In* a, const typename Access::In* b,
                const typename Access::In* c, typename Access::Out* out) const {
    Access io{a, b, c, out};
    run_elements<Work>(total, g, io);
  }
  template <typename Work, typename Access>
  void reductions(int64_t total, const GroupedGeom& g, const typename Access::In* a, const typename Access::In* b,
                  const typename Access::In* c, typename Access::Out* out) const {
    Access io{a, b, c, out};
    run_reductions<Work>(total, g, io, reduction_blocks);
  }
};

// ---- the cases ---------------------------------------------------------------------------

// A grouped convolution over (N, C_in, *spatial) images, 1 to 3 spatial
// dimensions, with per-group K (C_in/groups * taps) within the direct threshold.
struct Case {
  std::vector<int64_t> input;  // N, C_in, *spatial
  int64_t out_channels, groups;
  std::vector<int64_t> kernel, stride, padding, dilation;
  // output positions that do not exist at the end of each axis (grad_input of a
  // transposed convolution with output_padding >= stride)
  std::vector<int64_t> drop = {};
  int64_t dims() const { return static_cast<int64_t>(kernel.size()); }
  int64_t batch() const { return input[0]; }
  int64_t channels() const { return input[1]; }
};

const std::vector<Case> kCases = {
    // 2-D
    {{2, 8, 14, 13}, 8, 8, {3, 3}, {1, 1}, {1, 1}, {1, 1}},                 // depthwise
    {{2, 6, 17, 15}, 6, 6, {3, 5}, {2, 3}, {1, 2}, {2, 1}},                 // strided, dilated
    {{2, 4, 9, 10}, 12, 4, {3, 3}, {1, 1}, {1, 1}, {1, 1}},                 // channel multiplier 3
    {{2, 6, 12, 11}, 6, 6, {3, 3}, {1, 1}, {3, 1}, {1, 2}},                 // padding beyond the kernel
    {{2, 8, 10, 9}, 12, 4, {3, 3}, {2, 2}, {1, 1}, {1, 1}},                 // 2 in, 3 out per group
    {{1, 12, 7, 9}, 4, 4, {1, 3}, {1, 1}, {0, 1}, {1, 1}},                  // 3 in, 1 out per group
    {{3, 6, 5, 7}, 6, 3, {4, 4}, {1, 2}, {2, 2}, {1, 1}},                   // K = 32, the threshold
    {{1, 5, 3, 4}, 5, 5, {3, 3}, {1, 1}, {0, 0}, {1, 1}},                   // batch 1, few positions
    {{0, 4, 6, 6}, 4, 4, {3, 3}, {1, 1}, {1, 1}, {1, 1}},                   // batch 0
    {{2, 6, 9, 8}, 6, 6, {1, 1}, {2, 2}, {0, 0}, {1, 1}},                   // strided 1x1
    {{2, 4, 5, 6}, 8, 4, {2, 2}, {3, 2}, {3, 3}, {1, 1}},                   // stride above the kernel
    {{1, 3, 11, 9}, 3, 3, {5, 5}, {1, 1}, {4, 4}, {1, 1}},                  // full convolution
    {{2, 6, 8, 7}, 6, 6, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}},           // missing last positions
    {{1, 4, 11, 9}, 8, 4, {2, 3}, {3, 2}, {0, 1}, {2, 1}, {1, 0}},
    // 1-D
    {{2, 6, 40}, 6, 6, {3}, {1}, {1}, {2}},
    {{3, 4, 23}, 8, 4, {5}, {2}, {4}, {3}},
    {{1, 16, 31}, 16, 16, {31}, {1}, {15}, {1}},                             // a long kernel
    {{2, 3, 17}, 6, 3, {4}, {3}, {2}, {2}, {1}},
    // 3-D
    {{2, 4, 5, 6, 7}, 4, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}},
    {{1, 6, 7, 5, 6}, 12, 6, {2, 3, 2}, {2, 1, 3}, {0, 2, 1}, {3, 1, 2}},
    {{2, 8, 6, 7, 5}, 6, 2, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}},   // 4 in, 3 out per group: K = 32
    {{1, 3, 4, 5, 6}, 3, 3, {1, 3, 3}, {3, 2, 2}, {0, 1, 1}, {1, 1, 1}},
    {{1, 2, 6, 5, 7}, 4, 2, {3, 2, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 0, 1}},
};

std::string describe(const Case& c, bool channels_last) {
  std::ostringstream out;
  out << "input " << at::IntArrayRef(c.input) << " out_channels " << c.out_channels << " groups " << c.groups
      << " kernel " << at::IntArrayRef(c.kernel) << " stride " << at::IntArrayRef(c.stride) << " padding "
      << at::IntArrayRef(c.padding) << " dilation " << at::IntArrayRef(c.dilation) << " drop "
      << at::IntArrayRef(c.drop) << (channels_last ? " channels-last" : " channels-first");
  return out.str();
}

ConvGeometry geometry(const Case& c) {
  ConvGeometry g(c.channels(), at::IntArrayRef(c.input).slice(2), c.kernel, c.stride, c.padding, c.dilation);
  int64_t* const outs[] = {&g.out_d, &g.out_h, &g.out_w};
  for (size_t i = 0; i < c.drop.size(); ++i) {
    *outs[3 - c.drop.size() + i] -= c.drop[i];
  }
  return g;
}

TEST(CudaGroupedCases, AreWithinTheDirectThreshold) {
  for (const Case& c : kCases) {
    const ConvGeometry g = geometry(c);
    EXPECT_LE(c.channels() / c.groups * g.taps(), myconv::detail::kDirectMaxGroupRows) << describe(c, false);
    EXPECT_EQ(c.channels() % c.groups, 0);
    EXPECT_EQ(c.out_channels % c.groups, 0);
  }
}

at::MemoryFormat format(bool channels_last) {
  return channels_last ? at::MemoryFormat::ChannelsLast3d : at::MemoryFormat::Contiguous;
}

// A 5-D tensor of `sizes` with random entries in `dtype`, in the layout.
at::Tensor random5(at::IntArrayRef sizes, at::ScalarType dtype, bool channels_last) {
  return at::randn(sizes, f64()).to(dtype).contiguous(format(channels_last));
}

std::vector<int64_t> input_sizes(const ConvGeometry& g, int64_t n) {
  return {n, g.channels, g.depth, g.height, g.width};
}
std::vector<int64_t> output_sizes(const ConvGeometry& g, int64_t n, int64_t co) {
  return {n, co, g.out_d, g.out_h, g.out_w};
}
std::vector<int64_t> weight_sizes(const ConvGeometry& g, const Case& c) {
  return {c.out_channels, c.channels() / c.groups, g.kernel_d, g.kernel_h, g.kernel_w};
}

// ---- the textbook reference -----------------------------------------------------------------

// Calls visit(n, o, c, ci, k, out_pixel, in_pixel) for every product of the
// convolution: output (n, o, out_pixel) gets weight (o, ci, k) times input
// (n, c, in_pixel), c = group * cg + ci, pixels flattened (d, h, w).
template <class Visit>
void for_each_product(const ConvGeometry& g, int64_t n_images, int64_t co, int64_t groups, Visit visit) {
  const int64_t cg = g.channels / groups, mg = co / groups;
  for (int64_t n = 0; n < n_images; ++n)
    for (int64_t o = 0; o < co; ++o)
      for (int64_t ci = 0; ci < cg; ++ci)
        for (int64_t kd = 0; kd < g.kernel_d; ++kd)
          for (int64_t kh = 0; kh < g.kernel_h; ++kh)
            for (int64_t kw = 0; kw < g.kernel_w; ++kw)
              for (int64_t od = 0; od < g.out_d; ++od)
                for (int64_t oh = 0; oh < g.out_h; ++oh)
                  for (int64_t ow = 0; ow < g.out_w; ++ow) {
                    const int64_t id = od * g.stride_d - g.pad_d + kd * g.dilation_d;
                    const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
                    const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
                    if (id >= 0 && id < g.depth && ih >= 0 && ih < g.height && iw >= 0 && iw < g.width) {
                      visit(n, o, (o / mg) * cg + ci, ci, (kd * g.kernel_h + kh) * g.kernel_w + kw,
                            (od * g.out_h + oh) * g.out_w + ow, (id * g.height + ih) * g.width + iw);
                    }
                  }
}

// Forward, grad_input and grad_weight by the definition, in float64,
// channels-first; bias may be undefined.
struct Reference {
  at::Tensor out, gi, gw;
};

Reference reference(const ConvGeometry& g, int64_t groups, const at::Tensor& x, const at::Tensor& w,
                    const at::Tensor& bias, const at::Tensor& gy) {
  const int64_t n = x.size(0), co = w.size(0), cg = w.size(1), kk = g.taps();
  const at::Tensor xd = x.to(at::kDouble).contiguous().view({n, g.channels, g.pixels()});
  const at::Tensor wd = w.to(at::kDouble).contiguous().view({co, cg, kk});
  const at::Tensor gyd = gy.to(at::kDouble).contiguous().view({n, co, g.cols()});
  Reference r;
  r.out = at::zeros({n, co, g.cols()}, f64());
  if (bias.defined()) {
    r.out += bias.to(at::kDouble).view({1, co, 1});
  }
  r.gi = at::zeros({n, g.channels, g.pixels()}, f64());
  r.gw = at::zeros({co, cg, kk}, f64());
  auto X = xd.accessor<double, 3>(), W = wd.accessor<double, 3>(), GY = gyd.accessor<double, 3>();
  auto O = r.out.accessor<double, 3>(), GI = r.gi.accessor<double, 3>(), GW = r.gw.accessor<double, 3>();
  for_each_product(g, n, co, groups, [&](int64_t b, int64_t o, int64_t c, int64_t ci, int64_t k, int64_t op, int64_t ip) {
    O[b][o][op] += W[o][ci][k] * X[b][c][ip];
    GI[b][c][ip] += W[o][ci][k] * GY[b][o][op];
    GW[o][ci][k] += GY[b][o][op] * X[b][c][ip];
  });
  r.out = r.out.view({n, co, g.out_d, g.out_h, g.out_w});
  r.gi = r.gi.view({n, g.channels, g.depth, g.height, g.width});
  r.gw = r.gw.view(w.sizes());
  return r;
}

// ---- the kernels against the reference, the CPU backend and ATen ----------------------------

struct Results {
  at::Tensor out, gi, gw;
};

// The three launch plans on the host, results in fresh NaN-filled tensors.
Results run_cuda_plans(const ConvGeometry& g, int64_t groups, bool cl, const at::Tensor& x, const at::Tensor& w,
                       const std::optional<at::Tensor>& bias, const at::Tensor& gy,
                       const HostLauncher& launcher = {}) {
  const auto options = x.options().memory_format(format(cl));
  Results r;
  r.out = at::empty(output_sizes(g, x.size(0), w.size(0)), options).fill_(NAN);
  myconv::cuda::launch_grouped_forward(launcher, x, w, bias, g, groups, cl, r.out);
  r.gi = at::empty(x.sizes(), options).fill_(NAN);
  myconv::cuda::launch_grouped_grad_input(launcher, gy, w, g, groups, cl, r.gi);
  r.gw = at::full(w.sizes(), NAN, w.options());
  myconv::cuda::launch_grouped_grad_weight(launcher, gy, x, g, groups, cl, r.gw);
  return r;
}

Results run_cpu_kernels(const ConvGeometry& g, int64_t groups, bool cl, const at::Tensor& x, const at::Tensor& w,
                        const std::optional<at::Tensor>& bias, const at::Tensor& gy) {
  const auto options = x.options().memory_format(format(cl));
  Results r;
  r.out = at::empty(output_sizes(g, x.size(0), w.size(0)), options).fill_(NAN);
  myconv::detail::grouped_forward_cpu(x, w, bias, g, groups, cl, r.out);
  r.gi = at::empty(x.sizes(), options).fill_(NAN);
  myconv::detail::grouped_grad_input_cpu(gy, w, g, groups, cl, r.gi);
  r.gw = at::full(w.sizes(), NAN, w.options());
  myconv::detail::grouped_grad_weight_cpu(gy, x, g, groups, cl, r.gw);
  return r;
}

// ATen's convolution and its backward on the case's own dimensions.
Results run_aten(const Case& c, const ConvGeometry& g, const at::Tensor& x, const at::Tensor& w,
                 const at::Tensor& bias, const at::Tensor& gy) {
  std::vector<int64_t> in_sizes = c.input, w_sizes = {c.out_channels, c.channels() / c.groups}, out_sizes = {
                                                                                                     c.batch(),
                                                                                                     c.out_channels};
  w_sizes.insert(w_sizes.end(), c.kernel.begin(), c.kernel.end());
  const int64_t outs[] = {g.out_d, g.out_h, g.out_w};
  out_sizes.insert(out_sizes.end(), outs + 3 - c.dims(), outs + 3);
  const at::Tensor xa = x.to(at::kDouble).contiguous().view(in_sizes);
  const at::Tensor wa = w.to(at::kDouble).contiguous().view(w_sizes);
  const at::Tensor gya = gy.to(at::kDouble).contiguous().view(out_sizes);
  const at::Tensor ba = bias.to(at::kDouble);
  Results r;
  switch (c.dims()) {
    case 1:
      r.out = at::conv1d(xa, wa, ba, c.stride, c.padding, c.dilation, c.groups);
      break;
    case 2:
      r.out = at::conv2d(xa, wa, ba, c.stride, c.padding, c.dilation, c.groups);
      break;
    default:
      r.out = at::conv3d(xa, wa, ba, c.stride, c.padding, c.dilation, c.groups);
  }
  const std::vector<int64_t> zeros(c.dims(), 0);
  const auto [gi, gw, gb] = at::convolution_backward(gya, xa, wa, std::nullopt, c.stride,
                                                     c.padding, c.dilation, false, zeros, c.groups,
                                                     {true, true, false});
  r.out = r.out.reshape(output_sizes(g, c.batch(), c.out_channels));
  r.gi = gi.reshape(x.sizes());
  r.gw = gw.reshape(w.sizes());
  return r;
}

TEST(CudaGrouped, Float64MatchesTheReferenceTheCpuKernelsAndAten) {
  for (const bool cl : {false, true}) {
    for (const Case& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.batch();
      const at::Tensor x = random5(input_sizes(g, n), at::kDouble, cl);
      const at::Tensor w = random5(weight_sizes(g, c), at::kDouble, false);
      const at::Tensor bias = at::randn({c.out_channels}, f64());
      const at::Tensor gy = random5(output_sizes(g, n, c.out_channels), at::kDouble, cl);
      const Results ours = run_cuda_plans(g, c.groups, cl, x, w, bias, gy);
      ASSERT_TRUE(ours.out.is_contiguous(format(cl)) && ours.gi.is_contiguous(format(cl)));
      const Reference ref = reference(g, c.groups, x, w, bias, gy);
      const std::string what = describe(c, cl);
      EXPECT_CLOSE(ours.out, ref.out, 1e-14) << "forward, " << what;
      EXPECT_CLOSE(ours.gi, ref.gi, 1e-14) << "grad_input, " << what;
      EXPECT_CLOSE(ours.gw, ref.gw, 1e-14) << "grad_weight, " << what;
      if (n == 0) {
        EXPECT_TRUE(at::equal(ours.gw, at::zeros_like(w))) << "grad_weight of no images, " << what;
      }
      const Results cpu = run_cpu_kernels(g, c.groups, cl, x, w, bias, gy);
      EXPECT_CLOSE(ours.out, cpu.out, 1e-14) << "forward vs the CPU kernel, " << what;
      EXPECT_CLOSE(ours.gi, cpu.gi, 1e-14) << "grad_input vs the CPU kernel, " << what;
      EXPECT_CLOSE(ours.gw, cpu.gw, 1e-14) << "grad_weight vs the CPU kernel, " << what;
      if (c.drop.empty() && n > 0) {  // ATen has no missing positions
        const Results aten = run_aten(c, g, x, w, bias, gy);
        EXPECT_CLOSE(ours.out, aten.out, 1e-13) << "forward vs ATen, " << what;
        EXPECT_CLOSE(ours.gi, aten.gi, 1e-13) << "grad_input vs ATen, " << what;
        EXPECT_CLOSE(ours.gw, aten.gw, 1e-13) << "grad_weight vs ATen, " << what;
      }
    }
  }
}

TEST(CudaGrouped, ReducedPrecisionSumsInFloat) {
  for (const auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const double tol = dtype == at::kFloat ? 2e-6 : (dtype == at::kHalf ? 4e-3 : 2e-2);
    for (const bool cl : {false, true}) {
      for (const Case& c : kCases) {
        const ConvGeometry g = geometry(c);
        const int64_t n = c.batch();
        const at::Tensor x = random5(input_sizes(g, n), dtype, cl);
        const at::Tensor w = random5(weight_sizes(g, c), dtype, false);
        const at::Tensor bias = at::randn({c.out_channels}, f64()).to(dtype);
        const at::Tensor gy = random5(output_sizes(g, n, c.out_channels), dtype, cl);
        const Results ours = run_cuda_plans(g, c.groups, cl, x, w, bias, gy);
        ASSERT_EQ(ours.out.scalar_type(), dtype);
        // the exact sums of the rounded inputs, rounded once: within a rounding
        // or two of the result (float accumulation)
        const Reference ref = reference(g, c.groups, x, w, bias, gy);
        const std::string what = describe(c, cl) + " " + std::string(c10::toString(dtype));
        EXPECT_CLOSE(ours.out, ref.out, tol) << "forward, " << what;
        EXPECT_CLOSE(ours.gi, ref.gi, tol) << "grad_input, " << what;
        EXPECT_CLOSE(ours.gw, ref.gw, tol) << "grad_weight, " << what;
        const Results cpu = run_cpu_kernels(g, c.groups, cl, x, w, bias, gy);
        EXPECT_CLOSE(ours.out, cpu.out, tol) << "forward vs the CPU kernel, " << what;
        EXPECT_CLOSE(ours.gi, cpu.gi, tol) << "grad_input vs the CPU kernel, " << what;
        EXPECT_CLOSE(ours.gw, cpu.gw, tol) << "grad_weight vs the CPU kernel, " << what;
        if (c.drop.empty() && n > 0) {
          const Results aten = run_aten(c, g, x, w, bias, gy);
          EXPECT_CLOSE(ours.gw, aten.gw, tol) << "grad_weight vs ATen, " << what;
        }
      }
    }
  }
}

TEST(CudaGrouped, ReducedPrecisionAccumulatesInFloatNotInTheDtype) {
  // grad_weight of a depthwise 1x1 layer over 2 images of 512 x 1024: 2^20
  // products of 1/64 per weight, 4096 per lane. A lane's running sum in
  // float16 (11 bits) would stall at 32, in bfloat16 (8 bits) at 4; in float
  // every partial sum is exact, and so is the total, 2^14.
  const ConvGeometry g(2, std::vector<int64_t>{512, 1024}, std::vector<int64_t>{1, 1}, std::vector<int64_t>{1, 1},
                       std::vector<int64_t>{0, 0}, std::vector<int64_t>{1, 1});
  for (const auto dtype : {at::kBFloat16, at::kHalf}) {
    const auto options = at::TensorOptions().dtype(dtype);
    const at::Tensor x = at::full({2, 2, 1, 512, 1024}, 1.0 / 64, options), gy = at::ones_like(x);
    const at::Tensor gw = at::empty({2, 1, 1, 1, 1}, options);
    myconv::cuda::launch_grouped_grad_weight(HostLauncher{}, gy, x, g, 2, false, gw);
    EXPECT_TRUE(at::equal(gw, at::full({2, 1, 1, 1, 1}, 16384, options))) << gw.flatten();
  }
}

TEST(CudaGrouped, ResultsDoNotDependOnTheGrid) {
  // grad_weight's elements on 1, 3 or the device's number of blocks: the same
  // bits (each element's lanes and tree are the same whoever runs them).
  for (const Case& c : {kCases[0], kCases[4], kCases[19]}) {
    const ConvGeometry g = geometry(c);
    const at::Tensor x = random5(input_sizes(g, c.batch()), at::kFloat, false);
    const at::Tensor gy = random5(output_sizes(g, c.batch(), c.out_channels), at::kFloat, false);
    const at::Tensor w = random5(weight_sizes(g, c), at::kFloat, false);
    for (const bool cl : {false, true}) {
      const at::Tensor xl = random5(input_sizes(g, c.batch()), at::kFloat, cl);
      const at::Tensor gyl = random5(output_sizes(g, c.batch(), c.out_channels), at::kFloat, cl);
      const Results device = run_cuda_plans(g, c.groups, cl, cl ? xl : x, w, std::nullopt, cl ? gyl : gy);
      for (const int64_t blocks : {1, 3}) {
        const Results other =
            run_cuda_plans(g, c.groups, cl, cl ? xl : x, w, std::nullopt, cl ? gyl : gy, HostLauncher{blocks});
        EXPECT_TRUE(at::equal(device.gw, other.gw)) << blocks << " blocks, " << describe(c, cl);
      }
    }
  }
}

// ---- coverage: which products each element sums ---------------------------------------------

// An element's "sum" as the multiset of the (first, second) offset pairs it
// added: a sum of 64-bit hashes and a count.
struct Gathered {
  uint64_t hash = 0;
  int64_t count = 0;
  Gathered& operator+=(const Gathered& o) {
    hash += o.hash;
    count += o.count;
    return *this;
  }
  bool operator==(const Gathered& o) const { return hash == o.hash && count == o.count; }
};

uint64_t mix(uint64_t v) {  // splitmix64's finaliser
  v ^= v >> 30;
  v *= 0xbf58476d1ce4e5b9ULL;
  v ^= v >> 27;
  v *= 0x94d049bb133111ebULL;
  return v ^ (v >> 31);
}
uint64_t pair_hash(int64_t a, int64_t b) {
  return mix(mix(static_cast<uint64_t>(a) + 0x9e3779b97f4a7c15ULL) ^ static_cast<uint64_t>(b));
}

// Every access checked against the tensors' extents; each result element's
// stores counted.
struct Trace {
  int64_t first_extent, second_extent, result_extent;
  int64_t start_extent;  // forward: the bias (output channels)
  Gathered* results;
  int32_t* stores;
  Gathered start(int64_t o) const {
    EXPECT_TRUE(o >= 0 && o < start_extent) << "bias " << o;
    return {};
  }
  Gathered zero_sum() const { return {}; }
  void add(Gathered& sum, int64_t a, int64_t b) const {
    EXPECT_TRUE(a >= 0 && a < first_extent) << "first operand " << a;
    EXPECT_TRUE(b >= 0 && b < second_extent) << "second operand " << b;
    sum.hash += pair_hash(a, b);
    ++sum.count;
  }
  void store(int64_t i, Gathered sum) const {
    ASSERT_TRUE(i >= 0 && i < result_extent) << "result " << i;
    results[i] = sum;
    ++stores[i];
  }
};

// Offset of element (n, c, pixel) of a (N, C, pixels) tensor in the layout.
int64_t offset_of(int64_t n, int64_t c, int64_t pixel, int64_t channels, int64_t pixels, bool cl) {
  return cl ? (n * pixels + pixel) * channels + c : (n * channels + c) * pixels + pixel;
}

TEST(CudaGroupedCoverage, EachResultWrittenOnceFromExactlyItsProducts) {
  // 32-bit coordinates (as these small problems launch), and 64-bit ones (as
  // problems past 2^31 elements launch) on the same problems
  for (const bool narrow : {true, false})
  for (const bool cl : {false, true}) {
    for (const Case& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.batch(), co = c.out_channels, cg = c.channels() / c.groups, kk = g.taps();
      GroupedGeom k = myconv::cuda::make_grouped_geom(g, n, co, c.groups, cl);
      ASSERT_TRUE(k.narrow);
      k.narrow = narrow;
      const int64_t n_out = n * co * g.cols(), n_in = n * g.channels * g.pixels(), n_w = co * cg * kk;
      std::vector<Gathered> want_out(n_out), want_gi(n_in), want_gw(n_w);
      for_each_product(g, n, co, c.groups,
                       [&](int64_t b, int64_t o, int64_t ch, int64_t ci, int64_t t, int64_t op, int64_t ip) {
        const int64_t yo = offset_of(b, o, op, co, g.cols(), cl), xo = offset_of(b, ch, ip, g.channels, g.pixels(), cl);
        const int64_t wo = (o * cg + ci) * kk + t;
        want_out[yo] += {pair_hash(wo, xo), 1};
        want_gi[xo] += {pair_hash(wo, yo), 1};
        want_gw[wo] += {pair_hash(yo, xo), 1};
      });
      const std::string what = describe(c, cl) + (narrow ? ", 32-bit coordinates" : ", 64-bit coordinates");
      {
        std::vector<Gathered> got(n_out);
        std::vector<int32_t> stores(n_out, 0);
        Trace io{n_w, n_in, n_out, co, got.data(), stores.data()};
        run_elements<myconv::cuda::GroupedForwardWork>(myconv::cuda::grouped_forward_elements(k), k, io);
        EXPECT_TRUE(std::all_of(stores.begin(), stores.end(), [](int32_t s) { return s == 1; }))
            << "forward: an output element not written exactly once, " << what;
        EXPECT_TRUE(got == want_out) << "forward: other products than the definition's, " << what;
      }
      {
        std::vector<Gathered> got(n_in);
        std::vector<int32_t> stores(n_in, 0);
        Trace io{n_w, n_out, n_in, 0, got.data(), stores.data()};
        run_elements<myconv::cuda::GroupedGradInputWork>(myconv::cuda::grouped_grad_input_elements(k), k, io);
        EXPECT_TRUE(std::all_of(stores.begin(), stores.end(), [](int32_t s) { return s == 1; }))
            << "grad_input: an input element not written exactly once, " << what;
        EXPECT_TRUE(got == want_gi) << "grad_input: other products than the definition's, " << what;
      }
      // grad_weight: a lane per position, and (channels-last) runs of 2 to 16 channels' lanes per
      // position, some past the last channel
      for (const int64_t run : cl ? std::vector<int64_t>{1, 2, 4, 8, 16} : std::vector<int64_t>{1}) {
        GroupedGeom kr = myconv::cuda::make_grouped_geom(g, n, co, c.groups, cl, run);
        kr.narrow = narrow;
        // (runs of many lanes may cut even these positions into slices: each (element, slice) stored
        // once, the element's slices together summing its products; kSlicedCases checks each slice's)
        const int64_t slices = myconv::cuda::grouped_grad_weight_slices(kr);
        std::vector<Gathered> got(n_w * slices), summed(n_w);
        std::vector<int32_t> stores(n_w * slices, 0);
        Trace io{n_out, n_in, n_w * slices, 0, got.data(), stores.data()};
        run_reductions<myconv::cuda::GroupedGradWeightWork>(myconv::cuda::grouped_grad_weight_items(kr), kr, io);
        EXPECT_TRUE(std::all_of(stores.begin(), stores.end(), [](int32_t s) { return s == 1; }))
            << "grad_weight: a weight element not written exactly once, " << what << ", runs of " << run;
        for (int64_t e = 0; e < n_w * slices; ++e) {
          summed[e / slices] += got[e];
        }
        EXPECT_TRUE(summed == want_gw) << "grad_weight: other products than the definition's, " << what
                                       << ", runs of " << run;
      }
    }
  }
}

TEST(CudaGroupedCoverage, GradWeightLanesTakeEveryPositionOnceInOrder) {
  // Lane l of an element visits positions l, l + kLanes, ...: over the lanes,
  // each (n, od, oh, ow) once, for position counts around multiples of kLanes
  // and of the axes' sizes (the step's carries).
  for (const std::vector<int64_t>& size : std::vector<std::vector<int64_t>>{
           {1, 1, 1}, {1, 1, 255}, {1, 1, 257}, {1, 16, 16}, {3, 7, 13}, {2, 1, 600}, {5, 3, 1}}) {
    for (const int64_t batch : {1, 3}) {
      const ConvGeometry g(1, size, std::vector<int64_t>{1, 1, 1}, std::vector<int64_t>{1, 1, 1},
                           std::vector<int64_t>{0, 0, 0}, std::vector<int64_t>{1, 1, 1});
      const GroupedGeom k = myconv::cuda::make_grouped_geom(g, batch, 1, 1, false);
      const int64_t total = batch * g.cols();
      struct Visits {
        std::vector<int64_t>* order;
        int64_t zero_sum() const { return 0; }
        void add(int64_t& sum, int64_t y, int64_t x) const {
          EXPECT_EQ(y, x);  // 1x1, stride 1: position p reads pixel p
          order->push_back(y);
          ++sum;
        }
      };
      std::vector<int64_t> seen(total, 0);
      for (int64_t lane = 0; lane < kLanes; ++lane) {
        std::vector<int64_t> order;
        Visits io{&order};
        const int64_t count = myconv::cuda::grouped_grad_weight_partial(k, 0, 1, lane, kLanes, io);
        ASSERT_EQ(count, static_cast<int64_t>(order.size()));
        for (size_t j = 0; j < order.size(); ++j) {
          ASSERT_EQ(order[j], lane + static_cast<int64_t>(j) * kLanes) << "lane " << lane;
          ++seen[order[j]];
        }
      }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int64_t s) { return s == 1; }));
    }
  }
}

TEST(CudaGroupedCoverage, ChannelsLastGradWeightLanesTakeEachChannelAndPositionOnceInOrder) {
  // Runs of `run` channels' lanes per position (channels-last): lane l of the
  // run's item takes channel u * run + l % run and positions l / run, then
  // every kLanes / run; over the items and lanes each (channel, position)
  // once, lanes past the last channel nothing. Depthwise 1x1 over channels-last
  // tensors: position p of channel o reads pixel p of channel o.
  for (const int64_t run : {2, 8, 16, 64}) {
    for (const int64_t channels : {1, 7, 16, 37}) {
      for (const std::vector<int64_t>& size : std::vector<std::vector<int64_t>>{{1, 1, 1}, {1, 3, 41}, {2, 5, 7}}) {
        const int64_t batch = 3;
        const ConvGeometry g(channels, size, std::vector<int64_t>{1, 1, 1}, std::vector<int64_t>{1, 1, 1},
                             std::vector<int64_t>{0, 0, 0}, std::vector<int64_t>{1, 1, 1});
        const GroupedGeom k = myconv::cuda::make_grouped_geom(g, batch, channels, channels, true, run);
        const int64_t slices = myconv::cuda::grouped_grad_weight_slices(k);
        const int64_t total = batch * g.cols(), runs = (channels + run - 1) / run;
        ASSERT_EQ(myconv::cuda::grouped_grad_weight_items(k), runs * slices);
        struct Visits {
          std::vector<std::pair<int64_t, int64_t>>* order;
          int64_t zero_sum() const { return 0; }
          void add(int64_t& sum, int64_t y, int64_t x) const {
            EXPECT_EQ(y, x);
            order->push_back({y, x});
            ++sum;
          }
        };
        std::vector<int64_t> seen(total * channels, 0);
        for (int64_t r = 0; r < runs * slices; ++r) {
          const int64_t u = r / slices, slice = r % slices;
          const int64_t begin = slice * total / slices, end = (slice + 1) * total / slices;
          for (int64_t lane = 0; lane < kLanes; ++lane) {
            std::vector<std::pair<int64_t, int64_t>> order;
            Visits io{&order};
            const int64_t count = myconv::cuda::grouped_grad_weight_partial(k, r, slices, lane, kLanes, io);
            ASSERT_EQ(count, static_cast<int64_t>(order.size()));
            const int64_t o = u * run + lane % run;
            if (o >= channels) {
              EXPECT_EQ(count, 0) << "lane " << lane << " past the last channel";
              continue;
            }
            for (size_t j = 0; j < order.size(); ++j) {
              const int64_t p = begin + lane / run + static_cast<int64_t>(j) * (kLanes / run);
              ASSERT_LT(p, end);
              ASSERT_EQ(order[j].first, p * channels + o) << "run " << run << " item " << r << " lane " << lane;
              ++seen[order[j].first];
            }
          }
          // where lane j's total goes: element (o, 0, tap 0)'s slice; nowhere past the last channel
          for (int64_t j = 0; j < run; ++j) {
            const int64_t o = u * run + j;
            EXPECT_EQ(myconv::cuda::grouped_grad_weight_target(k, r, j), o < channels ? o * slices + slice : -1);
          }
        }
        EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int64_t v) { return v == 1; }))
            << "runs of " << run << ", " << channels << " channels";
      }
    }
  }
}

// ---- index arithmetic past 2^31 ---------------------------------------------------------------

using i128 = __int128;

// Records the offset pairs one element adds, and where it stores.
struct Record {
  std::vector<std::pair<int64_t, int64_t>>* pairs;
  int64_t* stored;
  int64_t start(int64_t) const { return 0; }
  int64_t zero_sum() const { return 0; }
  void add(int64_t& sum, int64_t a, int64_t b) const {
    pairs->push_back({a, b});
    ++sum;
  }
  void store(int64_t i, int64_t) const { *stored = i; }
};

// The sequence of offset pairs an element adds, as an order-sensitive hash,
// a count and the last pair (for sequences too long to keep).
struct Ordered {
  uint64_t hash = 0;
  int64_t count = 0;
  std::pair<int64_t, int64_t> last{-1, -1};
  int64_t zero_sum() const { return 0; }
  void add(int64_t& sum, int64_t a, int64_t b) {
    hash = mix(hash + pair_hash(a, b));
    ++count;
    last = {a, b};
    ++sum;
  }
  bool operator==(const Ordered& o) const { return hash == o.hash && count == o.count && last == o.last; }
};

// A grouped convolution too large to allocate (a window of 3 taps, stride 1,
// padding 1 per axis, or of 2 taps, stride 2, no padding, dilation 1), checked
// on sampled elements: each offset it adds and stores, in its order, computed
// here in 128-bit arithmetic from the definition.
void check_large(int64_t N, int64_t C, int64_t CO, int64_t groups, std::vector<int64_t> size, bool strided,
                 bool cl) {
  const int64_t dims = static_cast<int64_t>(size.size());
  const std::vector<int64_t> kernel(dims, strided ? 2 : 3), stride(dims, strided ? 2 : 1),
      padding(dims, strided ? 0 : 1), dilation(dims, 1);
  const ConvGeometry g(C, size, kernel, stride, padding, dilation);
  const GroupedGeom k = myconv::cuda::make_grouped_geom(g, N, CO, groups, cl);
  ASSERT_FALSE(k.narrow);
  const int64_t cg = C / groups, mg = CO / groups, kk = g.taps();
  const int64_t D = g.depth, H = g.height, W = g.width, OD = g.out_d, OH = g.out_h, OW = g.out_w;
  const int64_t K[3] = {g.kernel_d, g.kernel_h, g.kernel_w}, S[3] = {g.stride_d, g.stride_h, g.stride_w},
                P[3] = {g.pad_d, g.pad_h, g.pad_w};
  const int64_t in_ext[3] = {D, H, W}, out_ext[3] = {OD, OH, OW};
  const auto in_offset = [&](i128 n, i128 c, const i128* at) {
    const i128 pixel = (at[0] * H + at[1]) * W + at[2];
    return cl ? (n * D * H * W + pixel) * C + c : (n * C + c) * D * H * W + pixel;
  };
  const auto out_offset = [&](i128 n, i128 o, const i128* at) {
    const i128 pixel = (at[0] * OH + at[1]) * OW + at[2];
    return cl ? (n * OD * OH * OW + pixel) * CO + o : (n * CO + o) * OD * OH * OW + pixel;
  };
  const std::string what = std::string(cl ? "channels-last" : "channels-first") + (strided ? ", strided" : "");

  // forward: element i is output (n, o, od, oh, ow) in the layout's order
  const int64_t outs = myconv::cuda::grouped_forward_elements(k);
  ASSERT_GT(outs, int64_t{1} << 31) << what;
  for (const int64_t i : {int64_t{0}, (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 12345,
                          outs / 2 + 7, outs - 1}) {
    i128 rest = i, at[3], n, o;
    if (cl) {
      o = rest % CO;
      rest /= CO;
    }
    for (int a = 2; a >= 0; --a) {
      at[a] = rest % out_ext[a];
      rest /= out_ext[a];
    }
    if (!cl) {
      o = rest % CO;
      rest /= CO;
    }
    n = rest;
    std::vector<std::pair<int64_t, int64_t>> pairs, want;
    int64_t stored = -1;
    Record io{&pairs, &stored};
    myconv::cuda::grouped_forward_element(k, i, io);
    for (int64_t kd = 0; kd < K[0]; ++kd)
      for (int64_t kh = 0; kh < K[1]; ++kh)
        for (int64_t kw = 0; kw < K[2]; ++kw) {
          const int64_t tap[3] = {kd, kh, kw};
          i128 in[3];
          bool inside = true;
          for (int a = 0; a < 3; ++a) {
            in[a] = at[a] * S[a] - P[a] + tap[a];
            inside = inside && in[a] >= 0 && in[a] < in_ext[a];
          }
          for (int64_t ci = 0; inside && ci < cg; ++ci) {
            want.push_back({static_cast<int64_t>((o * cg + ci) * kk + (kd * K[1] + kh) * K[2] + kw),
                            static_cast<int64_t>(in_offset(n, o / mg * cg + ci, in))});
          }
        }
    EXPECT_EQ(stored, i) << what;
    EXPECT_EQ(pairs, want) << "forward element " << i << ", " << what;
  }

  // grad_input: element i is input (n, c, d, h, w) in the layout's order
  const int64_t ins = myconv::cuda::grouped_grad_input_elements(k);
  ASSERT_GT(ins, int64_t{1} << 31) << what;
  for (const int64_t i : {int64_t{0}, (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 54321,
                          ins / 3 + 11, ins - 1}) {
    i128 rest = i, at[3], n, c;
    if (cl) {
      c = rest % C;
      rest /= C;
    }
    for (int a = 2; a >= 0; --a) {
      at[a] = rest % in_ext[a];
      rest /= in_ext[a];
    }
    if (!cl) {
      c = rest % C;
      rest /= C;
    }
    n = rest;
    std::vector<std::pair<int64_t, int64_t>> pairs, want;
    int64_t stored = -1;
    Record io{&pairs, &stored};
    myconv::cuda::grouped_grad_input_element(k, i, io);
    const i128 group = c / cg, ci = c % cg;
    for (int64_t kd = 0; kd < K[0]; ++kd)
      for (int64_t kh = 0; kh < K[1]; ++kh)
        for (int64_t kw = 0; kw < K[2]; ++kw) {
          const int64_t tap[3] = {kd, kh, kw};
          i128 out[3];
          bool reads = true;
          for (int a = 0; a < 3; ++a) {
            const i128 offset = at[a] + P[a] - tap[a];
            out[a] = offset >= 0 ? offset / S[a] : -1;
            reads = reads && offset >= 0 && offset % S[a] == 0 && out[a] < out_ext[a];
          }
          for (int64_t j = 0; reads && j < mg; ++j) {
            const i128 o = group * mg + j;
            want.push_back({static_cast<int64_t>((o * cg + ci) * kk + (kd * K[1] + kh) * K[2] + kw),
                            static_cast<int64_t>(out_offset(n, o, out))});
          }
        }
    EXPECT_EQ(stored, i) << what;
    EXPECT_EQ(pairs, want) << "grad_input element " << i << ", " << what;
  }

  // grad_weight: sampled lanes of sampled weight elements (each lane's whole
  // sum over its positions, in order); channels-last, also runs of 8 channels'
  // lanes per position (item e: a run's (u, ci, tap))
  for (const int64_t run : cl ? std::vector<int64_t>{1, 8} : std::vector<int64_t>{1}) {
  const GroupedGeom kr = myconv::cuda::make_grouped_geom(g, N, CO, groups, cl, run);
  ASSERT_FALSE(kr.narrow);
  const int64_t weights = (CO + run - 1) / run * cg * kk;  // (the items before slicing)
  const i128 positions = static_cast<i128>(N) * OD * OH * OW;
  const bool long_lanes = positions > (int64_t{1} << 24);  // few samples of lanes this long
  for (const int64_t e : {int64_t{0}, weights / 2 + 1, weights - 1}) {
    for (const int64_t lane : {int64_t{0}, int64_t{1}, kLanes - 1}) {
      if (long_lanes && !((e == 0 && lane == 0) || (e == weights - 1 && lane == kLanes - 1))) {
        continue;
      }
      Ordered got, want;
      const int64_t count = myconv::cuda::grouped_grad_weight_partial(kr, e, 1, lane, kLanes, got);  // one slice
      EXPECT_EQ(count, got.count);
      const int64_t tap[3] = {e / (K[1] * K[2]) % K[0], e / K[2] % K[1], e % K[2]};
      const i128 o = e / kk / cg * run + lane % run, ci = e / kk % cg, c = o / mg * cg + ci;
      for (i128 p = lane / run; p < positions && o < CO; p += kLanes / run) {
        i128 rest = p, at[3], in[3];
        for (int a = 2; a >= 0; --a) {
          at[a] = rest % out_ext[a];
          rest /= out_ext[a];
        }
        bool inside = true;
        for (int a = 0; a < 3; ++a) {
          in[a] = at[a] * S[a] - P[a] + tap[a];
          inside = inside && in[a] >= 0 && in[a] < in_ext[a];
        }
        if (inside) {
          int64_t unused = 0;
          want.add(unused, static_cast<int64_t>(out_offset(rest, o, at)), static_cast<int64_t>(in_offset(rest, c, in)));
        }
      }
      EXPECT_TRUE(got == want) << "grad_weight element " << e << " lane " << lane << ", " << what << ", runs of "
                               << run << ": " << got.count << " products, " << want.count << " wanted";
    }
  }
  }
}

TEST(CudaGroupedKernels, IndexArithmeticPast2To31WithoutAllocating) {
  for (const bool cl : {false, true}) {
    // depthwise, many channels of small images: 2 * 2^20 * 64 * 72 = 9.7e9 elements
    check_large(2, int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 20, {64, 72}, false, cl);
    // channel multiplier 2, 3 in per group, strided
    check_large(3, 3 << 18, 2 << 18, 1 << 18, {96, 80}, true, cl);
    // 3-D, 2 in and 2 out per group
    check_large(2, 60000, 60000, 30000, {40, 30, 24}, false, cl);
    // 1-D: long rows, few channels (2 in, 2 out per group): 2.4e9 elements, 6e8 positions
    check_large(2, 4, 4, 2, {300000000}, false, cl);
  }
}

} // namespace

// ---- grad_weight's slices of the output positions --------------------------------------------

namespace {

// Few weight elements over many output positions: grad_weight cuts the
// positions into slices (grouped_grad_weight_slices), a block per (element,
// slice), then adds each element's slice sums in order.
const std::vector<Case> kSlicedCases = {
    {{4, 4, 64, 64}, 4, 4, {3, 3}, {1, 1}, {1, 1}, {1, 1}},            // depthwise: 16,384 positions, 4 slices
    {{8, 2, 50, 70}, 4, 2, {3, 3}, {2, 1}, {1, 1}, {1, 2}},            // multiplier 2, strided, dilated
    {{5, 2, 9001}, 2, 2, {3}, {1}, {1}, {1}},                            // 1-D: 45,005 positions, 10 uneven slices
    {{2, 2, 9, 40, 50}, 2, 2, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 1}},  // 3-D, missing positions
};

TEST(CudaGroupedSlices, CountFollowsTheProblemAlone) {
  const auto slices = [](int64_t n, int64_t c, std::vector<int64_t> size, int64_t k, int64_t run = 1) {
    const std::vector<int64_t> kernel(size.size(), k), one(size.size(), 1), pad(size.size(), k / 2);
    const ConvGeometry g(c, size, kernel, one, pad, one);
    return myconv::cuda::grouped_grad_weight_slices(myconv::cuda::make_grouped_geom(g, n, c, c, run > 1, run));
  };
  // depthwise 3x3, 32 channels at 56x56, batch 32: 288 weight elements, 100,352 positions: 15 slices
  // (4,320 blocks; 24 would keep 4,096 positions each)
  EXPECT_EQ(slices(32, 32, {56, 56}, 3), 15);
  // 128 channels at 28x28: 1,152 elements, 25,088 positions: 4 slices (6 by length)
  EXPECT_EQ(slices(32, 128, {28, 28}, 3), 4);
  // 512 channels at 7x7: enough blocks already
  EXPECT_EQ(slices(32, 512, {7, 7}, 3), 1);
  // few positions: one slice of them all, whatever the elements
  EXPECT_EQ(slices(1, 1, {60, 60}, 3), 1);
  // long and narrow: at most kMaxSlices
  EXPECT_EQ(slices(64, 1, {512, 512}, 1), myconv::cuda::kMaxSlices);
  // no images
  EXPECT_EQ(slices(0, 4, {56, 56}, 3), 1);
  // channels-last, float32's runs of 8 channels: 4 runs x 9 taps = 36 blocks before slicing; each of a
  // block's 32 position lanes keeps 16 positions with 196 slices (by length), 114 give 4,096 blocks: 64
  // at most (2,304 blocks)
  EXPECT_EQ(slices(32, 32, {56, 56}, 3, 8), 64);
  // 128 channels at 28x28, runs of 16: 72 blocks, 98 slices by length, 57 by blocks
  EXPECT_EQ(slices(32, 128, {28, 28}, 3, 16), 57);
  // at most 2 * kSliceTargetBlocks items with several slices (their sums' buffer: run accumulators each)
  for (const int64_t run : {1, 8}) {
    for (const int64_t channels : {1, 2, 3, 7, 100, 454, 455, 456, 1000}) {
      const int64_t s = slices(64, channels, {128, 128}, 3, run), blocks = (channels + run - 1) / run * 9;
      EXPECT_TRUE(s == 1 || blocks * s < 2 * myconv::cuda::kSliceTargetBlocks) << channels << " channels";
    }
  }
}

TEST(CudaGroupedSlices, LanesOfTheSlicesTakeEveryPositionOnceInOrder) {
  for (const int64_t slices : {1, 2, 3, 7, 64}) {
    for (const int64_t width : {255, 4096, 10007}) {
      const ConvGeometry g(1, std::vector<int64_t>{width}, std::vector<int64_t>{1}, std::vector<int64_t>{1},
                           std::vector<int64_t>{0}, std::vector<int64_t>{1});
      const GroupedGeom k = myconv::cuda::make_grouped_geom(g, 3, 1, 1, false);
      const int64_t total = 3 * width;
      struct Visits {
        std::vector<int64_t>* order;
        int64_t zero_sum() const { return 0; }
        void add(int64_t& sum, int64_t y, int64_t) const {
          order->push_back(y);
          ++sum;
        }
      };
      std::vector<int64_t> seen(total, 0);
      for (int64_t s = 0; s < slices; ++s) {
        const int64_t begin = s * total / slices, end = (s + 1) * total / slices;
        for (int64_t lane = 0; lane < kLanes; ++lane) {
          std::vector<int64_t> order;
          Visits io{&order};
          const int64_t count = myconv::cuda::grouped_grad_weight_partial(k, s, slices, lane, kLanes, io);
          EXPECT_EQ(count, static_cast<int64_t>(order.size()));
          for (size_t j = 0; j < order.size(); ++j) {
            ASSERT_EQ(order[j], begin + lane + static_cast<int64_t>(j) * kLanes) << "slice " << s << " lane " << lane;
            ASSERT_LT(order[j], end);
            ++seen[order[j]];
          }
        }
      }
      EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int64_t v) { return v == 1; }))
          << slices << " slices of " << total;
    }
  }
}

TEST(CudaGroupedSlices, EachSliceSumsExactlyItsPositionsProducts) {
  // 32-bit item and position arithmetic (as these problems launch) and 64-bit (past 2^31)
  for (const bool narrow : {true, false})
  for (const bool cl : {false, true}) {
    for (const Case& c : kSlicedCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.batch(), co = c.out_channels, cg = c.channels() / c.groups, kk = g.taps();
      for (const int64_t run : cl ? std::vector<int64_t>{1, 4, 16} : std::vector<int64_t>{1}) {
      GroupedGeom k = myconv::cuda::make_grouped_geom(g, n, co, c.groups, cl, run);
      ASSERT_TRUE(k.narrow);
      k.narrow = narrow;
      const int64_t slices = myconv::cuda::grouped_grad_weight_slices(k), total = n * g.cols();
      ASSERT_GT(slices, 1) << describe(c, cl);
      const int64_t n_out = n * co * g.cols(), n_in = n * g.channels * g.pixels(), n_w = co * cg * kk;
      std::vector<Gathered> want(n_w * slices);
      for_each_product(g, n, co, c.groups,
                       [&](int64_t b, int64_t o, int64_t ch, int64_t ci, int64_t t, int64_t op, int64_t ip) {
        const int64_t yo = offset_of(b, o, op, co, g.cols(), cl), xo = offset_of(b, ch, ip, g.channels, g.pixels(), cl);
        const int64_t p = b * g.cols() + op;  // the flattened output position
        int64_t s = 0;
        while ((s + 1) * total / slices <= p) {
          ++s;
        }
        want[((o * cg + ci) * kk + t) * slices + s] += {pair_hash(yo, xo), 1};
      });
      std::vector<Gathered> got(n_w * slices);
      std::vector<int32_t> stores(n_w * slices, 0);
      Trace io{n_out, n_in, n_w * slices, 0, got.data(), stores.data()};
      run_reductions<myconv::cuda::GroupedGradWeightWork>(myconv::cuda::grouped_grad_weight_items(k), k, io);
      EXPECT_TRUE(std::all_of(stores.begin(), stores.end(), [](int32_t v) { return v == 1; }))
          << describe(c, cl) << ", runs of " << run;
      EXPECT_TRUE(got == want) << "a slice summed other products than its positions', " << describe(c, cl)
                               << ", runs of " << run;
      }
    }
  }
}

TEST(CudaGroupedSlices, SlicedGradWeightMatchesTheReferenceTheCpuKernelsAndAtenOnAnyGrid) {
  for (const bool cl : {false, true}) {
    for (const Case& c : kSlicedCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.batch();
      const std::string what = describe(c, cl);
      const at::Tensor x = random5(input_sizes(g, n), at::kDouble, cl);
      const at::Tensor w = random5(weight_sizes(g, c), at::kDouble, false);
      const at::Tensor bias = at::randn({c.out_channels}, f64());
      const at::Tensor gy = random5(output_sizes(g, n, c.out_channels), at::kDouble, cl);
      const Results ours = run_cuda_plans(g, c.groups, cl, x, w, bias, gy);
      EXPECT_CLOSE(ours.gw, reference(g, c.groups, x, w, bias, gy).gw, 1e-13) << what;
      EXPECT_CLOSE(ours.gw, run_cpu_kernels(g, c.groups, cl, x, w, bias, gy).gw, 1e-13) << what;
      if (c.drop.empty()) {
        EXPECT_CLOSE(ours.gw, run_aten(c, g, x, w, bias, gy).gw, 1e-13) << what;
      }
      // float32 and bfloat16: close to float64's sums; the same bits on 1, 3 or 7 blocks
      for (const auto dtype : {at::kFloat, at::kBFloat16}) {
        const at::Tensor xr = x.to(dtype), wr = w.to(dtype), gyr = gy.to(dtype);
        const Results device = run_cuda_plans(g, c.groups, cl, xr, wr, std::nullopt, gyr);
        const Results exact = run_cuda_plans(g, c.groups, cl, xr.to(at::kDouble), wr.to(at::kDouble), std::nullopt,
                                             gyr.to(at::kDouble));
        EXPECT_CLOSE(device.gw.to(at::kDouble), exact.gw, dtype == at::kFloat ? 1e-5 : 1e-2) << dtype << ", " << what;
        for (const int64_t blocks : {1, 3, 7}) {
          EXPECT_TRUE(at::equal(device.gw, run_cuda_plans(g, c.groups, cl, xr, wr, std::nullopt, gyr,
                                                          HostLauncher{blocks}).gw))
              << blocks << " blocks, " << dtype << ", " << what;
        }
      }
    }
  }
}

}  // namespace
