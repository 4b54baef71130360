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
// a problem too large to allocate.
//
// Index arithmetic: an element's coordinates come from its index by division
// by the launch's sizes. Where every index and size of a launch fits 31 bits
// (nearly always), the divisions are by precomputed 32-bit magic numbers (a
// multiply-high and a shift, as ATen's IntDivider); otherwise plain 64-bit
// divisions. Either way one definition of each element's work serves both,
// templated on the index type, and every offset is computed in 64 bits:
// column buffers and images can pass 2^31 elements.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>

#if defined(__CUDACC__)
#define MYCONV_HOST_DEVICE __host__ __device__
#else
#define MYCONV_HOST_DEVICE
#endif

namespace myconv::cuda {

// ---- the thread -> element mapping ---------------------------------------------

constexpr int kThreads = 256;                        // threads per block
constexpr int64_t kMaxBlocks = int64_t{1} << 16;  // blocks per launch, at most
constexpr int64_t kSectorBytes = 32;               // a memory transaction's sector

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

// ---- division by a launch's constants ----------------------------------------------

// n / d and n % d for a divisor fixed per launch. Divider<int64_t>: plain
// 64-bit division. Divider<uint32_t>: for 1 <= d and n below 2^31, a
// multiply-high by a magic number and a shift (Granlund and Montgomery; the
// form of ATen's cuda/detail/IntegerDivider.cuh): exact, and several times
// cheaper than a hardware division on a GPU.
template <typename Index>
struct Divider;

template <>
struct Divider<int64_t> {
  int64_t d = 1;
  Divider() = default;
  MYCONV_HOST_DEVICE explicit Divider(int64_t divisor) : d(divisor) {}
  MYCONV_HOST_DEVICE int64_t div(int64_t n) const { return n / d; }
  MYCONV_HOST_DEVICE int64_t divmod(int64_t n, int64_t& remainder) const {
    const int64_t q = n / d;
    remainder = n - q * d;
    return q;
  }
};

template <>
struct Divider<uint32_t> {
  uint32_t d = 1, magic = 1, shift = 0;
  Divider() = default;
  // divisor in [1, 2^31)
  explicit Divider(uint32_t divisor) : d(divisor) {
    while (shift < 32 && (uint64_t{1} << shift) < divisor) {
      ++shift;
    }
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
  }
  MYCONV_HOST_DEVICE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(n, magic);
#else
    const uint32_t high = static_cast<uint32_t>((static_cast<uint64_t>(n) * magic) >> 32);
#endif
    return (high + n) >> shift;  // no overflow: high <= n < 2^31
  }
  MYCONV_HOST_DEVICE uint32_t divmod(uint32_t n, uint32_t& remainder) const {
    const uint32_t q = div(n);
    remainder = n - q * d;
    return q;
  }
};

// The divisors of a launch's index arithmetic.
template <typename Index>
struct Divisors {
  Divider<Index> out_w, out_h, out_d, channels;  // im2col: element -> (b, c, od, oh, ow)
  Divider<Index> row_threads, positions;         // im2col, images side by side: element -> (c, b, od, oh, ow)
  Divider<Index> width, height, depth;                  // col2im: element -> (b, c, d, h, w)
  Divider<Index> kernel_w, kernel_h, kernel_d;  // channels-last im2col, entries in order: -> (kd, kh, kw)
  Divider<Index> stride_d, stride_h, stride_w, dilation_d, dilation_h, dilation_w;
};

template <typename Index, typename G>
Divisors<Index> make_divisors(const G& g) {
  const auto d = [](int64_t v) { return Divider<Index>(static_cast<Index>(std::max<int64_t>(v, 1))); };
  return {d(g.out_w),      d(g.out_h),      d(g.out_d),      d(g.channels),   d(g.row_threads),
          d(g.out_d * g.out_h * g.out_w),   d(g.width),      d(g.height),     d(g.depth),
          d(g.kernel_w),   d(g.kernel_h),   d(g.kernel_d),
          d(g.stride_d),   d(g.stride_h),   d(g.stride_w),   d(g.dilation_d), d(g.dilation_h),
          d(g.dilation_w)};
}

