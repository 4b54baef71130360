// conv1d / conv3d / conv_transpose1d / conv_transpose3d from C++ (csrc/myconv.h):
// forward and gradients through autograd against ATen's own convolutions,
// the padding overloads, the backward op's output mask, and bad input.
#include "helpers.h"

#include <vector>

namespace {

using myconv_test::expect_error;
using myconv_test::f64;

struct Case {
  int64_t dims;
  bool transposed;
  std::vector<int64_t> input, weight, stride, padding, dilation, output_padding;
  int64_t groups;
};

const std::vector<Case> kCases = {
    {1, false, {2, 4, 17}, {6, 2, 3}, {2}, {1}, {2}, {0}, 2},
    {1, false, {3, 9}, {4, 3, 5}, {1}, {2}, {1}, {0}, 1},  // unbatched
    {1, false, {2, 6, 12}, {6, 1, 3}, {1}, {1}, {1}, {0}, 6},  // depthwise
    {3, false, {2, 3, 5, 6, 7}, {4, 3, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1},
    {3, false, {1, 4, 6, 5, 7}, {6, 2, 2, 3, 1}, {2, 1, 3}, {0, 1, 0}, {2, 1, 1}, {0, 0, 0}, 2},
    {3, false, {2, 4, 4, 4, 4}, {4, 1, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 4},  // depthwise
    {3, false, {0, 3, 4, 4, 4}, {2, 3, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, {0, 0, 0}, 1},  // batch 0
    {1, true, {2, 4, 7}, {4, 3, 3}, {2}, {1}, {1}, {1}, 2},
    {3, true, {2, 4, 3, 4, 3}, {4, 3, 3, 2, 3}, {2, 1, 2}, {1, 0, 1}, {1, 2, 1}, {1, 0, 0}, 2},
    {3, true, {3, 2, 3, 2}, {3, 2, 2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, {0, 1, 0}, 1},  // unbatched
};

at::Tensor ours(const Case& c, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (c.transposed) {
    return c.dims == 1 ? myconv::conv_transpose1d(x, w, b, c.stride, c.padding, c.output_padding, c.groups, c.dilation)
                       : myconv::conv_transpose3d(x, w, b, c.stride, c.padding, c.output_padding, c.groups, c.dilation);
  }
  return c.dims == 1 ? myconv::conv1d(x, w, b, c.stride, c.padding, c.dilation, c.groups)
                     : myconv::conv3d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
}

at::Tensor aten(const Case& c, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (c.transposed) {
    return c.dims == 1 ? at::conv_transpose1d(x, w, b, c.stride, c.padding, c.output_padding, c.groups, c.dilation)
                       : at::conv_transpose3d(x, w, b, c.stride, c.padding, c.output_padding, c.groups, c.dilation);
  }
  return c.dims == 1 ? at::conv1d(x, w, b, c.stride, c.padding, c.dilation, c.groups)
                     : at::conv3d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
}

TEST(ConvNd, ForwardAndGradientsMatchATen) {
  for (const auto& c : kCases) {
    const at::Tensor x0 = at::randn(c.input, f64()), w0 = at::randn(c.weight, f64());
    const int64_t out_channels = c.transposed ? c.weight[1] * c.groups : c.weight[0];
    const at::Tensor b0 = at::randn({out_channels}, f64());
    std::vector<at::Tensor> results[2];
    at::Tensor gy;
    for (int impl = 0; impl < 2; ++impl) {
      const at::Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
      const at::Tensor b = b0.clone().set_requires_grad(true);
      const at::Tensor y = impl == 0 ? ours(c, x, w, b) : aten(c, x, w, b);
      if (!gy.defined()) {
        gy = at::randn_like(y);
      }
      y.backward(gy);
      results[impl] = {y, x.grad().defined() ? x.grad() : at::zeros_like(x), w.grad(), b.grad()};
    }
    for (size_t i = 0; i < results[0].size(); ++i) {
      EXPECT_CLOSE(results[0][i], results[1][i], 1e-12) << "case " << (&c - kCases.data()) << " result " << i;
    }
    // float32 too, against the float64 reference
    const at::Tensor y32 = ours(c, x0.to(at::kFloat), w0.to(at::kFloat), b0.to(at::kFloat));
    EXPECT_CLOSE(y32, results[1][0], 1e-5);
  }
}

TEST(ConvNd, BackwardOpsHonourTheOutputMask) {
  const at::Tensor x = at::randn({2, 3, 8}, f64()), w = at::randn({4, 3, 3}, f64());
  const at::Tensor gy = at::randn({2, 4, 6}, f64());
  auto [gi, gw, gb] = myconv::conv1d_backward(gy, x, w, {1}, {0}, {1}, 1, {false, true, true});
  EXPECT_FALSE(gi.defined());
  EXPECT_TRUE(gw.defined());
  EXPECT_CLOSE(gb, gy.sum({0, 2}), 1e-14);
  const at::Tensor x3 = at::randn({2, 3, 4, 4, 4}, f64()), w3 = at::randn({4, 3, 3, 3, 3}, f64());
  const at::Tensor gy3 = at::randn({2, 4, 2, 2, 2}, f64());
  auto [gi3, gw3, gb3] = myconv::conv3d_backward(gy3, x3, w3, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1,
                                                 {true, false, false});
  EXPECT_TRUE(gi3.defined());
  EXPECT_FALSE(gw3.defined());
  EXPECT_FALSE(gb3.defined());
}

TEST(ConvNd, PaddingSameAndValid) {
  const at::Tensor x1 = at::randn({2, 4, 11}, f64()), w1 = at::randn({6, 2, 4}, f64());
  const at::Tensor x3 = at::randn({2, 4, 5, 6, 5}, f64()), w3 = at::randn({6, 2, 2, 3, 4}, f64());
  for (const char* mode : {"same", "valid"}) {
    EXPECT_CLOSE(myconv::conv1d_padding(x1, w1, std::nullopt, {1}, mode, {2}, 2),
                 at::conv1d(x1, w1, {}, {1}, mode, {2}, 2), 1e-12)
        << mode;
    EXPECT_CLOSE(myconv::conv3d_padding(x3, w3, std::nullopt, {1, 1, 1}, mode, {1, 2, 1}, 2),
                 at::conv3d(x3, w3, {}, {1, 1, 1}, mode, {1, 2, 1}, 2), 1e-12)
        << mode;
  }
}

TEST(ConvNd, BadInputsThrow) {
  const at::Tensor x1 = at::randn({2, 3, 10}), w1 = at::randn({4, 3, 3});
  const at::Tensor x3 = at::randn({2, 3, 6, 6, 6}), w3 = at::randn({4, 3, 3, 3, 3});
  expect_error([&] { myconv::conv1d(x3, w1, std::nullopt); },
               "myconv::conv1d: expected 2-D (unbatched) or 3-D (batched) input");
  expect_error([&] { myconv::conv3d(x3, w1, std::nullopt); }, "myconv::conv3d: expected 5-D weight of shape");
  expect_error([&] { myconv::conv3d(x3, w3, std::nullopt, {1, 1}); },
               "expected stride to be a list of 3 ints, but got stride=[1, 1]");
  expect_error([&] { myconv::conv1d(x1, w1, std::nullopt, {1}, {0}, {5}); },
               "Dilated kernel size: (11). Kernel size can't be greater than actual input size");
  expect_error([&] { myconv::conv_transpose3d(x3, w3.transpose(0, 1), std::nullopt, {2, 2, 2}, {0, 0, 0}, {2, 2, 2}); },
               "output padding must be smaller than either stride or dilation");
  expect_error([&] { myconv::conv3d_backward(at::randn({2, 4, 4, 4, 5}), x3, w3, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1,
                                             {true, true, true}); },
               "(the size of conv3d's output)");
}

} // namespace
