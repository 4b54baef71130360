// The CUDA im2col / col2im launches: a grid-stride loop kernel around the
// per-element functors of im2col_elements.h (which the host tests run too),
// launched on PyTorch's current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"

namespace myconv::cuda {
namespace {

template <typename Op>
__global__ void grid_stride_kernel(int64_t total, Op op) {
  grid_stride(blockIdx.x, threadIdx.x, gridDim.x, total, op);
}

struct DeviceLauncher {
  template <typename Op>
  void operator()(int64_t total, const Op& op) const {
    grid_stride_kernel<<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(total, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

} // namespace

void im2col(const at::Tensor& images, const detail::PlaneGeometry& g, const at::Tensor& columns,
            detail::ColumnLayout layout) {
  launch_im2col(DeviceLauncher{}, images, g, columns, layout);
}

void col2im(const at::Tensor& columns, detail::ColumnLayout layout, const detail::PlaneGeometry& g,
            const at::Tensor& images) {
  launch_col2im(DeviceLauncher{}, columns, layout, g, images);
}

} // namespace myconv::cuda