// ---- geometry ----------------------------------------------------------------------

// A launch's `batch` (C, D, H, W) images, the sliding window over them and
// where their column matrix lives: column entry (b, row, position) at
// b * batch_stride + row * row_stride + position * col_stride, positions
// (od, oh, ow).
//  - Channels-first images (N, C, D, H, W): rows ordered (c, kd, kh, kw),
//    col_stride 1; images side by side (batch_stride < row_stride: a row
//    holds every image's positions, the convolution's tile layout) or one
//    matrix each (the im2col op's layout).
//  - Channels-last images (N, D, H, W, C), `channels_last`: rows ordered
//    (kd, kh, kw, c), the convolution's (positions, rows) tiles (row_stride
//    1, col_stride the rows); the columns hold `channels` of the images'
//    image_channels, from channel0 on (a group's).
// 1-D and 2-D images have unit leading sizes (depth 1, kernel_d 1, ...).
// out_d / out_h / out_w may be fewer than the window's positions (a
// transposed convolution's output_padding): the missing positions do not
// exist.
struct Geom {
  int64_t channels = 0, depth = 1, height = 1, width = 1;
  int64_t kernel_d = 1, kernel_h = 1, kernel_w = 1, stride_d = 1, stride_h = 1, stride_w = 1;
  int64_t pad_d = 0, pad_h = 0, pad_w = 0, dilation_d = 1, dilation_h = 1, dilation_w = 1;
  int64_t out_d = 0, out_h = 0, out_w = 0;
  int64_t batch_stride = 0, row_stride = 0, col_stride = 1;
  int64_t batch = 0;
  bool channels_last = false;
  int64_t image_channels = 0, channel0 = 0;  // channels-last: the images' channels, the columns' first
  // im2col's element order: (c, b, positions) when the images lie side by
  // side in each row, else (b, c, positions). Side by side, consecutive
  // elements are consecutive entries of one row, across images, and each row
  // takes row_threads elements: its batch * positions entries, rounded up to
  // the row stride's alignment (up to 32 elements) with idle elements, so
  // that a warp's 32 consecutive elements start on a sector in every row.
  bool images_side_by_side = false;
  int64_t row_threads = 0;
  // Channels-last im2col over a run of channels narrower than a 32-byte
  // sector (a stem's 3 channels): one element per column entry, in the
  // tile's memory order (b, od, oh, ow, kd, kh, kw, c), so that a warp writes
  // 32 consecutive entries of a position's row. (An element per (position,
  // channel) writing its taps would store a few channels a step, a row of
  // the tile apart: 0.29 of the sectors' bytes for 3 float32 channels.)
  bool entries_in_order = false;
  // The divisors, 64-bit and 32-bit (with_divisors fills them). narrow: every
  // size, and an input index plus its padding, fits 31 bits, so a launch of
  // fewer than 2^31 elements may take the 32-bit ones.
  Divisors<int64_t> wide;
  Divisors<uint32_t> narrow;
  bool narrow_sizes = false;

  template <typename Index>
  MYCONV_HOST_DEVICE const Divisors<Index>& divisors() const;
};

template <>
MYCONV_HOST_DEVICE inline const Divisors<int64_t>& Geom::divisors<int64_t>() const {
  return wide;
}
template <>
MYCONV_HOST_DEVICE inline const Divisors<uint32_t>& Geom::divisors<uint32_t>() const {
  return narrow;
}

