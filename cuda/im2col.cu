// CUDA im2col / col2im kernels. All index arithmetic is 64-bit: column
// buffers and images can pass 2^31 elements.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernels.h"

namespace myconv::cuda {
namespace {

using detail::ColumnLayout;
using detail::PlaneGeometry;

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, no
// more than needed.
unsigned int blocks_for(int64_t n) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 16;
  return static_cast<unsigned int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// Kernel arguments: the geometry as plain integers.
struct Geom {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t out_h, out_w;
  int64_t batch_stride, row_stride;
};

Geom make_geom(const PlaneGeometry& g, ColumnLayout layout) {
  return {g.channels, g.height, g.width, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w,
          g.pad_h, g.pad_w, g.dilation_h, g.dilation_w, g.out_h, g.out_w,
          layout.batch_stride, layout.row_stride};
}

// One thread per (b, c, oh, ow): writes that position's kH*kW column entries.
// Consecutive threads write consecutive columns (coalesced).
template <typename scalar_t>
__global__ void im2col_kernel(const scalar_t* __restrict__ images, scalar_t* __restrict__ columns,
                              Geom g, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t ow = i % g.out_w;
    const int64_t oh = (i / g.out_w) % g.out_h;
    const int64_t c = (i / (g.out_w * g.out_h)) % g.channels;
    const int64_t b = i / (g.out_w * g.out_h * g.channels);
    const scalar_t* plane = images + (b * g.channels + c) * g.height * g.width;
    scalar_t* dst = columns + b * g.batch_stride + (c * g.kernel_h * g.kernel_w) * g.row_stride +
                    oh * g.out_w + ow;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
        *dst = inside ? plane[ih * g.width + iw] : scalar_t(0);
        dst += g.row_stride;
      }
    }
  }
}

// One thread per image element (b, c, h, w): gathers the column entries of
// every window tap that reads it, in (kh, kw) order.
template <typename scalar_t>
__global__ void col2im_kernel(const scalar_t* __restrict__ columns, scalar_t* __restrict__ images,
                              Geom g, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{blockDim.x} * gridDim.x) {
    const int64_t w = i % g.width;
    const int64_t h = (i / g.width) % g.height;
    const int64_t c = (i / (g.width * g.height)) % g.channels;
    const int64_t b = i / (g.width * g.height * g.channels);
    const scalar_t* src = columns + b * g.batch_stride;
    acc_t sum = 0;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t h_off = h + g.pad_h - kh * g.dilation_h;  // = oh * stride_h
      if (h_off < 0 || h_off % g.stride_h != 0 || h_off / g.stride_h >= g.out_h) {
        continue;
      }
      const int64_t oh = h_off / g.stride_h;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t w_off = w + g.pad_w - kw * g.dilation_w;  // = ow * stride_w
        if (w_off < 0 || w_off % g.stride_w != 0 || w_off / g.stride_w >= g.out_w) {
          continue;
        }
        const int64_t row = (c * g.kernel_h + kh) * g.kernel_w + kw;
        sum += static_cast<acc_t>(src[row * g.row_stride + oh * g.out_w + w_off / g.stride_w]);
      }
    }
    images[i] = static_cast<scalar_t>(sum);
  }
}

// Both kernels read `src`, write `dst` and cover `total` work items with a
// grid-stride loop; launched on PyTorch's current stream.
template <typename scalar_t>
using Kernel = void (*)(const scalar_t*, scalar_t*, Geom, int64_t);

template <typename scalar_t>
void launch(Kernel<scalar_t> kernel, const at::Tensor& src, const at::Tensor& dst, const Geom& g,
            int64_t total) {
  kernel<<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      src.const_data_ptr<scalar_t>(), dst.mutable_data_ptr<scalar_t>(), g, total);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

} // namespace

void im2col(const at::Tensor& images, const PlaneGeometry& g, const at::Tensor& columns,
            ColumnLayout layout) {
  const int64_t total = images.size(0) * g.channels * g.out_h * g.out_w;  // one per (b, c, oh, ow)
  if (total == 0) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(),
                                  "myconv_im2col_cuda", [&] {
    launch<scalar_t>(im2col_kernel<scalar_t>, images, columns, make_geom(g, layout), total);
  });
}

void col2im(const at::Tensor& columns, ColumnLayout layout, const PlaneGeometry& g,
            const at::Tensor& images) {
  const int64_t total = images.numel();  // one per image element
  if (total == 0) {
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, images.scalar_type(),
                                  "myconv_col2im_cuda", [&] {
    launch<scalar_t>(col2im_kernel<scalar_t>, columns, images, make_geom(g, layout), total);
  });
}

} // namespace myconv::cuda
