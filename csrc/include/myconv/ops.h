// myconv's functional C++ API: the operators, called through the PyTorch
// dispatcher, so each gets the same device dispatch (CPU / CUDA / Meta) and the
// same autograd as `torch.ops.myconv.*` in Python; and the process-wide
// settings. Link against the myconv library (find_package(myconv):
// myconv::myconv) before calling them: the operator schemas are registered when
// the library is loaded. The LibTorch modules are in <myconv/nn.h>; the entry
// point <myconv/myconv.h> includes both.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymIntArrayRef.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/string_view.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>

namespace myconv {

// Convolutions of 1, 2 and 3 spatial dimensions, computed as im2col + GEMM
// (one composition for all three: a 1-D or 2-D problem is a 3-D one with unit
// leading sizes).

// Same semantics as torch.nn.functional.conv1d with integer padding.
// input: (N, C_in, L) or unbatched (C_in, L); weight: (C_out, C_in/groups, kW).
at::Tensor conv1d(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride = {1},
    at::IntArrayRef padding = {0},
    at::IntArrayRef dilation = {1},
    int64_t groups = 1);

// Same semantics as torch.nn.functional.conv3d with integer padding.
// input: (N, C_in, D, H, W) or unbatched (C_in, D, H, W); weight:
// (C_out, C_in/groups, kT, kH, kW).
at::Tensor conv3d(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride = {1, 1, 1},
    at::IntArrayRef padding = {0, 0, 0},
    at::IntArrayRef dilation = {1, 1, 1},
    int64_t groups = 1);

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

// The convNd.padding overloads of conv1d and conv3d (see conv2d_padding).
at::Tensor conv1d_padding(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    c10::string_view padding,
    at::IntArrayRef dilation = {1},
    int64_t groups = 1);
at::Tensor conv3d_padding(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    c10::string_view padding,
    at::IntArrayRef dilation = {1, 1, 1},
    int64_t groups = 1);

// Gradients of conv1d / conv2d / conv3d: (grad_input, grad_weight,
// grad_bias). Entries whose output_mask is false are returned undefined and
// never computed.
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv1d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups,
    std::array<bool, 3> output_mask);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3d_backward(
    const at::Tensor& grad_output,
    const at::Tensor& input,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    int64_t groups,
    std::array<bool, 3> output_mask);
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

// Same semantics as torch.nn.functional.conv_transpose1d / conv_transpose3d
// (weight (C_in, C_out/groups, kW) / (C_in, C_out/groups, kT, kH, kW)).
at::Tensor conv_transpose1d(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias = std::nullopt,
    at::IntArrayRef stride = {1},
    at::IntArrayRef padding = {0},
    at::IntArrayRef output_padding = {0},
    int64_t groups = 1,
    at::IntArrayRef dilation = {1});
at::Tensor conv_transpose3d(
    const at::Tensor& input,
    const at::Tensor& weight,
    const std::optional<at::Tensor>& bias = std::nullopt,
    at::IntArrayRef stride = {1, 1, 1},
    at::IntArrayRef padding = {0, 0, 0},
    at::IntArrayRef output_padding = {0, 0, 0},
    int64_t groups = 1,
    at::IntArrayRef dilation = {1, 1, 1});

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
// partial sums) one convolution call allocates. Work is cut so that it stays below
// it (at least one output position at a time, whatever the limit). Default
// 256 MiB, or MYCONV_WORKSPACE_MB from the environment when the library is
// first used.
int64_t workspace_limit_bytes();
void set_workspace_limit_bytes(int64_t bytes);

// Target size, in bytes, of one CPU column tile: the columns im2col writes and
// the GEMM reads while they are still in cache. 0 (default): twice the L2
// cache of a core. A tuning and testing knob; results do not depend on the thread
// count whatever its value.
int64_t tile_bytes();
void set_tile_bytes(int64_t bytes);