// g with its divisors.
inline Geom with_divisors(Geom g) {
  constexpr int64_t kNarrow = (int64_t{1} << 31) - 1;
  const int64_t extents[] = {g.channels, g.out_d, g.out_h, g.out_w, g.stride_d, g.stride_h, g.stride_w,
                             g.dilation_d, g.dilation_h, g.dilation_w, g.kernel_d, g.kernel_h, g.kernel_w,
                             // x + pad, and x + pad + stride - 1 (a rounded-up division), stay below 2^31
                             g.depth + 2 * g.pad_d + g.stride_d, g.height + 2 * g.pad_h + g.stride_h,
                             g.width + 2 * g.pad_w + g.stride_w};
  g.narrow_sizes = std::all_of(std::begin(extents), std::end(extents), [](int64_t v) { return v < kNarrow; });
  // (one image too: its padded rows then get idle elements to their alignment)
  g.images_side_by_side = !g.channels_last && g.batch_stride < g.row_stride;
  const int64_t row_entries = g.batch * g.out_d * g.out_h * g.out_w;
  int64_t align = 1;  // the largest power of two up to 32 that divides the row stride
  while (align < 32 && g.row_stride % (2 * align) == 0) {
    align *= 2;
  }
  g.row_threads = g.images_side_by_side ? (row_entries + align - 1) / align * align : row_entries;
  g.narrow_sizes = g.narrow_sizes && g.batch >= 1 && g.row_threads < kNarrow &&
                   g.out_d * g.out_h * g.out_w < kNarrow && g.depth * g.height * g.width < kNarrow;
  g.wide = make_divisors<int64_t>(g);
  if (g.narrow_sizes) {
    g.narrow = make_divisors<uint32_t>(g);
  }
  return g;
}

// Whether a launch of `elements` elements over g may use 32-bit index arithmetic.
inline bool narrow_launch(const Geom& g, int64_t elements) {
  return g.narrow_sizes && elements < (int64_t{1} << 31);
}

// Elements (threads' work items) of each kernel over the launch's images.
MYCONV_HOST_DEVICE inline int64_t im2col_elements(const Geom& g) {
  // one per (b, c, od, oh, ow) (channels-last: (b, od, oh, ow, c); with
  // entries in order, one per column entry); side by side, the rows' idle
  // elements too
  const int64_t per_channel = g.batch * g.out_d * g.out_h * g.out_w;
  return g.images_side_by_side ? g.channels * g.row_threads
         : g.entries_in_order  ? per_channel * g.channels * g.kernel_d * g.kernel_h * g.kernel_w
                               : per_channel * g.channels;
}
MYCONV_HOST_DEVICE inline int64_t col2im_elements(const Geom& g) {
  // one per image element (b, c, d, h, w) of the columns' channels (channels-last: (b, d, h, w, c))
  return g.batch * g.channels * g.depth * g.height * g.width;
}

// ---- per-element work ----------------------------------------------------------------

// Copies the column entries of output position (od, oh, ow), tap by tap in
// (kd, kh, kw) order: io.copy(dst, image element), dst advancing by
// dst_step a tap; the element of input pixel (id, ih, iw) is at first_pixel
// + ((id * H + ih) * W + iw) * pixel_stride, -1 (a zero) where the tap lies
// in the padding.
template <typename Access>
MYCONV_HOST_DEVICE inline void copy_taps(const Geom& g, int64_t od, int64_t oh, int64_t ow, int64_t dst,
                                         int64_t dst_step, int64_t first_pixel, int64_t pixel_stride, Access& io) {
  const int64_t id0 = od * g.stride_d - g.pad_d, ih0 = oh * g.stride_h - g.pad_h, iw0 = ow * g.stride_w - g.pad_w;
  for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
    const int64_t id = id0 + kd * g.dilation_d;
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = ih0 + kh * g.dilation_h;
      const bool rows_inside = id >= 0 && id < g.depth && ih >= 0 && ih < g.height;
      const int64_t row = (id * g.height + ih) * g.width;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = iw0 + kw * g.dilation_w;
        io.copy(dst, rows_inside && iw >= 0 && iw < g.width ? first_pixel + (row + iw) * pixel_stride : -1);
        dst += dst_step;
      }
    }
  }
}

