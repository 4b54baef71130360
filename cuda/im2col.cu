// The CUDA im2col / col2im launches: a grid-stride loop kernel around the
// per-element work of im2col_elements.h (which the host tests run too),
// launched on PyTorch's current stream.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"

namespace myconv::cuda {
namespace {

// The pointers come in as __restrict__ kernel parameters and the Access is
// built from them here, so that the input's loads take the read-only path.
template <typename Work, typename Access>
__global__ void grid_stride_kernel(int64_t total, Geom g, const typename Access::In* __restrict__ in,
                                   typename Access::Out* __restrict__ out) {
  Access io{in, out};
  auto element = [&](int64_t i) { Work::run(g, i, io); };
  grid_stride(blockIdx.x, threadIdx.x, gridDim.x, total, element);
}

struct DeviceLauncher {
  template <typename Work, typename Access>
  void run(int64_t total, const Geom& g, const typename Access::In* in, typename Access::Out* out) const {
    grid_stride_kernel<Work, Access>
        <<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(total, g, in, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

} // namespace

void im2col(const at::Tensor& images, const detail::ConvGeometry& g, const detail::ColumnTile& tile,
            const at::Tensor& columns, detail::ColumnLayout layout) {
  launch_im2col(DeviceLauncher{}, images, g, tile, columns, layout);
}

void col2im(const at::Tensor& columns, detail::ColumnLayout layout, const detail::ColumnTile& tile,
            const detail::ConvGeometry& g, const at::Tensor& images) {
  launch_col2im(DeviceLauncher{}, columns, layout, tile, g, images);
}

} // namespace myconv::cuda
