// conv2d forward and backward against ATen's own convolution, the bad-input
// catalogue, and use from LibTorch through the dispatcher.
#include "helpers.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <thread>
#include <vector>

namespace {

using myconv_test::expect_error;
using myconv_test::f64;

struct Case {
  std::vector<int64_t> input;   // N, C, H, W
  std::vector<int64_t> weight;  // C_out, C_in/groups, kH, kW
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
  bool bias;
};

const std::vector<Case> kCases = {
    {{2, 3, 8, 8}, {4, 3, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {{3, 4, 9, 7}, {6, 2, 3, 2}, {2, 1}, {1, 0}, {1, 2}, 2, true},
    {{1, 6, 10, 11}, {6, 1, 5, 3}, {3, 2}, {2, 1}, {1, 1}, 6, false},  // depthwise
    {{2, 6, 7, 7}, {9, 2, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 3, true},     // 1x1, groups 3
    {{5, 2, 6, 9}, {3, 2, 4, 4}, {1, 3}, {3, 2}, {2, 1}, 1, false},
    {{0, 3, 6, 6}, {2, 3, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},     // empty batch
    {{2, 1, 3, 3}, {2, 1, 3, 3}, {1, 1}, {0, 0}, {1, 1}, 1, true},     // kernel == input
};

at::Tensor maybe_bias(const Case& c, const at::TensorOptions& o) {
  return c.bias ? at::randn({c.weight[0]}, o) : at::Tensor();
}

TEST(Conv2d, ForwardMatchesATen) {
  for (const auto& c : kCases) {
    const at::Tensor x = at::randn(c.input, f64()), w = at::randn(c.weight, f64());
    const at::Tensor b = maybe_bias(c, f64());
    const at::Tensor ours = myconv::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    const at::Tensor ref = at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
    EXPECT_CLOSE(ours, ref, 1e-12);
    // float32 too, against the float64 reference
    const at::Tensor ours32 = myconv::conv2d(x.to(at::kFloat), w.to(at::kFloat),
                                             c.bias ? b.to(at::kFloat) : at::Tensor(), c.stride,
                                             c.padding, c.dilation, c.groups);
    EXPECT_CLOSE(ours32, ref, 1e-5);
  }
}

// Gradients through autograd (the Autograd registration, called from C++)
// against autograd through at::conv2d.
TEST(Conv2d, BackwardMatchesATen) {
  for (const auto& c : kCases) {
    std::vector<at::Tensor> grads[2];
    const at::Tensor x0 = at::randn(c.input, f64()), w0 = at::randn(c.weight, f64());
    const at::Tensor b0 = maybe_bias(c, f64());
    at::Tensor gy;
    for (int impl = 0; impl < 2; ++impl) {
      const at::Tensor x = x0.clone().set_requires_grad(true);
      const at::Tensor w = w0.clone().set_requires_grad(true);
      const at::Tensor b = c.bias ? b0.clone().set_requires_grad(true) : at::Tensor();
      const at::Tensor y = impl == 0
                               ? myconv::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)
                               : at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
      if (!gy.defined()) {
        gy = at::randn_like(y);
      }
      y.backward(gy);
      grads[impl] = {x.grad(), w.grad(), c.bias ? b.grad() : at::zeros({1}, f64())};
    }
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_CLOSE(grads[0][i], grads[1][i], 1e-12) << "gradient " << i;
    }
  }
}

TEST(Conv2d, BackwardOpHonoursOutputMask) {
  const at::Tensor x = at::randn({2, 3, 6, 6}, f64()), w = at::randn({4, 3, 3, 3}, f64());
  const at::Tensor gy = at::randn({2, 4, 4, 4}, f64());
  auto [gi, gw, gb] = myconv::conv2d_backward(gy, x, w, {1, 1}, {0, 0}, {1, 1}, 1, {false, true, false});
  EXPECT_FALSE(gi.defined());
  EXPECT_TRUE(gw.defined());
  EXPECT_FALSE(gb.defined());
  auto [gi2, gw2, gb2] = myconv::conv2d_backward(gy, x, w, {1, 1}, {0, 0}, {1, 1}, 1, {true, false, true});
  EXPECT_TRUE(gi2.defined());
  EXPECT_FALSE(gw2.defined());
  EXPECT_CLOSE(gb2, gy.sum({0, 2, 3}), 1e-14);
}

TEST(Conv2d, SeedExample) {
  const at::Tensor x = at::arange(35, f64()).view({1, 1, 5, 7});
  const at::Tensor w = at::arange(1, 10, f64()).view({1, 1, 3, 3});
  const at::Tensor expected = at::tensor(
      {134., 211., 250., 289., 328., 367., 238., 333., 492., 537., 582., 627., 672., 423.,
       564., 807., 852., 897., 942., 987., 612., 795., 1122., 1167., 1212., 1257., 1302., 801.,
       422., 571., 592., 613., 634., 655., 382.},
      f64());
  EXPECT_TRUE(at::equal(myconv::conv2d(x, w, std::nullopt, {1, 1}, {1, 1}).flatten(), expected));
}

TEST(Conv2d, PaddingSameAndValid) {
  const at::Tensor x = at::randn({2, 4, 9, 8}, f64()), w = at::randn({6, 2, 4, 3}, f64());
  const at::Tensor b = at::randn({6}, f64());
  for (const char* mode : {"same", "valid"}) {
    EXPECT_CLOSE(myconv::conv2d_padding(x, w, b, {1, 1}, mode, {1, 2}, 2),
                 at::conv2d(x, w, b, {1, 1}, mode, {1, 2}, 2), 1e-12)
        << mode;
  }
  expect_error([&] { myconv::conv2d_padding(x, w, b, {2, 1}, "same", {1, 1}, 2); },
               "padding='same' is not supported for strided convolutions");
}

TEST(Conv2d, SmallWorkspaceGivesTheSameResult) {
  const at::Tensor x = at::randn({7, 3, 9, 9}, f64()), w = at::randn({5, 3, 3, 3}, f64());
  const at::Tensor gy = at::randn({7, 5, 9, 9}, f64());
  const at::Tensor y = myconv::conv2d(x, w, std::nullopt, {1, 1}, {1, 1});
  auto [gi, gw, gb] = myconv::conv2d_backward(gy, x, w, {1, 1}, {1, 1}, {1, 1}, 1, {true, true, true});
  const int64_t saved = myconv::workspace_limit_bytes();
  myconv::set_workspace_limit_bytes(3 * 27 * 81 * 8);  // about one image per chunk
  const at::Tensor y2 = myconv::conv2d(x, w, std::nullopt, {1, 1}, {1, 1});
  auto [gi2, gw2, gb2] = myconv::conv2d_backward(gy, x, w, {1, 1}, {1, 1}, {1, 1}, 1, {true, true, true});
  myconv::set_workspace_limit_bytes(saved);
  EXPECT_CLOSE(y2, y, 1e-14);
  EXPECT_CLOSE(gi2, gi, 1e-14);
  EXPECT_CLOSE(gw2, gw, 1e-13);
}

// What a LibTorch program does: find the op by name, call it, differentiate.
TEST(LibTorch, CallsTheOpThroughTheDispatcher) {
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("myconv::conv2d", "")
                      .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                        const std::optional<at::Tensor>&, at::IntArrayRef,
                                        at::IntArrayRef, at::IntArrayRef, int64_t)>();
  const at::Tensor x = at::randn({2, 3, 8, 8}).set_requires_grad(true);
  const at::Tensor w = at::randn({4, 3, 3, 3}).set_requires_grad(true);
  const at::Tensor y = op.call(x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1);
  EXPECT_CLOSE(y, at::conv2d(x, w, {}, 1, 1), 1e-5);
  y.sum().backward();
  ASSERT_TRUE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(x.grad().sizes(), x.sizes());
}

// Every bad argument raises c10::Error (a RuntimeError in Python), never crashes.
TEST(Conv2d, BadInputsThrow) {
  const at::Tensor x = at::randn({2, 3, 8, 8}), w = at::randn({4, 3, 3, 3}), b = at::randn({4});
  auto conv = [&](const at::Tensor& in, const at::Tensor& wt, const at::Tensor& bias,
                  std::vector<int64_t> s, std::vector<int64_t> p, std::vector<int64_t> d, int64_t g) {
    return [=] { myconv::conv2d(in, wt, bias, s, p, d, g); };
  };
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  expect_error(conv(at::randn({3, 8, 8, 1, 1}), w, b, one, zero, one, 1), "expected 3-D (unbatched) or 4-D (batched) input");
  expect_error(conv(at::randn({8, 8}), w, b, one, zero, one, 1), "expected 3-D (unbatched) or 4-D (batched) input");
  expect_error(conv(x, at::randn({4, 3, 3}), b, one, zero, one, 1), "expected 4-D weight");
  expect_error(conv(at::randn({2, 5, 8, 8}), w, b, one, zero, one, 1), "to have 3 channels, but got 5 channels instead");
  expect_error(conv(x, w, b, one, zero, one, 0), "expected groups to be positive, but got groups=0");
  expect_error(conv(x, w, b, one, zero, one, -2), "expected groups to be positive");
  expect_error(conv(at::randn({2, 6, 8, 8}), at::randn({5, 2, 3, 3}), at::Tensor(), one, zero, one, 3), "to be divisible by groups");
  expect_error(conv(x, w, b, {0, 1}, zero, one, 1), "expected stride to be positive, but got stride=[0, 1]");
  expect_error(conv(x, w, b, {1, -1}, zero, one, 1), "expected stride to be positive");
  expect_error(conv(x, w, b, one, zero, {1, 0}, 1), "expected dilation to be positive");
  expect_error(conv(x, w, b, one, {-1, 0}, one, 1), "expected padding to be non-negative, but got padding=[-1, 0]");
  expect_error(conv(x, w, b, {1, 1, 1}, zero, one, 1), "expected stride to be a list of 2 ints");
  expect_error(conv(x, w, b, one, {1}, one, 1), "expected padding to be a list of 2 ints");
  expect_error(conv(at::randn({2, 3, 2, 2}), w, b, one, zero, one, 1), "Kernel size can't be greater than actual input size");
  expect_error(conv(x, w, b, one, zero, {4, 4}, 1), "Kernel size can't be greater than actual input size");
  expect_error(conv(x, w, at::randn({3}), one, zero, one, 1), "expected bias to be 1-D with 4 elements");
  expect_error(conv(x, w, at::randn({4, 1}), one, zero, one, 1), "expected bias to be 1-D with 4 elements");
  expect_error(conv(x.to(at::kDouble), w, b, one, zero, one, 1), "expected input and weight to have the same dtype");
  expect_error(conv(x, w, b.to(at::kDouble), one, zero, one, 1), "expected input and bias to have the same dtype");
  expect_error(conv(x.to(at::kLong), w.to(at::kLong), at::Tensor(), one, zero, one, 1), "floating-point tensor");
  expect_error(conv(x.to(at::kBool), w.to(at::kBool), at::Tensor(), one, zero, one, 1), "floating-point tensor");
  expect_error(conv(x.to(at::kInt), w, b, one, zero, one, 1), "floating-point tensor");
  expect_error(conv(x.to(at::kComplexFloat), w.to(at::kComplexFloat), at::Tensor(), one, zero, one, 1), "floating-point tensor");
  expect_error(conv(x.to(at::kMeta), w, b, one, zero, one, 1), "to be on the same device");
  expect_error(conv(x, at::randn({4, 3, 0, 3}), b, one, zero, one, 1), "expected weight's dimensions");
  expect_error(conv(x, at::randn({0, 3, 3, 3}), at::Tensor(), one, zero, one, 1), "expected weight's dimensions");
  expect_error(conv(at::randn({2, 3, 0, 8}), w, b, one, zero, one, 1), "non-batch dimensions");
  // Sparse tensors have no kernel: the dispatcher refuses them before any check.
  expect_error(conv(x.to_sparse(), w, b, one, zero, one, 1), "Could not run 'myconv::conv2d' with arguments from the 'SparseCPU' backend");
  // An undefined tensor is stopped by autograd before our check; any c10::Error will do.
  expect_error(conv(at::Tensor(), w, b, one, zero, one, 1), "");
}

TEST(Conv2d, BadBackwardInputsThrow) {
  const at::Tensor x = at::randn({2, 3, 8, 8}), w = at::randn({4, 3, 3, 3});
  expect_error([&] { myconv::conv2d_backward(at::randn({2, 4, 5, 6}), x, w, {1, 1}, {0, 0}, {1, 1}, 1, {true, true, true}); },
               "expected grad_output of size [2, 4, 6, 6]");
  expect_error([&] { myconv::conv2d_backward(at::randn({2, 4, 6, 6}, at::kDouble), x, w, {1, 1}, {0, 0}, {1, 1}, 1, {true, true, true}); },
               "expected input and grad_output to have the same dtype");
}

TEST(Im2colCol2im, BadInputsThrow) {
  const at::Tensor x = at::randn({2, 3, 8, 8});
  expect_error([&] { myconv::im2col(x, {0, 3}, {1, 1}, {0, 0}, {1, 1}); }, "expected kernel_size to be positive");
  expect_error([&] { myconv::im2col(x, {3, 3}, {1, 1}, {0, 0}, {0, 1}); }, "expected stride to be positive");
  expect_error([&] { myconv::im2col(x, {9, 3}, {1, 1}, {0, 0}, {1, 1}); }, "there are no sliding blocks");
  expect_error([&] { myconv::im2col(at::randn({8, 8}), {3, 3}, {1, 1}, {0, 0}, {1, 1}); }, "expected a 3-D (C, H, W) or 4-D");
  expect_error([&] { myconv::col2im(at::randn({2, 10, 36}), {8, 8}, {3, 3}, {1, 1}, {0, 0}, {1, 1}); }, "to be divisible by the product of kernel_size");
  expect_error([&] { myconv::col2im(at::randn({2, 9, 35}), {8, 8}, {3, 3}, {1, 1}, {0, 0}, {1, 1}); }, "match the calculated number of sliding blocks 6 * 6 = 36");
  expect_error([&] { myconv::col2im(at::randn({2, 9, 36}), {0, 8}, {3, 3}, {1, 1}, {0, 0}, {1, 1}); }, "expected output_size to be a list of 2 positive ints");
}

// CUDA: the same checks on a device, skipped where there is none.
class Conv2dCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) {
      GTEST_SKIP() << "no CUDA device";
    }
  }
};

