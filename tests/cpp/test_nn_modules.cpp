// The LibTorch modules (<myconv/nn.h>): every option builder, the parameters
// and their initialisation against torch::nn's modules, forward with every
// padding form and padding mode, output_size, Sequential, ->to(), clone(),
// torch::save'd state both ways, and bad options giving torch's errors.
#include "helpers.h"

#include <torch/nn/modules/container/sequential.h>
#include <torch/serialize.h>

#include <sstream>

namespace {

using myconv_test::expect_error;
using myconv_test::f64;

// Builds torch's and myconv's module from the same options, with the same
// initial parameters (the same seed before each), in float64.
template <class Torch, class Ours, class Options>
std::pair<Torch, Ours> pair_of(const Options& options) {
  torch::manual_seed(7);
  Torch theirs(options);
  torch::manual_seed(7);
  Ours ours(options);
  theirs->to(at::kDouble);
  ours->to(at::kDouble);
  return {theirs, ours};
}

template <class Torch, class Ours>
void expect_same_parameters(const Torch& theirs, const Ours& ours) {
  const auto a = theirs->named_parameters(), b = ours->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& item : a) {
    ASSERT_TRUE(b.contains(item.key())) << item.key();
    EXPECT_TRUE(at::equal(item.value(), b[item.key()])) << item.key() << ": the same initialisation";
  }
}

// Forward and the input / parameter gradients of both modules.
template <class Torch, class Ours>
void expect_same_results(Torch& theirs, Ours& ours, const at::Tensor& x0) {
  const at::Tensor x1 = x0.clone().set_requires_grad(true), x2 = x0.clone().set_requires_grad(true);
  const at::Tensor y1 = theirs->forward(x1), y2 = ours->forward(x2);
  EXPECT_CLOSE(y2, y1, 1e-12);
  const at::Tensor gy = at::randn_like(y1);
  y1.backward(gy);
  y2.backward(gy);
  EXPECT_CLOSE(x2.grad(), x1.grad(), 1e-12);
  EXPECT_CLOSE(ours->weight.grad(), theirs->weight.grad(), 1e-12);
  if (theirs->bias.defined()) {
    EXPECT_CLOSE(ours->bias.grad(), theirs->bias.grad(), 1e-12);
  }
}

TEST(NnConv2d, EveryOptionBuilderMatchesTorch) {
  const std::vector<myconv::nn::Conv2dOptions> cases = {
      myconv::nn::Conv2dOptions(4, 6, 3),
      myconv::nn::Conv2dOptions(4, 6, {3, 2}).stride({2, 1}).padding({1, 0}).dilation({1, 2}).groups(2),
      myconv::nn::Conv2dOptions(4, 6, 3).bias(false),
      myconv::nn::Conv2dOptions(4, 4, 3).groups(4).padding(1),  // depthwise
      myconv::nn::Conv2dOptions(4, 6, {4, 3}).padding(torch::kSame).dilation({1, 2}),
      myconv::nn::Conv2dOptions(4, 6, 3).padding(torch::kValid),
      myconv::nn::Conv2dOptions(4, 6, 3).padding(2).padding_mode(torch::kReflect),
      myconv::nn::Conv2dOptions(4, 6, 3).padding({1, 2}).padding_mode(torch::kReplicate),
      myconv::nn::Conv2dOptions(4, 6, 3).padding(1).padding_mode(torch::kCircular).stride(2),
      myconv::nn::Conv2dOptions(4, 6, {4, 3}).padding(torch::kSame).padding_mode(torch::kReflect),
      myconv::nn::Conv2dOptions(4, 6, 3).padding(torch::kValid).padding_mode(torch::kReplicate),
  };
  const at::Tensor x = at::randn({2, 4, 9, 8}, f64());
  for (const auto& options : cases) {
    auto [theirs, ours] = pair_of<torch::nn::Conv2d, myconv::nn::Conv2d>(options);
    expect_same_parameters(theirs, ours);
    const bool same = std::holds_alternative<torch::enumtype::kSame>(options.padding());
    if (same) {
      EXPECT_EQ(ours->forward(x).sizes().slice(2), x.sizes().slice(2)) << "'same' keeps the spatial size";
    }
    // (torch's C++ module pads 'same' in the wrong dimension order with a
    // non-zeros padding_mode: NnConv2d.SamePaddingWithAPaddingModeIsPythons)
    if (!same || std::holds_alternative<torch::enumtype::kZeros>(options.padding_mode())) {
      expect_same_results(theirs, ours, x);
    }
    // the name printed is ours, the rest is torch's
    std::ostringstream a, b;
    a << *theirs;
    b << *ours;
    EXPECT_EQ(b.str(), "myconv::nn::" + a.str().substr(std::string("torch::nn::").size()));
  }
}

