// The host side of the CUDA kernels' tests: a launch's grid-stride loops run
// on the host, every (block, thread) of the grid the device would launch.
#pragma once

#include <cstdint>

#include "../../cuda/im2col_elements.h"

namespace myconv_test {

// Runs elements 0 .. total-1 of Work (Work::run(g, i, io)) exactly as a launch
// of blocks_for(total) blocks of kThreads would: every thread's grid-stride loop.
template <typename Work, typename Geometry, typename Access>
void run_grid(int64_t total, const Geometry& g, Access& io) {
  const int64_t blocks = myconv::cuda::blocks_for(total);
  auto element = [&](int64_t i) { Work::run(g, i, io); };
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t thread = 0; thread < myconv::cuda::kThreads; ++thread) {
      myconv::cuda::grid_stride(block, thread, blocks, total, element);
    }
  }
}

} // namespace myconv_test
