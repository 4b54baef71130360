// The CUDA direct grouped launches: kernels around the per-element work of
// grouped_elements.h (which the host tests run too), launched on PyTorch's
// current stream. Forward and grad_input: grid-stride loops, one element per
// thread. grad_weight: block-stride loops, one (weight element, slice of the
// output positions) per block (channels-last: a run of output channels), its
// lanes' sums added by a fixed tree in shared memory; with several slices, a
// grid-stride loop adding each element's slice sums in order.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "grouped_kernels.h"

namespace myconv::cuda {
namespace {

// The pointers come in as __restrict__ kernel parameters and the Access is
// built from them here, so that the inputs' loads take the read-only path.
template <typename Work, typename Access>
__global__ void __launch_bounds__(kThreads)
    grouped_elements_kernel(int64_t total, GroupedGeom g, const typename Access::In* __restrict__ a,
                            const typename Access::In* __restrict__ b, const typename Access::In* __restrict__ c,
                            typename Access::Out* __restrict__ out) {
  Access io{a, b, c, out};
  auto element = [&](int64_t i) { Work::run(g, i, io); };
  grid_stride(blockIdx.x, threadIdx.x, gridDim.x, total, element);
}

template <typename Work, typename Access>
__global__ void __launch_bounds__(kLanes)
    grouped_reductions_kernel(int64_t total, GroupedGeom g, const typename Access::In* __restrict__ a,
                              const typename Access::In* __restrict__ b, const typename Access::In* __restrict__ c,
                              typename Access::Out* __restrict__ out) {
  using Acc = typename Access::Acc;
  __shared__ Acc sums[kLanes];
  Access io{a, b, c, out};
  const int64_t lane = threadIdx.x;
  const int64_t outputs = Work::outputs(g);  // (a power of two up to kLanes)
  auto element = [&](int64_t e) {
    sums[lane] = Work::partial(g, e, lane, kLanes, io);
    __syncthreads();
    for (int64_t half = kLanes / 2; half >= outputs; half /= 2) {
      lane_tree_step(sums, lane, half);
      __syncthreads();
    }
    if (lane < outputs) {
      const int64_t target = Work::target(g, e, lane);
      if (target >= 0) {
        io.store(target, sums[lane]);
      }
    }
    __syncthreads();  // the totals read before the next element's lanes write
  };
  block_stride(blockIdx.x, gridDim.x, total, element);
}

struct DeviceLauncher {
  template <typename Work, typename Access>
  void elements(int64_t total, const GroupedGeom& g, const typename Access::In* a, const typename Access::In* b,
                const typename Access::In* c, typename Access::Out* out) const {
    grouped_elements_kernel<Work, Access>
        <<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(total, g, a, b, c, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename Work, typename Access>
  void reductions(int64_t total, const GroupedGeom& g, const typename Access::In* a, const typename Access::In* b,
                  const typename Access::In* c, typename Access::Out* out) const {
    grouped_reductions_kernel<Work, Access>
        <<<reduction_blocks_for(total), kLanes, 0, c10::cuda::getCurrentCUDAStream()>>>(total, g, a, b, c, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

} // namespace

void grouped_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                     const detail::ConvGeometry& g, int64_t groups, bool channels_last, const at::Tensor& out) {
  launch_grouped_forward(DeviceLauncher{}, x, w, bias, g, groups, channels_last, out);
}

void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w, const detail::ConvGeometry& g, int64_t groups,
                        bool channels_last, const at::Tensor& gi) {
  launch_grouped_grad_input(DeviceLauncher{}, gy, w, g, groups, channels_last, gi);
}

void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x, const detail::ConvGeometry& g,
                         int64_t groups, bool channels_last, const at::Tensor& gw) {
  launch_grouped_grad_weight(DeviceLauncher{}, gy, x, g, groups, channels_last, gw);
}

} // namespace myconv::cuda