// im2col element i = (b, c, od, oh, ow) (or (c, b, od, oh, ow), see
// Geom::images_side_by_side): writes that position's kD*kH*kW column
// entries, tap by tap in (kd, kh, kw) order: io.copy(column, image), image -1
// (a zero) where the tap lies in the padding. Consecutive threads write
// consecutive entries of a row, across images too where they lie side by
// side (coalesced: a warp's stores fill whole sectors where rows start on
// one, see the column buffers' row stride in csrc/conv_plan.h).
// Channels-last images: element i = (b, od, oh, ow, c), channel c of the
// columns' ones, writes row (kd, kh, kw, c) of its position, tap by tap;
// consecutive threads take consecutive channels, so they read a run of a
// pixel's channels and write a run of a row of the (positions, rows) tile.
// With Geom::entries_in_order (a narrow run of channels), element i is one
// column entry (b, od, oh, ow, kd, kh, kw, c), in the tile's memory order.
template <typename Index = int64_t, typename Access>
MYCONV_HOST_DEVICE inline void im2col_element(const Geom& g, int64_t i, Access& io) {
  const Divisors<Index>& dv = g.divisors<Index>();
  Index ow, oh, od, c, q;
  int64_t b;
  if (g.entries_in_order) {  // (channels-last; the same for every thread of a launch)
    Index kw, kh, kd;
    q = dv.channels.divmod(static_cast<Index>(i), c);
    q = dv.kernel_w.divmod(q, kw);
    q = dv.kernel_h.divmod(q, kh);
    q = dv.kernel_d.divmod(q, kd);
    q = dv.out_w.divmod(q, ow);
    q = dv.out_h.divmod(q, oh);
    b = dv.out_d.divmod(q, od);
    const int64_t id = static_cast<int64_t>(od) * g.stride_d - g.pad_d + static_cast<int64_t>(kd) * g.dilation_d;
    const int64_t ih = static_cast<int64_t>(oh) * g.stride_h - g.pad_h + static_cast<int64_t>(kh) * g.dilation_h;
    const int64_t iw = static_cast<int64_t>(ow) * g.stride_w - g.pad_w + static_cast<int64_t>(kw) * g.dilation_w;
    const bool inside = id >= 0 && id < g.depth && ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
    const int64_t position = (static_cast<int64_t>(od) * g.out_h + oh) * g.out_w + ow;
    const int64_t tap = (static_cast<int64_t>(kd) * g.kernel_h + kh) * g.kernel_w + kw;
    const int64_t pixel = ((b * g.depth + id) * g.height + ih) * g.width + iw;
    io.copy(b * g.batch_stride + position * g.col_stride + (tap * g.channels + c) * g.row_stride,
            inside ? pixel * g.image_channels + g.channel0 + c : -1);
    return;
  }
  if (g.channels_last) {  // (the same for every thread of a launch)
    q = dv.channels.divmod(static_cast<Index>(i), c);
    q = dv.out_w.divmod(q, ow);
    q = dv.out_h.divmod(q, oh);
    b = dv.out_d.divmod(q, od);
    const int64_t position = (static_cast<int64_t>(od) * g.out_h + oh) * g.out_w + ow;
    copy_taps(g, od, oh, ow, b * g.batch_stride + position * g.col_stride + static_cast<int64_t>(c) * g.row_stride,
              g.channels * g.row_stride, b * g.depth * g.height * g.width * g.image_channels + g.channel0 + c,
              g.image_channels, io);
    return;
  }
  if (g.images_side_by_side) {
    Index entry, position;
    c = dv.row_threads.divmod(static_cast<Index>(i), entry);
    if (entry >= static_cast<Index>(g.batch * g.out_d * g.out_h * g.out_w)) {
      return;  // an idle element at the end of a row
    }
    b = dv.positions.divmod(entry, position);
    q = dv.out_w.divmod(position, ow);
    od = dv.out_h.divmod(q, oh);
  } else {
    q = dv.out_w.divmod(static_cast<Index>(i), ow);
    q = dv.out_h.divmod(q, oh);
    q = dv.out_d.divmod(q, od);
    b = dv.channels.divmod(q, c);
  }
  const int64_t plane = (b * g.channels + c) * g.depth * g.height * g.width;
  const int64_t position = (static_cast<int64_t>(od) * g.out_h + oh) * g.out_w + ow;
  copy_taps(g, od, oh, ow,
            b * g.batch_stride + (static_cast<int64_t>(c) * g.kernel_d * g.kernel_h * g.kernel_w) * g.row_stride +
                position * g.col_stride,
            g.row_stride, plane, 1, io);
}

