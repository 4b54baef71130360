// conv2d forward / backward and the im2col / col2im ops, composed once from a
// Backend's im2col, col2im and bmm. Nothing here depends on the device: the
// tensor bookkeeping uses ATen tensor methods, the heavy lifting goes through
// the backend.
//
// Column layout for conv2d: a chunk of `nb` images becomes one column matrix of
// shape (C*kH*kW, nb*L) (L = output positions per image), viewed per group as
// (groups, C/groups*kH*kW, nb*L). Then for the whole chunk and all groups:
//   forward      out[g]     = W[g]   @ cols[g]               (one batched GEMM)
//   grad_weight  gW[g]     += gout[g] @ cols[g]^T             (sums over the chunk)
//   grad_input   cols[g]    = W[g]^T @ gout[g];  gI = col2im(cols)
// where gout is grad_output of the chunk arranged as (C_out, nb*L). The chunk
// size is bounded by the workspace limit.
#include "conv2d_impl.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <string>

#include "myconv.h"

namespace myconv {
namespace {

constexpr int64_t kDefaultWorkspaceBytes = int64_t{256} << 20;

int64_t workspace_limit_from_env() {
  const char* env = std::getenv("MYCONV_WORKSPACE_MB");
  if (env == nullptr || *env == '\0') {
    return kDefaultWorkspaceBytes;
  }
  char* end = nullptr;
  const double mb = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(mb > 0) || mb > 1e12) {
    TORCH_WARN("myconv: ignoring MYCONV_WORKSPACE_MB='", env,
               "' (expected a positive number of MiB); using the default of 256 MiB");
    return kDefaultWorkspaceBytes;
  }
  return static_cast<int64_t>(mb * (1 << 20));
}

std::atomic<int64_t>& workspace_limit() {
  static std::atomic<int64_t> limit{workspace_limit_from_env()};
  return limit;
}

} // namespace

int64_t workspace_limit_bytes() {
  return workspace_limit().load(std::memory_order_relaxed);
}

void set_workspace_limit_bytes(int64_t bytes) {
  TORCH_CHECK(bytes > 0, "myconv: expected a positive workspace limit, but got ", bytes, " bytes");
  workspace_limit().store(bytes, std::memory_order_relaxed);
}

