// The CUDA backend's Tuning (cuda/cuda_backend.cpp), in one place: it is also
// the plan the CPU backend replays for the tests of the CUDA composition
// (torch.ops.myconv._set_cpu_whole_image_plan, csrc/cpu/cpu_backend.cpp), so
// that the replay always describes what the GPU runs.
#pragma once

#include <string>

#include "backend.h"

namespace myconv::detail {

// Whole-image chunks, one worker (the kernels queue on one stream), 1x1 GEMMs
// on views (a chunk's images batched), channels-last columns for channels-last
// inputs; the direct
// grouped kernels (cuda/grouped.cu) for grouped convolutions with a tiny
// per-group K; column rows on 32 bytes.
inline Tuning cuda_backend_tuning() {
  Tuning t;
  t.direct_grouped = true;
  // 1x1 / stride 1 / no padding: GEMMs on the tensors themselves, a chunk's
  // images in one batched GEMM (forward, grad_input); no columns to build.
  // Not yet timed on a GPU.
  t.gemm_on_views = true;
  t.image_batched_views = true;
  // ... grad_weight too: each image's product (float32), then their sum,
  // where those take less memory than the columns. Not yet timed on a GPU.
  t.grad_weight_image_products = true;
  // ... and such passes (no columns) take the whole batch, chunked only where
  // grad_weight's image products pass chunk_bytes: one GEMM per group a pass,
  // not one per chunk sized for columns they never build (4 a pass for a 1x1
  // 256->64 layer at 56x56, batch 32). Not yet timed on a GPU.
  t.view_chunks = true;
  // channels-last inputs run on channels-last columns ((positions, rows)
  // tiles, rows (kd, kh, kw, c)): no copy of the input, grad_output or the
  // results into channels-first order, every pass a GEMM over the chunk's
  // positions at once (no gather of grad_output), 1x1 layers without columns
  // in every pass. Not yet timed on a GPU.
  t.channels_last = true;
  // but grouped layers that take columns run channels-first: a channels-last
  // group's columns are a launch of their own (32 per pass for a ResNeXt
  // 32x4d layer), and the groups' GEMM results would interleave
  t.grouped_channels_last_columns = false;
  // float16 / bfloat16 GEMMs write float32 (cublasGemmEx's C type): grad_weight
  // sums every chunk in float32, so reduced precision takes the chunks float32
  // does, not the whole batch's memory.
  t.float_gemm_results = true;
  // chunks of images of at least 2048 output positions (48x48 and larger;
  // 46x46 in float32: each image's positions must fill whole 16 bytes; for a
  // transposed convolution, input positions) run their GEMMs image by image: no forward result to copy out of a
  // scratch into the output, no gathered grad_output for grad_input or
  // grad_weight (three output-sized copies a step, read and written). A
  // GEMM over one image of 3136 positions rounds up to its last 128-wide
  // tile by 2 %; over 784 (28x28) by 12 %, so smaller images keep the
  // chunk's one GEMM. Not yet timed on a GPU.
  t.image_gemm_min_positions = 2048;
  t.column_row_bytes = 32;  // rows of columns on whole sectors: coalesced stores, tensor-op GEMMs
  // chunks of 32 MiB, or 4096 positions where images are larger: the GEMMs
  // stay large enough for the GPU, the columns no longer take the whole
  // batch's memory (2-2.6x cuDNN's peak on the H200 when they did, measured
  // 2026-12-04). 4096, not 8192: a
  // 256-channel 14x14 batch of 32 (6272 positions) would take its whole
  // columns, 55 MiB, and one fwd+bwd 1.8x cuDNN's peak memory (issue 25's
  // target: 1.3x); now 2 chunks of 16 images (docs/gpu.md). Float32's
  // bytes: float16 / bfloat16 take the same images, 16 MiB (chunk_cap),
  // where 32 MiB took twice float32's images and the 14x14 layer's whole
  // batch (about 2x cuDNN's memory, were cuDNN's half its float32 peak;
  // grad_weight's float32 image products keep float32's cap). Not yet
  // timed on a GPU.
  t.chunk_bytes = int64_t{32} << 20;
  t.chunk_min_positions = 4096;
  return t;
}

// The CUDA backend's tuning in effect: cuda_backend_tuning() with the
// overrides of myconv::set_cuda_tuning (csrc/cuda_tuning.cpp). The CUDA
// backend plans with it, and so does the CPU replay of its plan.
Tuning cuda_tuning_in_effect();

// The choices set_cuda_tuning may override, as "key=value,..." (every key).
std::string describe_cuda_tuning(const Tuning& t);

} // namespace myconv::detail