// The output positions along one axis whose window tap reads input index x:
// tap k of position p reads x when x + pad = p * stride + k * dilation, with
// 0 <= k < kernel and 0 <= p < out. Candidates are p in [first, last]
// (computed once per element and axis); for_each_reader visits the readers
// in increasing k, walking either the candidate positions (from last down to
// first: no division at all without dilation) or the taps (a division per
// tap), whichever is shorter: a dilation much larger than the stride (an
// atrous or TCN layer) has far more candidates than taps.
struct AxisReaders {
  int64_t offset;       // x + pad
  int64_t first, last;  // candidate positions (none when first > last)
};

template <typename Index>
MYCONV_HOST_DEVICE inline AxisReaders axis_readers(int64_t x, int64_t pad, int64_t kernel, int64_t dilation,
                                                   int64_t out, const Divider<Index>& stride) {
  const int64_t offset = x + pad;
  const int64_t highest = stride.div(static_cast<Index>(offset));
  const int64_t last = highest < out - 1 ? highest : out - 1;
  const int64_t lowest = offset - (kernel - 1) * dilation;  // the smallest p * stride that reaches x
  const int64_t first = lowest <= 0 ? 0 : stride.div(static_cast<Index>(lowest + stride.d - 1));
  return {offset, first, last};
}

// Calls fn(k, p) for every tap k and position p along one axis that reads
// the element (see AxisReaders), in increasing k.
template <typename Index, typename F>
MYCONV_HOST_DEVICE inline void for_each_reader(const AxisReaders& r, int64_t kernel, int64_t out,
                                               const Divider<Index>& stride, const Divider<Index>& dilation,
                                               F&& fn) {
  if (r.last - r.first < kernel) {
    for (int64_t p = r.last; p >= r.first; --p) {
      const int64_t reach = r.offset - p * stride.d;  // = k * dilation
      if (dilation.d == 1) {
        fn(reach, p);
        continue;
      }
      Index rest;
      const int64_t k = dilation.divmod(static_cast<Index>(reach), rest);
      if (rest == 0) {
        fn(k, p);
      }
    }
    return;
  }
  for (int64_t k = 0; k < kernel; ++k) {
    const int64_t reach = r.offset - k * dilation.d;  // = p * stride
    if (reach < 0) {
      return;
    }
    Index rest;
    const int64_t p = stride.divmod(static_cast<Index>(reach), rest);
    if (rest == 0 && p < out) {
      fn(k, p);
    }
  }
}