// padding torch::kSame with padding_mode reflect on a 4x3 kernel: F::pad's
// (left, right, top, bottom) = (1, 1, 1, 2), as Python's nn.Conv2d pads.
TEST(NnConv2d, PrintsItsOwnName) {
  std::ostringstream text;
  text << *myconv::nn::Conv2d(myconv::nn::Conv2dOptions(4, 6, 3).stride(2).bias(false));
  EXPECT_EQ(text.str(), "myconv::nn::Conv2d(4, 6, kernel_size=[3, 3], stride=[2, 2], bias=false)");
}

TEST(NnConv2d, SamePaddingWithAPaddingModeIsPythons) {
  torch::manual_seed(3);
  myconv::nn::Conv2d ours(
      myconv::nn::Conv2dOptions(4, 6, {4, 3}).padding(torch::kSame).padding_mode(torch::kReflect));
  ours->to(at::kDouble);
  const at::Tensor x = at::randn({2, 4, 9, 8}, f64());
  namespace F = torch::nn::functional;
  const at::Tensor expected = at::conv2d(
      F::pad(x, F::PadFuncOptions({1, 1, 1, 2}).mode(torch::kReflect)), ours->weight, ours->bias);
  const at::Tensor y = ours->forward(x);
  EXPECT_EQ(y.sizes(), expected.sizes());
  EXPECT_CLOSE(y, expected, 1e-12);
  // the same in a clone (clone() calls reset() on the copy)
  const auto copy = std::dynamic_pointer_cast<myconv::nn::Conv2dImpl>(ours->clone());
  ASSERT_TRUE(copy);
  EXPECT_EQ(copy->forward(x).sizes(), expected.sizes());
}

TEST(NnConvNd, Conv1dConv3dAndTheTransposesMatchTorch) {
  {
    auto [theirs, ours] = pair_of<torch::nn::Conv1d, myconv::nn::Conv1d>(
        myconv::nn::Conv1dOptions(3, 6, 5).stride(2).padding(2).groups(3).padding_mode(torch::kCircular));
    expect_same_results(theirs, ours, at::randn({2, 3, 17}, f64()));
  }
  {
    auto [theirs, ours] = pair_of<torch::nn::Conv3d, myconv::nn::Conv3d>(
        myconv::nn::Conv3dOptions(2, 4, {3, 1, 3}).stride({1, 2, 1}).padding(torch::kValid));
    expect_same_results(theirs, ours, at::randn({2, 2, 4, 7, 5}, f64()));
  }
  {
    auto [theirs, ours] = pair_of<torch::nn::ConvTranspose1d, myconv::nn::ConvTranspose1d>(
        myconv::nn::ConvTranspose1dOptions(4, 6, 3).stride(2).padding(1).output_padding(1).groups(2));
    expect_same_parameters(theirs, ours);
    expect_same_results(theirs, ours, at::randn({2, 4, 9}, f64()));
  }
  {
    auto [theirs, ours] = pair_of<torch::nn::ConvTranspose2d, myconv::nn::ConvTranspose2d>(
        myconv::nn::ConvTranspose2dOptions(4, 3, {3, 2}).stride(2).dilation({1, 2}).bias(false));
    expect_same_parameters(theirs, ours);
    expect_same_results(theirs, ours, at::randn({2, 4, 5, 6}, f64()));
  }
  {
    auto [theirs, ours] = pair_of<torch::nn::ConvTranspose3d, myconv::nn::ConvTranspose3d>(
        myconv::nn::ConvTranspose3dOptions(2, 4, 2).stride({2, 1, 2}).padding({0, 1, 0}));
    expect_same_results(theirs, ours, at::randn({1, 2, 3, 4, 3}, f64()));
  }
}

TEST(NnConvTranspose2d, OutputSizePicksTheOutputPaddingAsPythonDoes) {
  torch::manual_seed(0);
  myconv::nn::ConvTranspose2d up(myconv::nn::ConvTranspose2dOptions(4, 3, 3).stride(2).padding(1));
  up->to(at::kDouble);
  const at::Tensor x = at::randn({2, 4, 5, 5}, f64());
  EXPECT_EQ(up->forward(x).sizes(), at::IntArrayRef({2, 3, 9, 9}));
  const std::vector<int64_t> size{10, 9}, whole{2, 3, 10, 10};
  const at::Tensor y = up->forward(x, at::IntArrayRef(size));
  EXPECT_EQ(y.sizes(), at::IntArrayRef({2, 3, 10, 9}));
  EXPECT_CLOSE(y, at::conv_transpose2d(x, up->weight, up->bias, 2, 1, {1, 0}), 1e-12);
  EXPECT_EQ(up->forward(x, at::IntArrayRef(whole)).sizes(), at::IntArrayRef(whole));
  expect_error([&] { up->forward(x, at::IntArrayRef(std::vector<int64_t>{12, 9})); },
               "requested an output size of [12, 9], but valid sizes range from [9, 9] to [10, 10]");
  expect_error([&] { up->forward(x, at::IntArrayRef(std::vector<int64_t>{9})); },
               "output_size must have 2 or 4 elements (got 1)");
  // with dilation, as Python's ConvTranspose2d (torch's C++ modules leave the
  // dilation out of this rule): sizes (5 - 1) * 2 - 2 + 3 * (3 - 1) + 1 = 13 .. 14
  myconv::nn::ConvTranspose2d dilated(myconv::nn::ConvTranspose2dOptions(4, 3, 3).stride(2).padding(1).dilation(3));
  dilated->to(at::kDouble);
  const at::Tensor z = dilated->forward(x, at::IntArrayRef(std::vector<int64_t>{14, 13}));
  EXPECT_CLOSE(z, at::conv_transpose2d(x, dilated->weight, dilated->bias, 2, 1, {1, 0}, 1, 3), 1e-12);
  expect_error([&] { dilated->forward(x, at::IntArrayRef(std::vector<int64_t>{12, 13})); },
               "valid sizes range from [13, 13] to [14, 14]");
}

