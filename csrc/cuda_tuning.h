// The CUDA backend's Tuning (cuda/cuda_backend.cpp), in one place: it is also
// the plan the CPU backend replays for the tests of the CUDA composition
// (torch.ops.myconv._set_cpu_whole_image_plan, csrc/cpu/cpu_backend.cpp), so
// that the replay always describes what the GPU runs.
#pragma once

#include "backend.h"

namespace myconv::detail {

// Whole-image chunks, one worker (the kernels queue on one stream), no view or
// channels-last paths; the direct grouped kernels (cuda/grouped.cu) for
// grouped convolutions with a tiny per-group K.
inline Tuning cuda_backend_tuning() {
  Tuning t;
  t.direct_grouped = true;
  return t;
}

} // namespace myconv::detail