// Adds to `sum` (io.add) the column entries of every window tap that reads
// image element (d, h, w), in (kd, kh, kw) order: the entry of tap
// t = (kd * kH + kh) * kW + kw at position l = (od * oH + oh) * oW + ow is at
// first + t * tap_stride + l * position_stride. Only the positions whose
// window reaches the element are visited (AxisReaders).
template <typename Index, typename Access, typename Sum>
MYCONV_HOST_DEVICE inline void gather_readers(const Geom& g, const Divisors<Index>& dv, int64_t d, int64_t h,
                                              int64_t w, int64_t first, int64_t tap_stride,
                                              int64_t position_stride, Access& io, Sum& sum) {
  const AxisReaders rd = axis_readers(d, g.pad_d, g.kernel_d, g.dilation_d, g.out_d, dv.stride_d);
  const AxisReaders rh = axis_readers(h, g.pad_h, g.kernel_h, g.dilation_h, g.out_h, dv.stride_h);
  const AxisReaders rw = axis_readers(w, g.pad_w, g.kernel_w, g.dilation_w, g.out_w, dv.stride_w);
  for_each_reader(rd, g.kernel_d, g.out_d, dv.stride_d, dv.dilation_d, [&](int64_t kd, int64_t od) {
    for_each_reader(rh, g.kernel_h, g.out_h, dv.stride_h, dv.dilation_h, [&](int64_t kh, int64_t oh) {
      const int64_t tap0 = (kd * g.kernel_h + kh) * g.kernel_w;
      const int64_t position0 = (od * g.out_h + oh) * g.out_w;
      for_each_reader(rw, g.kernel_w, g.out_w, dv.stride_w, dv.dilation_w, [&](int64_t kw, int64_t ow) {
        io.add(sum, first + (tap0 + kw) * tap_stride + (position0 + ow) * position_stride);
      });
    });
  });
}

// col2im element i = (b, c, d, h, w) (channels-last images: (b, d, h, w, c),
// channel c of the columns' ones): a gather. Sums the column entries of
// every window tap that reads the element, in (kd, kh, kw) order, into io's
// accumulator (float for reduced precision), then stores it at the image
// element (channels-last: (b, d, h, w, channel0 + c)). No atomics: the
// result is bitwise reproducible. Consecutive threads take consecutive
// image elements: along W channels-first, along the channels channels-last
// (coalesced reads of the tile's rows there, coalesced stores either way).
template <typename Index = int64_t, typename Access>
MYCONV_HOST_DEVICE inline void col2im_element(const Geom& g, int64_t i, Access& io) {
  const Divisors<Index>& dv = g.divisors<Index>();
  const int64_t taps = g.kernel_d * g.kernel_h * g.kernel_w;
  Index w, h, d, c, q;
  auto sum = io.zero_sum();
  if (g.channels_last) {  // (the same for every thread of a launch)
    q = dv.channels.divmod(static_cast<Index>(i), c);
    q = dv.width.divmod(q, w);
    q = dv.height.divmod(q, h);
    const int64_t b = dv.depth.divmod(q, d);
    gather_readers(g, dv, d, h, w, b * g.batch_stride + static_cast<int64_t>(c) * g.row_stride,
                   g.channels * g.row_stride, g.col_stride, io, sum);
    const int64_t pixel = ((b * g.depth + d) * g.height + h) * g.width + w;
    io.store(pixel * g.image_channels + g.channel0 + c, sum);
    return;
  }
  q = dv.width.divmod(static_cast<Index>(i), w);
  q = dv.height.divmod(q, h);
  q = dv.depth.divmod(q, d);
  const int64_t b = dv.channels.divmod(q, c);
  gather_readers(g, dv, d, h, w, b * g.batch_stride + static_cast<int64_t>(c) * taps * g.row_stride, g.row_stride,
                 g.col_stride, io, sum);
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

// What element i of a launch does, for any Access: the launchers' Work types,
// with 64-bit (Index = int64_t) or 32-bit (uint32_t) index arithmetic.
template <typename Index = int64_t>
struct Im2colWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const Geom& g, int64_t i, Access& io) {
    im2col_element<Index>(g, i, io);
  }
};

template <typename Index = int64_t>
struct Col2imWork {
  template <typename Access>
  MYCONV_HOST_DEVICE static void run(const Geom& g, int64_t i, Access& io) {
    col2im_element<Index>(g, i, io);
  }
};

} // namespace myconv::cuda