// The engine of the CPU backend's GEMMs: "auto" (default: oneDNN's matmul
// for float32 GEMMs with enough work, the BLAS's sgemm / dgemm for the rest,
// ATen where neither takes the operands or torch was built without them), or
// "onednn", "blas", "aten" for every GEMM it can take (benchmarks, tests).
// oneDNN is used only while it computes float32 in float32 (torch's
// torch.backends.mkldnn.matmul.fp32_precision "ieee" or "none") and is
// enabled (torch.backends.mkldnn.enabled); otherwise the BLAS runs its GEMMs.
// Each engine is deterministic and independent of the thread count; engines
// may differ from each other in the last bits.
std::string cpu_gemm_engine();
void set_cpu_gemm_engine(const std::string& engine);

// Autotuning of the CPU work plan, off by default: with it on, the first call
// of a new problem (per pass, sizes, window, dtype, layout and thread count)
// times the candidate tile sizes on the real pass and keeps the fastest for
// later calls. Each plan's results are deterministic, but the plan is picked
// by a clock: a tuned plan may differ from the default one, and from the plan
// another process or thread count picked, in the last bits. A tile size set
// with set_tile_bytes is never tuned.
bool autotune();
void set_autotune(bool on);

// Verbose calls (MYCONV_VERBOSE in the environment sets the starting level):
// 0 off (default); 1, one line per convolution call naming the op, shapes,
// dtype, device and each pass's plan (path, layout, GEMM engine, tiles,
// workers, workspace); 2, the call's time too (measured after a device
// synchronisation on CUDA). Lines go to stderr, or in Python to the "myconv"
// logger. Off, a call pays one flag check.
int verbose();
void set_verbose(int64_t level);

// For experiments on a GPU: overrides of the CUDA backend's plan choices
// (csrc/cuda_tuning.h), as "key=value" items separated by commas, such as
// "chunk_min_positions=8192,grad_weight_image_products=0"; "" restores the
// defaults. Keys: chunk_bytes (bytes of float32 columns: other dtypes take
// as many elements), chunk_min_positions, image_gemm_min_positions (0:
// never; from 0 to 2^40),
// column_row_bytes (0 or a power of two up to 4096; up to the element size:
// unpadded rows), gemm_on_views, image_batched_views,
// grad_weight_image_products, view_chunks, channels_last, direct_grouped
// (0 / 1 / false / true). An unknown key or a bad value raises
// and changes nothing. Every choice computes the same convolution; the
// results may differ in the last bits (another cut of the work). The CPU
// replay of the CUDA plan (set_cpu_whole_image_plan) takes them too.
// cuda_tuning() returns every key's value in effect.
std::string cuda_tuning();
void set_cuda_tuning(const std::string& overrides);

// For tests: run the CPU backend with the CUDA backend's work plan (chunks
// of whole images, one item per pass, all groups in one batched GEMM, NCHW
// columns only, 1x1 GEMMs on views, direct grouped kernels: the CPU's) and
// the CUDA backend's cuBLAS calls,
// replayed by a reference column-major GEMM that reads operands only as
// cuBLAS would (csrc/blas_plan.h), so that the composition the CUDA backend
// runs is exercised without a GPU. Off by default.
bool cpu_whole_image_plan();
void set_cpu_whole_image_plan(bool on);

// The plans a convolution call would run, without running it, as a JSON
// object: what Python's myconv.explain() returns as a dict (op, device,
// dtype, shapes, and "forward" / "backward": each pass's path, layout, GEMM
// engine, tiles, blocks, work items, workers, workspace bytes and a one-line
// "summary"). op: "conv1d" ... "conv3d", "conv_transpose1d" ...
// "conv_transpose3d"; output_padding: transposed ops only (empty: zeros);
// device: "" for the tensors' own (the CPU for meta tensors), or "cpu" /
// "cuda" (any build with that backend). Tensors may be meta tensors.
std::string explain(const std::string& op, const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                    at::IntArrayRef dilation, int64_t groups, at::IntArrayRef output_padding = {},
                    const std::string& device = "");

// For tests: the most workspace, in bytes, that the latest convolution call
// (forward, backward or transposed) made by this thread held at once (column tiles,
// per-thread buffers, partial sums, packed weight blocks).
int64_t last_workspace_peak_bytes();

} // namespace myconv