TEST_F(Conv2dCuda, ForwardAndBackwardMatchCpu) {
  for (const auto& c : kCases) {
    const at::Tensor x = at::randn(c.input, f64()), w = at::randn(c.weight, f64());
    const at::Tensor b = maybe_bias(c, f64());
    const at::Tensor gy = at::randn_like(at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups));
    const auto cuda = [](const at::Tensor& t) { return t.defined() ? t.cuda() : t; };
    EXPECT_CLOSE(myconv::conv2d(cuda(x), cuda(w), cuda(b), c.stride, c.padding, c.dilation, c.groups),
                 myconv::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups), 1e-12);
    auto [gi, gw, gb] = myconv::conv2d_backward(cuda(gy), cuda(x), cuda(w), c.stride, c.padding, c.dilation, c.groups, {true, true, true});
    auto [ri, rw, rb] = myconv::conv2d_backward(gy, x, w, c.stride, c.padding, c.dilation, c.groups, {true, true, true});
    EXPECT_CLOSE(gi, ri, 1e-12);
    EXPECT_CLOSE(gw, rw, 1e-12);
    EXPECT_CLOSE(gb, rb, 1e-12);
  }
}

TEST_F(Conv2dCuda, Im2colCol2imMatchCpu) {
  const at::Tensor x = at::randn({2, 3, 9, 7}, f64());
  const at::Tensor cols = myconv::im2col(x, {3, 2}, {2, 1}, {1, 1}, {2, 1});
  EXPECT_TRUE(at::equal(myconv::im2col(x.cuda(), {3, 2}, {2, 1}, {1, 1}, {2, 1}).cpu(), cols));
  EXPECT_CLOSE(myconv::col2im(cols.cuda(), {9, 7}, {3, 2}, {2, 1}, {1, 1}, {2, 1}),
               myconv::col2im(cols, {9, 7}, {3, 2}, {2, 1}, {1, 1}, {2, 1}), 1e-14);
}

