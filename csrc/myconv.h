// myconv public C++ API.
//
// Every function here calls the operator through the PyTorch dispatcher, so it
// gets the same device dispatch (CPU / CUDA / Meta) and the same autograd as
// `torch.ops.myconv.*` in Python. Link against the myconv library (or load it
// with torch.ops.load_library) before calling them; the operator schemas are
// registered when the library is loaded.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

namespace myconv {

// Same semantics as torch.nn.functional.conv2d with integer padding.
// input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, kH, kW).
at::Tensor conv2d(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride = {1, 1},
    at::IntArrayRef padding = {0, 0},
    at::IntArrayRef dilation = {1, 1},
    int64_t groups = 1);

// The conv2d.padding overload: padding="same" or "valid", as F.conv2d accepts
// ("same": stride 1 only; an odd total padding puts the extra zero at the
// bottom / right). A separate name, so that conv2d(x, w, b, {1, 1}, {0, 0})
// stays unambiguous.
at::Tensor conv2d_padding(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    c10::string_view padding,
    at::IntArrayRef dilation = {1, 1},
    int64_t groups = 1);

// Gradients of conv2d: (grad_input, grad_weight, grad_bias). Entries whose
// output_mask is false are returned undefined and never computed.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups,
    std::array<bool, 3> output_mask);

// Same semantics as torch.nn.functional.conv_transpose2d: input (N, C_in, H, W)
// or unbatched, weight (C_in, C_out/groups, kH, kW). Computed as conv2d's
// input gradient (GEMM, then col2im); differentiable (double backward too).
at::Tensor conv_transpose2d(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias = std::nullopt,
    at::IntArrayRef stride = {1, 1},
    at::IntArrayRef padding = {0, 0},
    at::IntArrayRef output_padding = {0, 0},
    int64_t groups = 1,
    at::IntArrayRef dilation = {1, 1});

// Same semantics as torch.nn.functional.unfold: (N, C, H, W) -> (N, C*kH*kW, L),
// unbatched (C, H, W) -> (C*kH*kW, L).
at::Tensor im2col(
    const at::Tensor& input,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride);

// Same semantics as torch.nn.functional.fold: (N, C*kH*kW, L) -> (N, C, H, W),
// unbatched (C*kH*kW, L) -> (C, H, W).
at::Tensor col2im(
    const at::Tensor& input,
    at::IntArrayRef output_size,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride);

// col2im with a symbolic output_size (the schema's SymInt[2]), for callers
// that trace with dynamic shapes.
at::Tensor col2im_symint(
    const at::Tensor& input,
    c10::SymIntArrayRef output_size,
    at::IntArrayRef kernel_size,
    at::IntArrayRef dilation,
    at::IntArrayRef padding,
    at::IntArrayRef stride);

// Upper bound, in bytes, of the workspace (column tiles, per-thread buffers,
// partial sums) one conv2d call allocates. Work is cut so that it stays below
// it (at least one output position at a time, whatever the limit). Default
// 256 MiB, or MYCONV_WORKSPACE_MB from the environment when the library is
// first used.
int64_t workspace_limit_bytes();
void set_workspace_limit_bytes(int64_t bytes);

// Target size, in bytes, of one CPU column tile: the columns im2col writes and
// the GEMM reads while they are still in cache. 0 (default): half the L2 cache
// of a core. A tuning and testing knob; results do not depend on the thread
// count whatever its value.
int64_t tile_bytes();
void set_tile_bytes(int64_t bytes);

// For tests: run the CPU backend with the CUDA backend's work plan (chunks
// of whole images, one item per pass, all groups in one batched GEMM, NCHW
// columns only, no direct kernels) and the CUDA backend's cuBLAS calls,
// replayed by a reference column-major GEMM that reads operands only as
// cuBLAS would (csrc/blas_plan.h), so that the composition the CUDA backend
// runs is exercised without a GPU. Off by default.
bool cpu_whole_image_plan();
void set_cpu_whole_image_plan(bool on);

// For tests: the most workspace, in bytes, that the latest conv2d /
// conv2d_backward call made by this thread held at once (column tiles,
// per-thread buffers, partial sums, packed weight blocks).
int64_t last_workspace_peak_bytes();

} // namespace myconv
