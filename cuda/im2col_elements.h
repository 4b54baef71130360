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
#define MYCONV_RESTRICT __restrict__

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

// One (C, H, W) image, the sliding window over it and where its column matrix
// lives: column entry (b, row, position) at b * batch_stride + row * row_stride
// + position, rows ordered (c, kh, kw), positions (oh, ow). out_h / out_w may
// be fewer than the window's positions (a transposed convolution's
// output_padding): the missing positions do not exist.
struct Geom {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t out_h, out_w;
  int64_t batch_stride, row_stride;
};

// Elements (threads' work items) of each kernel over `batch` images.
MYCONV_HOST_DEVICE inline int64_t im2col_elements(const Geom& g, int64_t batch) {
  return batch * g.channels * g.out_h * g.out_w;  // one per (b, c, oh, ow)
}
MYCONV_HOST_DEVICE inline int64_t col2im_elements(const Geom& g, int64_t batch) {
  return batch * g.channels * g.height * g.width;  // one per image element (b, c, h, w)
}

// ---- per-element work ----------------------------------------------------------------

// im2col element i = (b, c, oh, ow): writes that position's kH*kW column
// entries, tap by tap in (kh, kw) order: io.copy(column, image) where the tap
// lies in the image, io.zero(column) in the padding. Consecutive threads write
// consecutive columns (coalesced).
template <typename Access>
MYCONV_HOST_DEVICE inline void im2col_element(const Geom& g, int64_t i, Access& io) {
  const int64_t ow = i % g.out_w;
  const int64_t oh = (i / g.out_w) % g.out_h;
  const int64_t c = (i / (g.out_w * g.out_h)) % g.channels;
  const int64_t b = i / (g.out_w * g.out_h * g.channels);
  const int64_t plane = (b * g.channels + c) * g.height * g.width;
  int64_t dst = b * g.batch_stride + (c * g.kernel_h * g.kernel_w) * g.row_stride + oh * g.out_w + ow;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
      if (ih >= 0 && ih < g.height && iw >= 0 && iw < g.width) {
        io.copy(dst, plane + ih * g.width + iw);
      } else {
        io.zero(dst);
      }
      dst += g.row_stride;
    }
  }
}

// col2im element i = (b, c, h, w): a gather. Sums the column entries of
// every window tap that reads the element, in (kh, kw) order, into io's
// accumulator (float for reduced precision), then stores it at i. No
// atomics: the result is bitwise reproducible.
template <typename Access>
MYCONV_HOST_DEVICE inline void col2im_element(const Geom& g, int64_t i, Access& io) {
  const int64_t w = i % g.width;
  const int64_t h = (i / g.width) % g.height;
  const int64_t c = (i / (g.width * g.height)) % g.channels;
  const int64_t b = i / (g.width * g.height * g.channels);
  const int64_t src = b * g.batch_stride;
  auto sum = io.zero_sum();
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
      io.add(sum, src + row * g.row_stride + oh * g.out_w + w_off / g.stride_w);
    }
  }
  io.store(i, sum);
}

// ---- the memory access of the real kernels -------------------------------------------

// im2col: images -> columns.
template <typename scalar_t>
struct Im2colAccess {
  const scalar_t* MYCONV_RESTRICT images;
  scalar_t* MYCONV_RESTRICT columns;
  MYCONV_HOST_DEVICE void copy(int64_t column, int64_t image) const { columns[column] = images[image]; }
  MYCONV_HOST_DEVICE void zero(int64_t column) const { columns[column] = scalar_t(0); }
};

// col2im: columns -> images, summed in acc_t (float for float16 / bfloat16).
template <typename scalar_t, typename acc_t>
struct Col2imAccess {
  const scalar_t* MYCONV_RESTRICT columns;
  scalar_t* MYCONV_RESTRICT images;
  MYCONV_HOST_DEVICE acc_t zero_sum() const { return acc_t(0); }
  MYCONV_HOST_DEVICE void add(acc_t& sum, int64_t column) const { sum += static_cast<acc_t>(columns[column]); }
  MYCONV_HOST_DEVICE void store(int64_t image, acc_t sum) const { images[image] = static_cast<scalar_t>(sum); }
};

// ---- what one launch runs --------------------------------------------------------------

// The work of element i of a launch, as functors (no extended lambdas needed
// in the kernels).
template <typename Access>
struct Im2colOp {
  Geom g;
  Access io;
  MYCONV_HOST_DEVICE void operator()(int64_t i) { im2col_element(g, i, io); }
};

template <typename Access>
struct Col2imOp {
  Geom g;
  Access io;
  MYCONV_HOST_DEVICE void operator()(int64_t i) { col2im_element(g, i, io); }
};

} // namespace myconv::cuda
