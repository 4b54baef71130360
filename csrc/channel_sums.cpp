#include "channel_sums.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/sum.h>

#include <numeric>
#include <vector>

#include "conv_plan.h"

namespace myconv::detail {
namespace {

// Elements a block sums: below ATen's grain size (32768), so that a block's
// sum never runs on several threads, and large enough that the blocks' sums
// are few.
constexpr int64_t kBlock = int64_t{1} << 14;

// The sum of a 1-D tensor, in blocks of kBlock (see channel_sums).
at::Tensor blocked_sum(at::Tensor flat, at::ScalarType acc) {
  while (flat.numel() > kBlock) {
    const int64_t n = flat.numel(), full = n / kBlock;
    at::Tensor sums = flat.narrow(0, 0, full * kBlock).view({full, kBlock}).sum(1, false, acc);
    if (n > full * kBlock) {
      sums = at::cat({sums, flat.narrow(0, full * kBlock, n - full * kBlock).sum(0, true, acc)});
    }
    flat = sums;
  }
  return flat.sum(0, false, acc);
}

} // namespace

at::Tensor channel_sums(const at::Tensor& t, int64_t channel_dim) {
  std::vector<int64_t> others(t.dim());
  std::iota(others.begin(), others.end(), 0);
  others.erase(others.begin() + channel_dim);
  if (t.size(channel_dim) != 1 || t.numel() <= kBlock) {
    return t.sum(others);
  }
  const at::ScalarType acc = is_reduced_precision(t.scalar_type()) ? at::kFloat : t.scalar_type();
  return blocked_sum(t.reshape({-1}), acc).to(t.scalar_type()).reshape({1});
}

} // namespace myconv::detail
