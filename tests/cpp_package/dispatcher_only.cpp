// A program that uses myconv only through the dispatcher: no symbol of the
// library is referenced, so only myconv::myconv's --no-as-needed keeps the
// library (and its operator registrations) in the program.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>

int main() {
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("myconv::conv1d", "")
                      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                        at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t)>();
  const at::Tensor x = at::randn({2, 3, 20}, at::kDouble), w = at::randn({4, 3, 5}, at::kDouble);
  const at::Tensor y = op.call(x, w, std::nullopt, {2}, {1}, {1}, 1);
  const double error = (y - at::conv1d(x, w, {}, 2, 1)).abs().max().item<double>();
  std::printf("dispatcher only: myconv::conv1d found, max error %.1e\n", error);
  return error < 1e-12 ? 0 : 1;
}
