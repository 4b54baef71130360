// The bias gradient: a tensor summed over every dimension but its channels,
// with the same bits whatever the CPU thread count.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace myconv::detail {

// t summed over every dimension but `channel_dim`: a 1-D tensor of
// t.size(channel_dim) sums (differentiable, in t's dtype).
//
// ATen parallelises a CPU reduction over its output elements (each sum on
// one thread, in a fixed order) unless it has a single output element: then
// every thread sums a part and the parts are added, so the bits depend on
// the thread count. With one channel the sum is therefore taken in fixed
// blocks first (each block's sum is an output element of its own, each block
// below ATen's grain size), then over the blocks' sums, in as many rounds as
// it takes. Reduced-precision tensors are summed in float32 and rounded once.
at::Tensor channel_sums(const at::Tensor& t, int64_t channel_dim);

} // namespace myconv::detail