TEST_F(Conv2dCuda, MixedDevicesThrow) {
  const at::Tensor x = at::randn({2, 3, 8, 8}), w = at::randn({4, 3, 3, 3});
  expect_error([&] { myconv::conv2d(x.cuda(), w, std::nullopt); }, "to be on the same device");
}

} // namespace

namespace {

struct Problem {
  at::Tensor x, w, b, gy;
};

Problem make_problem(uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  return {at::randn({5, 8, 17, 15}, gen), at::randn({12, 4, 3, 3}, gen), at::randn({12}, gen),
          at::randn({5, 12, 9, 13}, gen)};
}

std::vector<at::Tensor> run_problem(const Problem& p) {
  const std::vector<int64_t> stride{2, 1}, padding{1, 1}, dilation{1, 2};
  at::Tensor y = myconv::conv2d(p.x, p.w, p.b, stride, padding, dilation, 2);
  auto [gi, gw, gb] = myconv::conv2d_backward(p.gy, p.x, p.w, stride, padding, dilation, 2, {true, true, true});
  return {y, gi, gw, gb};
}

// Eight threads calling forward and backward at once get exactly the results
// of one thread.
TEST(Concurrency, EightThreadsMatchSingleThreaded) {
  constexpr int kThreads = 8;
  std::vector<Problem> problems;
  std::vector<std::vector<at::Tensor>> expected;
  for (int i = 0; i < kThreads; ++i) {
    problems.push_back(make_problem(100 + i));
    expected.push_back(run_problem(problems.back()));
  }
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 5; ++round) {
        const auto got = run_problem(problems[i]);
        for (size_t k = 0; k < got.size(); ++k) {
          mismatches[i] += at::equal(got[k], expected[i][k]) ? 0 : 1;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_EQ(mismatches[i], 0) << "thread " << i;
  }
}

// Hundreds of calls: under the sanitizer build, LeakSanitizer reports any
// allocation of ours that is never freed when the binary exits.
TEST(Memory, RepeatedCallsReleaseTheirWorkspace) {
  const Problem p = make_problem(7);
  const int64_t saved = myconv::workspace_limit_bytes();
  myconv::set_workspace_limit_bytes(64 << 10);  // several chunks per call
  for (int i = 0; i < 300; ++i) {
    const auto out = run_problem(p);
    ASSERT_EQ(out[0].size(0), 5);
  }
  myconv::set_workspace_limit_bytes(saved);
}

} // namespace

