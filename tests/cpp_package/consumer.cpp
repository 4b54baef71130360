// A LibTorch program built against an installed myconv (tests/cpp_package):
// the operators through the dispatcher and the C++ API, autograd, the
// modules, state moving between torch::nn::Conv2d and myconv::nn::Conv2d, and
// a few SGD steps whose losses match torch::nn::Conv2d's in float64.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>
#include <torch/serialize.h>

#include <myconv/myconv.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#define REQUIRE(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "consumer: check failed at line %d: %s\n", __LINE__, #cond); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

namespace {

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-30);
}

torch::nn::Sequential model(bool ours) {
  torch::manual_seed(0);
  torch::nn::Sequential m;
  if (ours) {
    m->push_back(myconv::nn::Conv2d(myconv::nn::Conv2dOptions(1, 4, 3).padding(1)));
    m->push_back(torch::nn::ReLU());
    m->push_back(myconv::nn::Conv2d(myconv::nn::Conv2dOptions(4, 4, 3).stride(2).padding(1)));
  } else {
    m->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).padding(1)));
    m->push_back(torch::nn::ReLU());
    m->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).stride(2).padding(1)));
  }
  m->push_back(torch::nn::AdaptiveAvgPool2d(1));
  m->push_back(torch::nn::Flatten());
  m->push_back(torch::nn::Linear(4, 3));
  m->to(torch::kDouble);
  return m;
}

} // namespace

int main() {
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  torch::manual_seed(1);
  const at::Tensor x = torch::randn({2, 3, 9, 8}, f64), w = torch::randn({5, 3, 3, 3}, f64);

  // 1. The operator through the dispatcher only (the registrations were kept).
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("myconv::conv2d", "")
                      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t)>();
  const at::Tensor y = op.call(x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, 1);
  REQUIRE(max_rel(y, at::conv2d(x, w, {}, 1, 1)) < 1e-12);

  // 2. The functional API, with autograd.
  const at::Tensor xg = x.clone().set_requires_grad(true), wg = w.clone().set_requires_grad(true);
  myconv::conv2d(xg, wg, std::nullopt, {2, 1}, {1, 0}).square().sum().backward();
  const at::Tensor xr = x.clone().set_requires_grad(true), wr = w.clone().set_requires_grad(true);
  at::conv2d(xr, wr, {}, {2, 1}, {1, 0}).square().sum().backward();
  REQUIRE(max_rel(xg.grad(), xr.grad()) < 1e-12 && max_rel(wg.grad(), wr.grad()) < 1e-12);
  const at::Tensor v = torch::randn({1, 2, 4, 5, 5}, f64), k = torch::randn({3, 2, 2, 2, 2}, f64);
  REQUIRE(max_rel(myconv::conv3d(v, k, std::nullopt, {1, 2, 1}), at::conv3d(v, k, {}, {1, 2, 1})) < 1e-12);

  // 3. Modules and state moving both ways with torch::nn::Conv2d.
  torch::nn::Conv2d theirs(torch::nn::Conv2dOptions(3, 5, 3).stride(2).padding(1).groups(1));
  myconv::nn::Conv2d ours(myconv::nn::Conv2dOptions(3, 5, 3).stride(2).padding(1));
  theirs->to(torch::kDouble);
  ours->to(torch::kDouble);
  std::stringstream state;
  torch::save(theirs, state);
  torch::load(ours, state);
  REQUIRE(torch::equal(ours->weight, theirs->weight) && torch::equal(ours->bias, theirs->bias));
  REQUIRE(max_rel(ours->forward(x), theirs->forward(x)) < 1e-12);
  std::stringstream back;
  torch::save(ours, back);
  torch::nn::Conv2d again(torch::nn::Conv2dOptions(3, 5, 3).stride(2).padding(1));
  again->to(torch::kDouble);
  torch::load(again, back);
  REQUIRE(torch::equal(again->weight, ours->weight));

  // 4. A few SGD steps: the same losses as with torch::nn::Conv2d (float64).
  const at::Tensor images = torch::randn({8, 1, 10, 10}, f64);
  const at::Tensor labels = torch::randint(0, 3, {8}, torch::kLong);
  std::vector<double> losses[2];
  for (int which = 0; which < 2; ++which) {
    auto m = model(which == 0);
    torch::optim::SGD sgd(m->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    for (int step = 0; step < 5; ++step) {
      sgd.zero_grad();
      const at::Tensor loss = torch::nn::functional::cross_entropy(m->forward(images), labels);
      loss.backward();
      sgd.step();
      losses[which].push_back(loss.item<double>());
    }
  }
  for (size_t i = 0; i < losses[0].size(); ++i) {
    REQUIRE(std::abs(losses[0][i] - losses[1][i]) <= 1e-10 * std::abs(losses[1][i]));
  }
  REQUIRE(losses[0].back() < losses[0].front());
  std::printf("consumer: ok (losses %.6f -> %.6f, the same as torch::nn::Conv2d's)\n", losses[0].front(),
              losses[0].back());
  return 0;
}
