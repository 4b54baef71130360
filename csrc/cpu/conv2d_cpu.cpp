// CPU backend: im2col / col2im kernels, GEMM through ATen's BLAS, and the CPU
// registration of the composed ops.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../conv2d_impl.h"

namespace myconv::detail {
namespace {

// Positions o in [0, count) whose tap o*stride + offset lands in [0, size):
// the half-open range [begin, end).
struct ValidRange {
  int64_t begin, end;
};

ValidRange valid_range(int64_t offset, int64_t stride, int64_t size, int64_t count) {
  // o*stride + offset >= 0    <=>  o >= ceil(-offset / stride)
  // o*stride + offset < size  <=>  o <  ceil((size - offset) / stride)
  const int64_t begin = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t end = size - offset <= 0 ? 0 : (size - offset + stride - 1) / stride;
  const int64_t clamped_end = std::clamp<int64_t>(end, 0, count);
  return {std::min(begin, clamped_end), clamped_end};
}

// Items per parallel task, so that each task has about as much work as ATen's
// own grain (32768 elements) and small problems stay on one thread.
int64_t grain_for(int64_t work_per_item) {
  constexpr int64_t kGrainElements = 32768;
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, work_per_item));
}

template <typename scalar_t>
void im2col_cpu_kernel(const scalar_t* images, int64_t batch, const PlaneGeometry& g,
                       scalar_t* columns, ColumnLayout layout) {
  const int64_t kernel_area = g.kernel_h * g.kernel_w;
  const int64_t rows = g.rows();
  // One task = one column-matrix row (image b, channel c, tap kh, kw).
  at::parallel_for(0, batch * rows, grain_for(g.cols()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / rows;
      const int64_t r = i % rows;
      const int64_t c = r / kernel_area;
      const int64_t kh = (r % kernel_area) / g.kernel_w;
      const int64_t kw = r % g.kernel_w;
      const scalar_t* plane = images + (b * g.channels + c) * g.height * g.width;
      scalar_t* dst = columns + b * layout.batch_stride + r * layout.row_stride;

      const int64_t w_offset = kw * g.dilation_w - g.pad_w;
      const ValidRange ow = valid_range(w_offset, g.stride_w, g.width, g.out_w);
      for (int64_t oh = 0; oh < g.out_h; ++oh) {
        scalar_t* out_row = dst + oh * g.out_w;
        const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
        if (ih < 0 || ih >= g.height) {
          std::fill(out_row, out_row + g.out_w, scalar_t(0));
          continue;
        }
        // Input element of output position o: in_row[o * stride_w + w_offset].
        const scalar_t* in_row = plane + ih * g.width;
        std::fill(out_row, out_row + ow.begin, scalar_t(0));
        if (g.stride_w == 1 && ow.begin < ow.end) {
          std::copy(in_row + (ow.begin + w_offset), in_row + (ow.end + w_offset), out_row + ow.begin);
        } else {
          for (int64_t o = ow.begin; o < ow.end; ++o) {
            out_row[o] = in_row[o * g.stride_w + w_offset];
          }
        }
        std::fill(out_row + ow.end, out_row + g.out_w, scalar_t(0));
      }
    }
  });
}

// Each task owns whole image planes (b, c), so no two threads write the same
// element. Within a plane, contributions are added tap by tap in (kh, kw)
// order: every element receives its contributions in that fixed order (the
// same sums a per-element gather in (kh, kw) order computes), whatever the
// thread count. Reduced precision accumulates in a float plane.
template <typename scalar_t>
void col2im_cpu_kernel(const scalar_t* columns, ColumnLayout layout, const PlaneGeometry& g,
                       int64_t batch, scalar_t* images) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kWideAccumulator = !std::is_same_v<acc_t, scalar_t>;
  const int64_t plane_size = g.height * g.width;
  at::parallel_for(0, batch * g.channels, grain_for(g.cols() * g.kernel_h * g.kernel_w),
                   [&](int64_t begin, int64_t end) {
    std::vector<acc_t> wide(kWideAccumulator ? plane_size : 0);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / g.channels;
      const int64_t c = p % g.channels;
      scalar_t* image = images + p * plane_size;
      acc_t* acc;
      if constexpr (kWideAccumulator) {
        acc = wide.data();
      } else {
        acc = image;
      }
      std::fill(acc, acc + plane_size, acc_t(0));

      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          const int64_t r = (c * g.kernel_h + kh) * g.kernel_w + kw;
          const scalar_t* src = columns + b * layout.batch_stride + r * layout.row_stride;
          const int64_t w_offset = kw * g.dilation_w - g.pad_w;
          const ValidRange ow = valid_range(w_offset, g.stride_w, g.width, g.out_w);
          for (int64_t oh = 0; oh < g.out_h; ++oh) {
            const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
            if (ih < 0 || ih >= g.height) {
              continue;
            }
            acc_t* acc_row = acc + ih * g.width;
            const scalar_t* src_row = src + oh * g.out_w;
            for (int64_t o = ow.begin; o < ow.end; ++o) {
              acc_row[o * g.stride_w + w_offset] += static_cast<acc_t>(src_row[o]);
            }
          }
        }
      }
      if constexpr (kWideAccumulator) {
        std::transform(acc, acc + plane_size, image,
                       [](acc_t v) { return static_cast<scalar_t>(v); });
      }
    }
  });
}

class CpuBackend final : public Backend {
 public:
  void im2col(const at::Tensor& images, const PlaneGeometry& g, const at::Tensor& columns,
              ColumnLayout layout) const override {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(),
                                    "myconv_im2col_cpu", [&] {
      im2col_cpu_kernel<scalar_t>(images.const_data_ptr<scalar_t>(), images.size(0), g,
                                  columns.mutable_data_ptr<scalar_t>(), layout);
    });
  }

  void col2im(const at::Tensor& columns, ColumnLayout layout, const PlaneGeometry& g,
              const at::Tensor& images) const override {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(),
                                    "myconv_col2im_cpu", [&] {
      col2im_cpu_kernel<scalar_t>(columns.const_data_ptr<scalar_t>(), layout, g, images.size(0),
                                  images.mutable_data_ptr<scalar_t>());
    });
  }

  void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
           bool accumulate) const override {
    if (accumulate) {
      c.baddbmm_(a, b);
    } else {
      at::Tensor out = c;
      at::bmm_out(out, a, b);
    }
  }
};

} // namespace

TORCH_LIBRARY_IMPL(myconv, CPU, m) {
  register_backend_kernels<CpuBackend>(m);
}

} // namespace myconv::detail
