// What each thread of the CUDA im2col / col2im kernels does, written once for
// the device and the host.
//
// cuda/im2col.cu wraps these functions in __global__ grid-stride loops; the
// GoogleTest suite (tests/cpp/test_cuda_elements.cpp) compiles this very
// header with the host compiler and runs the same functions over the same
// thread -> element mapping, so the kernels' index arithmetic, their coverage
// (which elements, in which order) and their results are checked on machines
// without a GPU. Plain integers and templates only: no CUDA runtime here.
//
// Memory is reached only through an Access object (store / load / sum), so
// that a host test can count writes, trace gathers, or record the offsets of
// a problem too large to allocate. All index arithmetic is 64-bit: column
// buffers and images can pass 2^31 elements.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__CUDACC__)
#define MYCONV_HOST_DEVICE __host__ __device__
#else
#define MYCONV_HOST_DEVICE
#endif

namespace myconv::cuda {

// ---- the thread -> element mapping ---------------------------------------------

constexpr int kThreads = 256;                        // threads per block
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // blocks per launch, at most

// Blocks for a grid-stride loop over n elements: enough to fill the GPU, no
// more than needed.
inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

// The grid-stride loop of thread `thread` of block `block` in a grid of
// `blocks` blocks of kThreads: elements thread + block * kThreads, then every
// kThreads * blocks further, below total.
template <typename F>
MYCONV_HOST_DEVICE inline void grid_stride(int64_t block, int64_t thread, int64_t blocks, int64_t total, F& fn) {
  for (int64_t i = block * kThreads + thread; i < total; i += int64_t{kThreads} * blocks) {
    fn(i);
  }
}

// ---- geometry ----------------------------------------------------------------------

// One (C, D, H, W) image, the sliding window over it and where its column
// matrix lives: column entry (b, row, position) at b * batch_stride + row *
// row_stride + position, rows ordered (c, kd, kh, kw), positions (od, oh,
// ow). 1-D and 2-D images have unit leading sizes (depth 1, kernel_d 1, ...).
// out_d / out_h / out_w may be fewer than the window's positions (a
// transposed convolution's output_padding): the missing positions do not
// exist.
struct Geom {
  int64_t channels, depth, height, width;
  int64_t kernel_d, kernel_h, kernel_w, stride_d, stride_h, stride_w;
  int64_t pad_d, pad_h, pad_w, dilation_d, dilation_h, dilation_w;
  int64_t out_d, out_h, out_w;
  int64_t batch_stride, row_stride;
};

// Elements (threads' work items) of each kernel over `batch` images.
MYCONV_HOST_DEVICE inline int64_t im2col_elements(const Geom& g, int64_t batch) {
  return batch * g.channels * g.out_d * g.out_h * g.out_w;  // one per (b, c, od, oh, ow)
}
MYCONV_HOST_DEVICE inline int64_t col2im_elements(const Geom& g, int64_t batch) {
  return batch * g.channels * g.depth * g.height * g.width;  // one per image element (b, c, d, h, w)
}

// ---- per-element work ----------------------------------------------------------------

// im2col element i = (b, c, od, oh, ow): writes that position's kD*kH*kW
// column entries, tap by tap in (kd, kh, kw) order: io.copy(column, image),
// image -1 (a zero) where the tap lies in the padding.
// Consecutive threads write consecutive columns (coalesced).
template <typename Access>
MYCONV_HOST_DEVICE inline void im2col_element(const Geom& g, int64_t i, Access& io) {
  const int64_t ow = i % g.out_w;
  const int64_t oh = (i / g.out_w) % g.out_h;
  const int64_t od = (i / (g.out_w * g.out_h)) % g.out_d;
  const int64_t c = (i / (g.out_w * g.out_h * g.out_d)) % g.channels;
  const int64_t b = i / (g.out_w * g.out_h * g.out_d * g.channels);
  const int64_t plane = (b * g.channels + c) * g.depth * g.height * g.width;
  int64_t dst = b * g.batch_stride + (c * g.kernel_d * g.kernel_h * g.kernel_w) * g.row_stride +
                (od * g.out_h + oh) * g.out_w + ow;
  for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
    const int64_t id = od * g.stride_d - g.pad_d + kd * g.dilation_d;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
        const bool inside = id >= 0 && id < g.depth && ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
        io.copy(dst, inside ? plane + (id * g.height + ih) * g.width + iw : -1);
        dst += g.row_stride;
      }
    }
  }
}