TEST(NnModules, SequentialToCloneAndStateBothWays) {
  torch::manual_seed(0);
  torch::nn::Sequential net(myconv::nn::Conv2d(myconv::nn::Conv2dOptions(3, 8, 3).padding(1)),
                            myconv::nn::ConvTranspose2d(myconv::nn::ConvTranspose2dOptions(8, 2, 2).stride(2)));
  net->to(at::kDouble);
  const at::Tensor x = at::randn({2, 3, 6, 6}, f64());
  const at::Tensor y = net->forward(x);
  EXPECT_EQ(y.sizes(), at::IntArrayRef({2, 2, 12, 12}));
  const auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone());
  EXPECT_TRUE(at::equal(copy->forward(x), y));
  copy->parameters()[0].data().zero_();  // the clone's parameters are its own
  EXPECT_TRUE(at::equal(net->forward(x), y));
  EXPECT_EQ(net->named_parameters().keys(),
            std::vector<std::string>({"0.weight", "0.bias", "1.weight", "1.bias"}));

  // torch::save'd state moves between torch::nn::Conv2d and myconv::nn::Conv2d
  torch::nn::Conv2d theirs(torch::nn::Conv2dOptions(3, 4, 3));
  myconv::nn::Conv2d ours(myconv::nn::Conv2dOptions(3, 4, 3));
  std::stringstream a, b;
  torch::save(theirs, a);
  torch::load(ours, a);
  EXPECT_TRUE(at::equal(ours->weight, theirs->weight) && at::equal(ours->bias, theirs->bias));
  ours->weight.data().mul_(2);
  torch::save(ours, b);
  torch::load(theirs, b);
  EXPECT_TRUE(at::equal(ours->weight, theirs->weight));
  ours->to(at::kDouble);
  EXPECT_EQ(ours->weight.scalar_type(), at::kDouble);
  const at::Tensor before = ours->weight.clone();
  ours->reset_parameters();  // fresh parameters, as torch's modules draw them
  EXPECT_EQ(ours->weight.sizes(), at::IntArrayRef({4, 3, 3, 3}));
  EXPECT_FALSE(at::equal(ours->weight, before));
}

TEST(NnModules, BadOptionsGiveTorchsErrors) {
  expect_error([] { myconv::nn::Conv2d(myconv::nn::Conv2dOptions(3, 6, 3).groups(2)); },
               "in_channels must be divisible by groups");
  expect_error([] { myconv::nn::Conv2d(myconv::nn::Conv2dOptions(4, 6, 3).groups(4)); },
               "out_channels must be divisible by groups");
  expect_error([] { myconv::nn::Conv2d(myconv::nn::Conv2dOptions(0, 6, 3)); },
               "in_channels, groups and out_channels must be a positive integer");
  expect_error([] { myconv::nn::Conv2d(myconv::nn::Conv2dOptions(3, 6, 3).stride(2).padding(torch::kSame)); },
               "padding='same' is not supported for strided convolutions");
  myconv::nn::ConvTranspose2d reflect(myconv::nn::ConvTranspose2dOptions(3, 6, 3).padding_mode(torch::kReflect));
  expect_error([&] { reflect->forward(at::randn({1, 3, 4, 4})); },
               "Only `zeros` padding mode is supported for ConvTranspose2d");
  // and the operator's own checks for bad input
  myconv::nn::Conv3d conv(myconv::nn::Conv3dOptions(3, 4, 3));
  expect_error([&] { conv->forward(at::randn({1, 3, 2, 4, 4})); }, "myconv::conv3d: calculated padded input size");
  expect_error([&] { conv->forward(at::randn({4, 4})); },
               "myconv::conv3d: expected 4-D (unbatched) or 5-D (batched) input");
}

} // namespace