namespace detail {

int64_t batch_chunk(int64_t batch, int64_t bytes_per_image, int64_t cols_per_image) {
  if (batch <= 1 || bytes_per_image <= 0) {
    return std::max<int64_t>(batch, 1);
  }
  const int64_t by_memory = workspace_limit_bytes() / bytes_per_image;
  const int64_t by_blas = std::numeric_limits<int32_t>::max() / std::max<int64_t>(cols_per_image, 1);
  return std::clamp<int64_t>(std::min(by_memory, by_blas), 1, batch);
}

namespace {

bool is_reduced_precision(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

// The conv2d problem in concrete sizes, for a batched (4-D) input.
struct ConvProblem {
  PlaneGeometry plane;
  int64_t batch, out_channels, groups;

  ConvProblem(const at::Tensor& input4d, const at::Tensor& weight, at::IntArrayRef stride,
              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups)
      : plane(input4d.size(1), input4d.size(2), input4d.size(3),
              {weight.size(2), weight.size(3)}, stride, padding, dilation),
        batch(input4d.size(0)), out_channels(weight.size(0)), groups(groups) {}

  int64_t cols() const { return plane.cols(); }                      // L
  int64_t group_rows() const { return plane.rows() / groups; }       // C/groups*kH*kW
  int64_t group_out_channels() const { return out_channels / groups; }
  // Workspace per image: its columns plus its share of a GEMM result / a
  // rearranged grad_output (both C_out x L).
  int64_t workspace_per_image(int64_t element_size) const {
    return (plane.rows() + out_channels) * cols() * element_size;
  }
  ColumnLayout chunk_layout(int64_t nb) const { return {cols(), nb * cols()}; }
};

// Buffers reused by every chunk of one call: the column matrix, and (when a
// chunk holds more than one image) room for a (C_out, nb*L) matrix.
struct ChunkBuffers {
  at::Tensor columns, matrix;

  ChunkBuffers(const ConvProblem& p, int64_t chunk, const at::TensorOptions& options)
      : columns(at::empty({p.plane.rows() * chunk * p.cols()}, options)),
        matrix(chunk > 1 ? at::empty({p.out_channels * chunk * p.cols()}, options)
                         : at::Tensor()) {}

  // (groups, C/groups*kH*kW, nb*L) view of the columns of nb images.
  at::Tensor cols(const ConvProblem& p, int64_t nb) const {
    return columns.narrow(0, 0, p.plane.rows() * nb * p.cols())
        .view({p.groups, p.group_rows(), nb * p.cols()});
  }
  // (groups, C_out/groups, nb*L) scratch matrix for nb > 1 images.
  at::Tensor scratch(const ConvProblem& p, int64_t nb) const {
    return matrix.narrow(0, 0, p.out_channels * nb * p.cols())
        .view({p.groups, p.group_out_channels(), nb * p.cols()});
  }
};

} // namespace

at::Tensor conv2d(const Backend& backend, const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_conv2d("myconv::conv2d", input, weight, bias, stride, padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 4;
  const at::Tensor x = batched ? input.contiguous() : input.unsqueeze(0).contiguous();
  const ConvProblem p(x, weight, stride, padding, dilation, groups);
  const int64_t L = p.cols();

  at::Tensor out = at::empty({p.batch, p.out_channels, p.plane.out_h, p.plane.out_w}, x.options());
  if (p.batch > 0) {
    const at::Tensor w = weight.contiguous().view({groups, p.group_out_channels(), p.group_rows()});
    const bool has_bias = bias.has_value() && bias->defined();
    const at::Tensor b =
        has_bias ? bias->reshape({groups, p.group_out_channels(), 1}) : at::Tensor();
    const int64_t chunk = batch_chunk(p.batch, p.workspace_per_image(x.element_size()), L);
    const ChunkBuffers buffers(p, chunk, x.options());

    for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
      const int64_t nb = std::min(chunk, p.batch - n0);
      const at::Tensor cols = buffers.cols(p, nb);
      backend.im2col(x.narrow(0, n0, nb), p.plane, cols, p.chunk_layout(nb));

      // A single image's result is already in output layout; a chunk's result
      // is (C_out, nb, L) and is transposed into (nb, C_out, L) afterwards.
      const at::Tensor out_chunk = out.narrow(0, n0, nb);
      const at::Tensor result = nb == 1 ? out_chunk.view({groups, p.group_out_channels(), L})
                                        : buffers.scratch(p, nb);
      if (has_bias) {
        result.copy_(b.expand_as(result));
      }
      backend.bmm(w, cols, result, /*accumulate=*/has_bias);
      if (nb > 1) {
        out_chunk.view({nb, p.out_channels, L})
            .copy_(result.view({p.out_channels, nb, L}).transpose(0, 1));
      }
    }
  }
  out = out.contiguous(conv2d_memory_format(input, weight));
  return batched ? out : out.squeeze(0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward(
    const Backend& backend, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, std::array<bool, 3> output_mask) {
  check_conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 4;
  const at::Tensor x = batched ? input : input.unsqueeze(0);
  const at::Tensor gy = batched ? grad_output : grad_output.unsqueeze(0);
  const ConvProblem p(x, weight, stride, padding, dilation, groups);
  const int64_t L = p.cols();
  const auto [need_input, need_weight, need_bias] = output_mask;

  at::Tensor grad_input, grad_weight, grad_bias;
  if (need_bias) {
    grad_bias = gy.sum(at::IntArrayRef{0, 2, 3});
  }
  if (need_input) {
    grad_input = at::empty(x.sizes(), x.options());
  }
  if (need_weight && p.batch == 0) {
    grad_weight = at::zeros(weight.sizes(), weight.options());
  }

  if ((need_input || need_weight) && p.batch > 0) {
    // The input is only read to rebuild columns for grad_weight.
    const at::Tensor xc = need_weight ? x.contiguous() : at::Tensor();
    const at::Tensor gyc = gy.contiguous();
    const at::Tensor w = weight.contiguous().view({groups, p.group_out_channels(), p.group_rows()});
    const int64_t chunk = batch_chunk(p.batch, p.workspace_per_image(x.element_size()), L);
    const ChunkBuffers buffers(p, chunk, x.options());

    // grad_weight is summed over chunks in its own dtype, or in float32 for
    // reduced precision when there is more than one chunk.
    const bool wide_sum = need_weight && chunk < p.batch && is_reduced_precision(x.scalar_type());
    const std::array<int64_t, 3> gw_size{groups, p.group_out_channels(), p.group_rows()};
    at::Tensor gw_sum, gw_chunk;
    if (need_weight) {
      gw_sum = at::empty(gw_size, wide_sum ? x.options().dtype(at::kFloat) : x.options());
      gw_chunk = wide_sum ? at::empty(gw_size, x.options()) : gw_sum;
    }

    for (int64_t n0 = 0; n0 < p.batch; n0 += chunk) {
      const int64_t nb = std::min(chunk, p.batch - n0);
      const at::Tensor cols = buffers.cols(p, nb);
      // grad_output of the chunk as (groups, C_out/groups, nb*L).
      const at::Tensor gy_chunk = gyc.narrow(0, n0, nb);
      at::Tensor gy_mat;
      if (nb == 1) {
        gy_mat = gy_chunk.view({groups, p.group_out_channels(), L});
      } else {
        gy_mat = buffers.scratch(p, nb);
        gy_mat.view({p.out_channels, nb, L})
            .copy_(gy_chunk.view({nb, p.out_channels, L}).transpose(0, 1));
      }

      if (need_weight) {
        backend.im2col(xc.narrow(0, n0, nb), p.plane, cols, p.chunk_layout(nb));
        const bool accumulate = !wide_sum && n0 > 0;
        backend.bmm(gy_mat, cols.transpose(1, 2), gw_chunk, accumulate);
        if (wide_sum) {
          if (n0 == 0) {
            gw_sum.copy_(gw_chunk);
          } else {
            gw_sum.add_(gw_chunk);
          }
        }
      }
      if (need_input) {
        // The columns are free again: reuse them for the input-gradient columns.
        backend.bmm(w.transpose(1, 2), gy_mat, cols, /*accumulate=*/false);
        backend.col2im(cols, p.chunk_layout(nb), p.plane, grad_input.narrow(0, n0, nb));
      }
    }
    if (need_weight) {
      grad_weight = gw_sum.view(weight.sizes()).to(weight.scalar_type());
    }
  }

  if (need_input) {
    grad_input = grad_input.contiguous(input.suggest_memory_format());
    if (!batched) {
      grad_input = grad_input.squeeze(0);
    }
  }
  if (need_weight) {
    grad_weight = grad_weight.contiguous(weight.suggest_memory_format());
  }
  return {grad_input, grad_weight, grad_bias};
}

at::Tensor im2col(const Backend& backend, const at::Tensor& input, at::IntArrayRef kernel_size,
                  at::IntArrayRef dilation, at::IntArrayRef padding, at::IntArrayRef stride) {
  check_im2col(input, kernel_size, dilation, padding, stride);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 4;
  const at::Tensor x = batched ? input.contiguous() : input.unsqueeze(0).contiguous();
  const PlaneGeometry g(x.size(1), x.size(2), x.size(3), kernel_size, stride, padding, dilation);
  const at::Tensor out = at::empty({x.size(0), g.rows(), g.cols()}, x.options());
  if (x.size(0) > 0) {
    backend.im2col(x, g, out, {g.rows() * g.cols(), g.cols()});
  }
  return batched ? out : out.squeeze(0);
}

at::Tensor col2im(const Backend& backend, const at::Tensor& input, c10::SymIntArrayRef output_size,
                  at::IntArrayRef kernel_size, at::IntArrayRef dilation,
                  at::IntArrayRef padding, at::IntArrayRef stride) {
  check_col2im(input, output_size, kernel_size, dilation, padding, stride);
  const c10::OptionalDeviceGuard device_guard(input.device());
  const bool batched = input.dim() == 3;
  const at::Tensor cols = batched ? input.contiguous() : input.unsqueeze(0).contiguous();
  const int64_t channels = cols.size(1) / (kernel_size[0] * kernel_size[1]);
  const PlaneGeometry g(channels, output_size[0].expect_int(), output_size[1].expect_int(),
                        kernel_size, stride, padding, dilation);
  const at::Tensor out = at::empty({cols.size(0), channels, g.height, g.width}, cols.options());
  if (cols.size(0) > 0) {
    backend.col2im(cols, {g.rows() * g.cols(), g.cols()}, g, out);
  }
  return batched ? out : out.squeeze(0);
}

} // namespace detail
} // namespace myconv