// The output position whose tap k (with dilation, stride, padding) reads
// input index x along one axis, or -1: x + pad - k * dilation must be a
// multiple of the stride, and the position must exist.
MYCONV_HOST_DEVICE inline int64_t reading_position(int64_t x, int64_t k, int64_t stride, int64_t pad,
                                                   int64_t dilation, int64_t out) {
  const int64_t offset = x + pad - k * dilation;  // = position * stride
  return offset < 0 || offset % stride != 0 || offset / stride >= out ? -1 : offset / stride;
}

// col2im element i = (b, c, d, h, w): a gather. Sums the column entries of
// every window tap that reads the element, in (kd, kh, kw) order, into io's
// accumulator (float for reduced precision), then stores it at i. No
// atomics: the result is bitwise reproducible.
template <typename Access>
MYCONV_HOST_DEVICE inline void col2im_element(const Geom& g, int64_t i, Access& io) {
  const int64_t w = i % g.width;
  const int64_t h = (i / g.width) % g.height;
  const int64_t d = (i / (g.width * g.height)) % g.depth;
  const int64_t c = (i / (g.width * g.height * g.depth)) % g.channels;
  const int64_t b = i / (g.width * g.height * g.depth * g.channels);
  const int64_t src = b * g.batch_stride;
  auto sum = io.zero_sum();
  for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
    const int64_t od = reading_position(d, kd, g.stride_d, g.pad_d, g.dilation_d, g.out_d);
    if (od < 0) {
      continue;
    }
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t oh = reading_position(h, kh, g.stride_h, g.pad_h, g.dilation_h, g.out_h);
      if (oh < 0) {
        continue;
      }
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t ow = reading_position(w, kw, g.stride_w, g.pad_w, g.dilation_w, g.out_w);
        if (ow < 0) {
          continue;
        }
        const int64_t row = ((c * g.kernel_d + kd) * g.kernel_h + kh) * g.kernel_w + kw;
        io.add(sum, src + row * g.row_stride + (od * g.out_h + oh) * g.out_w + ow);
      }
    }
  }
  io.store(i, sum);
}

// ---- the memory access of the real kernels -------------------------------------------
// Built inside the kernel from its __restrict__ pointer parameters (so that
// loads of the input go through the read-only path), and on the host by the
// tests from plain pointers.

// im2col: images -> columns.
template <typename scalar_t>
struct Im2colAccess {
  using In = scalar_t;
  using Out = scalar_t;
  const scalar_t* images;
  scalar_t* columns;
  MYCONV_HOST_DEVICE void copy(int64_t column, int64_t image) const {
    columns[column] = image >= 0 ? images[image] : scalar_t(0);
  }
};

// col2im: columns -> images, summed in acc_t (float for float16 / bfloat16).
template <typename scalar_t, typename acc_t>
struct Col2imAccess {
  using In = scalar_t;
  using Out = scalar_t;
  const scalar_t* columns;
  scalar_t* images;
  MYCONV_HOST_DEVICE acc_t zero_sum() const { return acc_t(0); }
  MYCONV_HOST_DEVICE void add(acc_t& sum, int64_t column) const { sum += static_cast<acc_t>(columns[column]); }
  MYCONV_HOST_DEVICE void store(int64_t image, acc_t sum) const { images[image] = static_cast<scalar_t>(sum); }
};

// ---- the work of a launch ------------------------------------------------------------------

// What element i of a launch does, for any Access: the launchers' Work types.
struct Im2colWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const Geom& g, int64_t i, Access& io) {
    im2col_element(g, i, io);
  }
};

struct Col2imWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const Geom& g, int64_t i, Access& io) {
    col2im_element(g, i, io);
  }
};

} // namespace myconv::cuda