namespace {

// The CPU paths (csrc/conv_passes.cpp, chosen in csrc/convolution.cpp): tiles within images (a small tile
// size), NHWC columns (channels_last input), 1x1 GEMMs on the input, direct
// depthwise kernels; each against at::conv2d, in both layouts, and bitwise
// equal for 1, 2 and 3 threads.
struct ScopedSettings {
  int threads = at::get_num_threads();
  int64_t tile = myconv::tile_bytes(), limit = myconv::workspace_limit_bytes();
  ~ScopedSettings() {
    at::set_num_threads(threads);
    myconv::set_tile_bytes(tile);
    myconv::set_workspace_limit_bytes(limit);
  }
};

const std::vector<Case> kPathCases = {
    {{2, 5, 13, 17}, {7, 5, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},   // several tiles per image
    {{6, 4, 5, 6}, {6, 4, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true},     // small images, joined
    {{3, 24, 10, 11}, {16, 24, 1, 1}, {1, 1}, {0, 0}, {1, 1}, 1, true}, // 1x1 on the input
    {{2, 8, 14, 13}, {8, 1, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 8, true},   // depthwise, stride 1
    {{2, 6, 15, 14}, {12, 1, 3, 3}, {2, 2}, {1, 1}, {1, 1}, 6, false}, // depthwise x2, stride 2
    {{2, 40, 9, 11}, {24, 40, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1, true}, // channel blocks
};

std::vector<at::Tensor> forward_backward(const Case& c, const at::Tensor& x0, const at::Tensor& w0,
                                         const at::Tensor& b0, const at::Tensor& gy, bool reference) {
  const at::Tensor x = x0.clone().set_requires_grad(true);
  const at::Tensor w = w0.clone().set_requires_grad(true);
  const at::Tensor b = c.bias ? b0.clone().set_requires_grad(true) : at::Tensor();
  const at::Tensor y = reference ? at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)
                                 : myconv::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
  y.backward(gy);
  return {y.detach(), x.grad(), w.grad(), c.bias ? b.grad() : at::zeros({1}, x0.options())};
}

TEST(Paths, TilesLayoutsAndThreadCountsMatchATen) {
  const ScopedSettings restore;
  for (const auto& c : kPathCases) {
    for (const bool channels_last : {false, true}) {
      at::Tensor x = at::randn(c.input, f64());
      if (channels_last) {
        x = x.contiguous(at::MemoryFormat::ChannelsLast);
      }
      const at::Tensor w = at::randn(c.weight, f64()), b = maybe_bias(c, f64());
      const at::Tensor gy = at::randn_like(at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups));
      const auto ref = forward_backward(c, x, w, b, gy, true);
      for (const int64_t tile : {0, 1}) {
        myconv::set_tile_bytes(tile);
        std::vector<at::Tensor> first;
        for (const int threads : {1, 2, 3}) {
          at::set_num_threads(threads);
          const auto got = forward_backward(c, x.to(at::kFloat), w.to(at::kFloat),
                                            c.bias ? b.to(at::kFloat) : b, gy.to(at::kFloat), false);
          for (size_t i = 0; i < got.size(); ++i) {
            EXPECT_CLOSE(got[i], ref[i], 2e-5) << "output " << i << ", tile " << tile;
            if (!first.empty()) {
              EXPECT_TRUE(at::equal(got[i], first[i])) << "output " << i << ", " << threads << " threads";
            }
          }
          EXPECT_EQ(got[0].is_contiguous(at::MemoryFormat::ChannelsLast), channels_last);
          if (first.empty()) {
            first = got;
          }
        }
      }
    }
  }
}

TEST(Paths, WorkspaceStaysWithinTheLimit) {
  const ScopedSettings restore;
  for (const auto& c : kPathCases) {
    const at::Tensor x = at::randn(c.input), w = at::randn(c.weight);
    for (const int64_t limit : {int64_t{24000}, int64_t{1} << 20}) {
      myconv::set_workspace_limit_bytes(limit);
      const at::Tensor y = myconv::conv2d(x, w, std::nullopt, c.stride, c.padding, c.dilation, c.groups);
      EXPECT_LE(myconv::last_workspace_peak_bytes(), limit);
      myconv::conv2d_backward(at::ones_like(y), x, w, c.stride, c.padding, c.dilation, c.groups,
                              {true, true, true});
      EXPECT_LE(myconv::last_workspace_peak_bytes(), limit);
    }
  }
}

} // namespace

namespace {

// conv_transpose2d from C++: forward and gradients (through autograd) against
// at::conv_transpose2d, the seed example, and PyTorch's output-padding rule.
struct TransposeCase {
  std::vector<int64_t> input, weight, stride, padding, output_padding, dilation;
  int64_t groups;
};

TEST(ConvTranspose2d, ForwardAndBackwardMatchATen) {
  const std::vector<TransposeCase> cases = {
      {{2, 4, 5, 6}, {4, 3, 3, 3}, {1, 1}, {0, 0}, {0, 0}, {1, 1}, 1},
      {{2, 4, 5, 6}, {4, 3, 3, 2}, {2, 1}, {1, 0}, {1, 0}, {1, 2}, 2},
      {{1, 3, 4, 4}, {3, 2, 2, 2}, {1, 1}, {0, 1}, {1, 1}, {2, 3}, 1},  // output_padding >= stride
      {{3, 6, 7, 5}, {6, 1, 3, 3}, {2, 2}, {1, 1}, {1, 0}, {1, 1}, 6},  // depthwise-like
      {{0, 4, 5, 5}, {4, 2, 3, 3}, {1, 1}, {1, 1}, {0, 0}, {1, 1}, 1},  // empty batch
  };
  for (const auto& c : cases) {
    const at::Tensor x0 = at::randn(c.input, f64()), w0 = at::randn(c.weight, f64());
    const at::Tensor b0 = at::randn({c.weight[1] * c.groups}, f64());
    std::vector<at::Tensor> got[2];
    at::Tensor gy;
    for (int impl = 0; impl < 2; ++impl) {
      const at::Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
      const at::Tensor b = b0.clone().set_requires_grad(true);
      const at::Tensor y =
          impl == 0 ? myconv::conv_transpose2d(x, w, b, c.stride, c.padding, c.output_padding, c.groups, c.dilation)
                    : at::conv_transpose2d(x, w, b, c.stride, c.padding, c.output_padding, c.groups, c.dilation);
      if (!gy.defined()) {
        gy = at::randn_like(y);
      }
      y.backward(gy);
      got[impl] = {y.detach(), x.grad(), w.grad(), b.grad()};
    }
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_CLOSE(got[0][i], got[1][i], 1e-12) << "output " << i;
    }
  }
}

TEST(ConvTranspose2d, SeedExample) {
  const at::Tensor x = at::arange(35.0).view({1, 1, 5, 7});
  const at::Tensor k = at::arange(1.0, 10.0).view({1, 1, 3, 3});
  const at::Tensor conv = myconv::conv2d(x, k, std::nullopt, {1, 1}, {1, 1});
  const at::Tensor out = myconv::conv_transpose2d(conv, k, std::nullopt, {1, 1}, {1, 1});
  EXPECT_EQ(out[0][0][0][0].item<float>(), 2672.0f);
  EXPECT_EQ(out[0][0][2][3].item<float>(), 34425.0f);
  EXPECT_EQ(out[0][0][4][6].item<float>(), 23966.0f);
}

TEST(ConvTranspose2d, BadInputsThrow) {
  const at::Tensor x = at::randn({1, 4, 5, 5}), w = at::randn({4, 2, 3, 3});
  expect_error([&] { myconv::conv_transpose2d(x, w, std::nullopt, {2, 2}, {0, 0}, {2, 2}); },
               "output padding must be smaller than either stride or dilation");
  expect_error([&] { myconv::conv_transpose2d(at::randn({1, 3, 5, 5}), w); },
               "expected input[1, 3, 5, 5] to have 4 channels, but got 3 channels instead");
  expect_error([&] { myconv::conv_transpose2d(at::randn({1, 4, 1, 1}), w, std::nullopt, {1, 1}, {3, 3}); },
               "Output size is too small");
}

} // namespace
