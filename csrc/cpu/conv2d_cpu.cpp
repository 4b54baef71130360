// CPU backend: im2col / col2im of column tiles (NCHW and NHWC), GEMM through
// ATen's BLAS (MKL here), work items spread over ATen's threads, the direct
// grouped (depthwise) kernels, and the CPU registration of the composed ops.
//
// Inside a work item everything runs on the item's thread: the GEMM library
// sees a call from inside a parallel region and stays single-threaded, the
// ATen kernels here see at::in_parallel_region() and run serially.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <type_traits>
#include <vector>

#include "../blas_plan.h"
#include "../conv2d_impl.h"
#include "../myconv.h"

// Functions marked MYCONV_VECTOR_CLONES are compiled for AVX-512, AVX2+FMA and
// baseline x86-64, and the loader picks the best the machine has (GCC
// function multiversioning).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MYCONV_VECTOR_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MYCONV_VECTOR_CLONES
#endif

namespace myconv::detail {
namespace {

// ---- row kernels ------------------------------------------------------------
// y[i * sy] += x[i] over n elements, in the accumulation type acc_t. The float
// and double overloads are multiversioned; other types use the template.

template <typename acc_t, typename src_t>
inline void add_scatter(acc_t* __restrict y, int64_t sy, const src_t* __restrict x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    y[i * sy] += static_cast<acc_t>(x[i]);
  }
}

#define MYCONV_ROW_KERNELS(T)                                                               \
  MYCONV_VECTOR_CLONES void add_scatter(T* __restrict y, int64_t sy, const T* __restrict x, \
                                        int64_t n) {                                        \
    if (sy == 1) {                                                                          \
      for (int64_t i = 0; i < n; ++i) y[i] += x[i];                                         \
    } else {                                                                                \
      for (int64_t i = 0; i < n; ++i) y[i * sy] += x[i];                                    \
    }                                                                                       \
  }
MYCONV_ROW_KERNELS(float)
MYCONV_ROW_KERNELS(double)
#undef MYCONV_ROW_KERNELS

// ---- geometry helpers -------------------------------------------------------

// Positions o in [0, count) whose tap o*stride + offset lands in [0, size):
// the half-open range [begin, end).
struct ValidRange {
  int64_t begin, end;
};

inline ValidRange valid_range(int64_t offset, int64_t stride, int64_t size, int64_t count) {
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

// Rows shorter than this are copied / added element by element: a library
// or multiversioned call per row would cost more than the row (small images).
constexpr int64_t kShortRow = 16;

// Calls fn(oh, o_begin, o_end) for the output rows a position range
// [l_begin, l_end) covers, with the columns [o_begin, o_end) of each row.
template <typename F>
void for_each_row(int64_t l_begin, int64_t l_end, int64_t out_w, const F& fn) {
  if (l_end <= l_begin) {
    return;
  }
  const int64_t first = l_begin / out_w, last = (l_end - 1) / out_w;
  for (int64_t oh = first; oh <= last; ++oh) {
    const int64_t o0 = oh == first ? l_begin - oh * out_w : 0;
    const int64_t o1 = oh == last ? l_end - oh * out_w : out_w;
    fn(oh, o0, o1);
  }
}

// ---- im2col / col2im --------------------------------------------------------

// What every row of an NCHW column tile needs, computed once per call: the
// output rows the tile's positions cover, as (oh, o_begin, o_end) segments,
// and per kernel column kw its offset in an input row and the output columns
// whose tap lands inside the image.
struct TileRows {
  struct Segment {
    int64_t oh, o0, o1;
  };
  std::vector<Segment> segments;
  std::vector<int64_t> w_offset;
  std::vector<ValidRange> valid;

  TileRows(const PlaneGeometry& g, const ColumnTile& t) {
    for_each_row(t.l_begin, t.l_end, g.out_w,
                 [&](int64_t oh, int64_t o0, int64_t o1) { segments.push_back({oh, o0, o1}); });
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      w_offset.push_back(kw * g.dilation_w - g.pad_w);
      valid.push_back(valid_range(w_offset.back(), g.stride_w, g.width, g.out_w));
    }
  }
};

// NCHW images, rows (c, kh, kw). One task per (image, channel); the common
// col_stride 1 copies runs of input rows (element by element when short).
template <typename scalar_t>
void im2col_nchw(const scalar_t* images, int64_t nb, const PlaneGeometry& g, const ColumnTile& t,
                 scalar_t* columns, ColumnLayout layout) {
  const int64_t kernel_area = g.kernel_h * g.kernel_w;
  const int64_t cs = layout.col_stride, sw = g.stride_w;
  const TileRows rows(g, t);
  at::parallel_for(0, nb * t.channels(), grain_for(t.positions() * kernel_area), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / t.channels(), cc = p % t.channels();
      const scalar_t* plane = images + (b * g.channels + t.c_begin + cc) * g.height * g.width;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          const int64_t r = cc * kernel_area + kh * g.kernel_w + kw;
          // Column of position l: dst[l * cs] (dst is offset so that l indexes it).
          scalar_t* dst = columns + b * layout.batch_stride + r * layout.row_stride - t.l_begin * cs;
          const int64_t w_offset = rows.w_offset[kw];
          const ValidRange valid = rows.valid[kw];
          for (const auto& [oh, o0, o1] : rows.segments) {
            scalar_t* out_row = dst + oh * g.out_w * cs;
            const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
            const bool row_inside = ih >= 0 && ih < g.height;
            // Input element of output column o: in_row[o * stride_w + w_offset].
            const scalar_t* in_row = plane + ih * g.width + w_offset;
            const int64_t lo = row_inside ? std::clamp(valid.begin, o0, o1) : o1;
            const int64_t hi = row_inside ? std::clamp(valid.end, lo, o1) : o1;
            if (cs == 1 && o1 - o0 >= kShortRow) {
              std::fill(out_row + o0, out_row + lo, scalar_t(0));
              if (sw == 1) {
                std::copy(in_row + lo, in_row + hi, out_row + lo);
              } else {
                for (int64_t o = lo; o < hi; ++o) {
                  out_row[o] = in_row[o * sw];
                }
              }
              std::fill(out_row + hi, out_row + o1, scalar_t(0));
            } else {  // strided columns, or a short row: no library calls
              for (int64_t o = o0; o < o1; ++o) {
                out_row[o * cs] = o >= lo && o < hi ? in_row[o * sw] : scalar_t(0);
              }
            }
          }
        }
      }
    }
  });
}

// Copies n elements; short runs (a few channels) without a library call.
template <typename scalar_t>
inline void copy_run(const scalar_t* __restrict src, scalar_t* __restrict dst, int64_t n) {
  if (n >= 32) {
    std::copy(src, src + n, dst);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      dst[i] = src[i];
    }
  }
}

// NHWC images, rows (kh, kw, c): each tap copies a run of the tile's
// channels (contiguous in the common row_stride 1); with all channels and
// dilation_w 1, a kernel row's taps are one run of adjacent pixels. One task
// per (image, position).
template <typename scalar_t>
void im2col_nhwc(const scalar_t* images, int64_t nb, const PlaneGeometry& g, const ColumnTile& t,
                 scalar_t* columns, ColumnLayout layout) {
  const int64_t cb = t.channels(), P = t.positions(), rs = layout.row_stride;
  const bool row_runs = rs == 1 && cb == g.channels && g.dilation_w == 1;
  at::parallel_for(0, nb * P, grain_for(cb * g.kernel_h * g.kernel_w), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / P, l = t.l_begin + i % P;
      const int64_t oh = l / g.out_w, ow = l % g.out_w;
      const scalar_t* image = images + b * g.height * g.width * g.channels + t.c_begin;
      scalar_t* dst = columns + b * layout.batch_stride + (l - t.l_begin) * layout.col_stride;
      const int64_t iw0 = ow * g.stride_w - g.pad_w;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
        const bool row_inside = ih >= 0 && ih < g.height;
        if (row_runs) {
          // taps [lo, hi) of this kernel row read pixels iw0 + lo ... iw0 + hi - 1
          const int64_t lo = row_inside ? std::clamp<int64_t>(-iw0, 0, g.kernel_w) : g.kernel_w;
          const int64_t hi = row_inside ? std::clamp<int64_t>(g.width - iw0, lo, g.kernel_w) : g.kernel_w;
          std::fill(dst, dst + lo * cb, scalar_t(0));
          if (hi > lo) {
            copy_run(image + (ih * g.width + iw0 + lo) * g.channels, dst + lo * cb, (hi - lo) * cb);
          }
          std::fill(dst + hi * cb, dst + g.kernel_w * cb, scalar_t(0));
          dst += g.kernel_w * cb;
          continue;
        }
        for (int64_t kw = 0; kw < g.kernel_w; ++kw, dst += cb * rs) {
          const int64_t iw = iw0 + kw * g.dilation_w;
          const bool inside = row_inside && iw >= 0 && iw < g.width;
          const scalar_t* src = image + (ih * g.width + iw) * g.channels;
          if (rs == 1) {
            inside ? copy_run(src, dst, cb) : std::fill(dst, dst + cb, scalar_t(0));
          } else {
            for (int64_t c = 0; c < cb; ++c) {
              dst[c * rs] = inside ? src[c] : scalar_t(0);
            }
          }
        }
      }
    }
  });
}

// NCHW col2im: each task owns whole image planes (b, c), so no two threads
// write the same element. Within a plane, contributions are added tap by tap
// in (kh, kw) order and, within a tap, position by position: a fixed order,
// whatever the thread count. Reduced precision accumulates in a float plane.
template <typename scalar_t>
void col2im_nchw(const scalar_t* columns, ColumnLayout layout, const ColumnTile& t,
                 const PlaneGeometry& g, int64_t nb, scalar_t* images, bool accumulate) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kWide = !std::is_same_v<acc_t, scalar_t>;
  const int64_t plane_size = g.height * g.width;
  const int64_t kernel_area = g.kernel_h * g.kernel_w;
  const TileRows rows(g, t);
  at::parallel_for(0, nb * t.channels(), grain_for(t.positions() * kernel_area), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> wide(kWide ? plane_size : 0);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / t.channels(), cc = p % t.channels();
      scalar_t* image = images + (b * g.channels + t.c_begin + cc) * plane_size;
      acc_t* acc;
      if constexpr (kWide) {
        acc = wide.data();
        if (accumulate) {
          std::copy(image, image + plane_size, acc);
        }
      } else {
        acc = image;
      }
      if (!accumulate) {
        std::fill(acc, acc + plane_size, acc_t(0));
      }
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          const int64_t r = cc * kernel_area + kh * g.kernel_w + kw;
          const int64_t cs = layout.col_stride;
          const scalar_t* src = columns + b * layout.batch_stride + r * layout.row_stride - t.l_begin * cs;
          const int64_t w_offset = rows.w_offset[kw];
          const ValidRange valid = rows.valid[kw];
          for (const auto& [oh, o0, o1] : rows.segments) {
            const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
            if (ih < 0 || ih >= g.height) {
              continue;
            }
            const int64_t lo = std::clamp(valid.begin, o0, o1), hi = std::clamp(valid.end, lo, o1);
            acc_t* acc_row = acc + ih * g.width + w_offset;
            const scalar_t* src_row = src + oh * g.out_w * cs;
            if (cs == 1 && hi - lo >= kShortRow) {
              add_scatter(acc_row + lo * g.stride_w, g.stride_w, src_row + lo, hi - lo);
            } else {
              for (int64_t o = lo; o < hi; ++o) {
                acc_row[o * g.stride_w] += static_cast<acc_t>(src_row[o * cs]);
              }
            }
          }
        }
      }
      if constexpr (kWide) {
        std::transform(acc, acc + plane_size, image, [](acc_t v) { return static_cast<scalar_t>(v); });
      }
    }
  });
}

// NHWC col2im: one task per image; positions in order, taps in
// (kh, kw) order, each adding a run of channels. Reduced precision
// accumulates in a float copy of the tile's channels.
template <typename scalar_t>
void col2im_nhwc(const scalar_t* columns, ColumnLayout layout, const ColumnTile& t,
                 const PlaneGeometry& g, int64_t nb, scalar_t* images, bool accumulate) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kWide = !std::is_same_v<acc_t, scalar_t>;
  const int64_t cb = t.channels(), pixels = g.height * g.width, rs = layout.row_stride;
  at::parallel_for(0, nb, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> wide(kWide ? pixels * cb : 0);
    for (int64_t b = begin; b < end; ++b) {
      scalar_t* image = images + b * pixels * g.channels + t.c_begin;
      acc_t* acc;
      int64_t acc_stride;  // between pixels
      if constexpr (kWide) {
        acc = wide.data();
        acc_stride = cb;
        for (int64_t q = 0; q < pixels; ++q) {
          for (int64_t c = 0; c < cb; ++c) {
            acc[q * cb + c] = accumulate ? static_cast<acc_t>(image[q * g.channels + c]) : acc_t(0);
          }
        }
      } else {
        acc = image;
        acc_stride = g.channels;
        if (!accumulate) {
          for (int64_t q = 0; q < pixels; ++q) {
            std::fill(acc + q * acc_stride, acc + q * acc_stride + cb, acc_t(0));
          }
        }
      }
      // With all channels in one run per pixel (and dilation_w 1), the taps of
      // a kernel row add into adjacent pixels: one run per kernel row.
      const bool row_runs = rs == 1 && !kWide && cb == g.channels && g.dilation_w == 1;
      for (int64_t l = t.l_begin; l < t.l_end; ++l) {
        const int64_t oh = l / g.out_w, ow = l % g.out_w;
        const scalar_t* src = columns + b * layout.batch_stride + (l - t.l_begin) * layout.col_stride;
        const int64_t iw0 = ow * g.stride_w - g.pad_w;
        for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
          const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
          if (row_runs) {
            if (ih >= 0 && ih < g.height) {
              const int64_t lo = std::clamp<int64_t>(-iw0, 0, g.kernel_w);
              const int64_t hi = std::clamp<int64_t>(g.width - iw0, lo, g.kernel_w);
              add_scatter(acc + (ih * g.width + iw0 + lo) * acc_stride, 1, src + lo * cb, (hi - lo) * cb);
            }
            src += g.kernel_w * cb;
            continue;
          }
          for (int64_t kw = 0; kw < g.kernel_w; ++kw, src += cb * rs) {
            const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
            if (ih >= 0 && ih < g.height && iw >= 0 && iw < g.width) {
              acc_t* dst = acc + (ih * g.width + iw) * acc_stride;
              if (rs == 1) {
                add_scatter(dst, 1, src, cb);
              } else {
                for (int64_t c = 0; c < cb; ++c) {
                  dst[c] += static_cast<acc_t>(src[c * rs]);
                }
              }
            }
          }
        }
      }
      if constexpr (kWide) {
        for (int64_t q = 0; q < pixels; ++q) {
          for (int64_t c = 0; c < cb; ++c) {
            image[q * g.channels + c] = static_cast<scalar_t>(acc[q * cb + c]);
          }
        }
      }
    }
  });
}

// The kernels read and write (N, C, H, W) tensors contiguous in NCHW, or in
// channels_last (NHWC) order when `channels_last`.
void check_layout(const at::Tensor& t, bool channels_last) {
  TORCH_INTERNAL_ASSERT(
      t.is_contiguous(channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous),
      "myconv: expected a tensor contiguous in ", channels_last ? "channels_last" : "NCHW", " order");
}

// ---- direct grouped convolution (depthwise and other tiny per-group K) -------
// Every output element is summed by one thread, over taps in a fixed order:
// deterministic and independent of the thread count. Each parallel task runs
// one "body" (an output plane, an input plane, ...); for float and double the
// bodies are multiversioned whole, so their inner loops are vectorised for
// the machine's widest vector unit.

struct GroupedShape {
  int64_t batch, channels, out_channels, groups, cg, mg;
  GroupedShape(const PlaneGeometry& g, int64_t batch, int64_t out_channels, int64_t groups)
      : batch(batch), channels(g.channels), out_channels(out_channels), groups(groups),
        cg(g.channels / groups), mg(out_channels / groups) {}
  bool depthwise() const { return cg == 1 && mg == 1; }
};

// Stride 1, NCHW: out (oh x ow) = bias + the sum over `planes` input planes
// (h x w, plane_stride apart) of weights (planes, kh, kw) times the input
// zero-padded by (ph, pw). Each plane is copied into a padded plane of width
// wp, so that a tap is one long shifted multiply-add over rows of width wp
// (into `wide`); the valid columns are kept at the end.
struct Stride1Plane {
  int64_t h, w, kh, kw, dh, dw, ph, pw, oh, ow;
  int64_t hp() const { return h + 2 * ph; }
  int64_t wp() const { return w + 2 * pw; }
  int64_t padded_size() const { return hp() * wp() + (kw - 1) * dw; }
  int64_t wide_size() const { return oh * wp(); }
};

template <typename scalar_t, typename acc_t>
inline void stride1_plane(acc_t* __restrict out, acc_t* __restrict padded, acc_t* __restrict wide,
                          const scalar_t* __restrict in, int64_t plane_stride, int64_t planes,
                          const acc_t* __restrict weights, acc_t bias, const Stride1Plane& q) {
  const int64_t wp = q.wp(), n = q.wide_size();
  for (int64_t i = 0; i < q.padded_size(); ++i) {
    padded[i] = 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    wide[i] = bias;
  }
  for (int64_t p = 0; p < planes; ++p) {
    const scalar_t* plane = in + p * plane_stride;
    for (int64_t r = 0; r < q.h; ++r) {
      acc_t* dst = padded + (r + q.ph) * wp + q.pw;
      for (int64_t c = 0; c < q.w; ++c) {
        dst[c] = static_cast<acc_t>(plane[r * q.w + c]);
      }
    }
    for (int64_t a = 0; a < q.kh; ++a) {
      for (int64_t b = 0; b < q.kw; ++b) {
        const acc_t wv = weights[(p * q.kh + a) * q.kw + b];
        const acc_t* __restrict src = padded + a * q.dh * wp + b * q.dw;
        for (int64_t i = 0; i < n; ++i) {
          wide[i] += wv * src[i];
        }
      }
    }
  }
  for (int64_t r = 0; r < q.oh; ++r) {
    for (int64_t c = 0; c < q.ow; ++c) {
      out[r * q.ow + c] = wide[r * wp + c];
    }
  }
}

// Stride 1, NCHW, one output channel: gw (planes, kh, kw) = for each tap the
// dot product, over images, of grad_output and the shifted padded input. The
// grad_output plane is spread to rows of width wp (zeros past ow), so that a
// tap is one long dot product; each is summed in kLanes partial sums (one
// vector register), added in a fixed order at the end.
constexpr int64_t kLanes = 16;
template <typename scalar_t, typename acc_t>
inline void stride1_grad_weight(acc_t* __restrict gw, acc_t* __restrict lanes, acc_t* __restrict padded,
                                acc_t* __restrict wide, const scalar_t* __restrict gy, int64_t gy_image,
                                const scalar_t* __restrict x, int64_t x_image, int64_t planes, int64_t batch,
                                const Stride1Plane& q) {
  const int64_t wp = q.wp(), n = q.wide_size(), taps = q.kh * q.kw;
  for (int64_t i = 0; i < q.padded_size(); ++i) {
    padded[i] = 0;
  }
  for (int64_t i = 0; i < n; ++i) {
    wide[i] = 0;
  }
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < taps * kLanes; ++i) {
      lanes[i] = 0;
    }
    for (int64_t b = 0; b < batch; ++b) {
      const scalar_t* plane = x + b * x_image + p * q.h * q.w;
      for (int64_t r = 0; r < q.h; ++r) {
        for (int64_t c = 0; c < q.w; ++c) {
          padded[(r + q.ph) * wp + q.pw + c] = static_cast<acc_t>(plane[r * q.w + c]);
        }
      }
      const scalar_t* g = gy + b * gy_image;
      for (int64_t r = 0; r < q.oh; ++r) {
        for (int64_t c = 0; c < q.ow; ++c) {
          wide[r * wp + c] = static_cast<acc_t>(g[r * q.ow + c]);
        }
      }
      for (int64_t a = 0; a < q.kh; ++a) {
        for (int64_t c = 0; c < q.kw; ++c) {
          const acc_t* __restrict src = padded + a * q.dh * wp + c * q.dw;
          acc_t* __restrict l = lanes + (a * q.kw + c) * kLanes;
          int64_t i = 0;
          for (; i + kLanes <= n; i += kLanes) {
            for (int64_t j = 0; j < kLanes; ++j) {
              l[j] += wide[i + j] * src[i + j];
            }
          }
          for (int64_t j = 0; i + j < n; ++j) {
            l[j] += wide[i + j] * src[i + j];
          }
        }
      }
    }
    for (int64_t k = 0; k < taps; ++k) {
      acc_t total = 0;
      for (int64_t j = 0; j < kLanes; ++j) {
        total += lanes[k * kLanes + j];
      }
      gw[p * taps + k] = total;
    }
  }
}

// NCHW, output plane (n, o): acc (L) = bias + sum over the group's input
// planes and the taps of the weight times the shifted input rows.
// x: the group's first input plane of image n; w: o's (cg, kH, kW) weights.
template <typename scalar_t, typename acc_t>
inline void forward_plane_nchw(acc_t* __restrict acc, const scalar_t* __restrict x,
                               const scalar_t* __restrict w, acc_t bias, int64_t cg,
                               const PlaneGeometry& g) {
  const int64_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w, KH = g.kernel_h, KW = g.kernel_w;
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, dh = g.dilation_h;
  for (int64_t l = 0; l < OH * OW; ++l) {
    acc[l] = bias;
  }
  for (int64_t ci = 0; ci < cg; ++ci) {
    const scalar_t* plane = x + ci * H * W;
    for (int64_t kh = 0; kh < KH; ++kh) {
      for (int64_t kw = 0; kw < KW; ++kw) {
        const acc_t wv = static_cast<acc_t>(w[(ci * KH + kh) * KW + kw]);
        const int64_t w_offset = kw * g.dilation_w - g.pad_w;
        const ValidRange v = valid_range(w_offset, sw, W, OW);
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * sh - ph + kh * dh;
          if (ih < 0 || ih >= H) {
            continue;
          }
          const scalar_t* __restrict in = plane + ih * W + w_offset;
          acc_t* __restrict out = acc + oh * OW;
          if (sw == 1) {
            for (int64_t o = v.begin; o < v.end; ++o) {
              out[o] += wv * static_cast<acc_t>(in[o]);
            }
          } else {
            for (int64_t o = v.begin; o < v.end; ++o) {
              out[o] += wv * static_cast<acc_t>(in[o * sw]);
            }
          }
        }
      }
    }
  }
}

// NCHW, input plane (n, c): acc (H*W) = sum over the group's output channels
// and the taps of the weight times grad_output rows, shifted back.
// gy: the group's first grad_output plane of image n; w: the first output
// channel's weights of input channel c (the next output channel's are
// w_ostride further).
template <typename scalar_t, typename acc_t>
inline void grad_input_plane_nchw(acc_t* __restrict acc, const scalar_t* __restrict gy,
                                  const scalar_t* __restrict w, int64_t w_ostride, int64_t mg,
                                  const PlaneGeometry& g) {
  const int64_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w, KH = g.kernel_h, KW = g.kernel_w;
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, dh = g.dilation_h;
  for (int64_t q = 0; q < H * W; ++q) {
    acc[q] = 0;
  }
  for (int64_t j = 0; j < mg; ++j) {
    const scalar_t* gp = gy + j * OH * OW;
    for (int64_t kh = 0; kh < KH; ++kh) {
      for (int64_t kw = 0; kw < KW; ++kw) {
        const acc_t wv = static_cast<acc_t>(w[j * w_ostride + kh * KW + kw]);
        const int64_t w_offset = kw * g.dilation_w - g.pad_w;
        const ValidRange v = valid_range(w_offset, sw, W, OW);
        for (int64_t oh = 0; oh < OH; ++oh) {
          const int64_t ih = oh * sh - ph + kh * dh;
          if (ih < 0 || ih >= H) {
            continue;
          }
          const scalar_t* __restrict in = gp + oh * OW;
          acc_t* __restrict out = acc + ih * W + w_offset;
          if (sw == 1) {
            for (int64_t o = v.begin; o < v.end; ++o) {
              out[o] += wv * static_cast<acc_t>(in[o]);
            }
          } else {
            for (int64_t o = v.begin; o < v.end; ++o) {
              out[o * sw] += wv * static_cast<acc_t>(in[o]);
            }
          }
        }
      }
    }
  }
}

// NCHW, output channel o: gw (cg*kH*kW) = for each (ci, tap), the products of
// grad_output and shifted input rows, added into a row accumulator over
// (n, oh) in order, then the row summed left to right.
// gy: o's plane of image 0; x: the group's first input plane of image 0.
template <typename scalar_t, typename acc_t>
inline void grad_weight_channel_nchw(acc_t* __restrict gw, acc_t* __restrict row,
                                     const scalar_t* __restrict gy, int64_t gy_image,
                                     const scalar_t* __restrict x, int64_t x_image, int64_t cg,
                                     int64_t batch, const PlaneGeometry& g) {
  const int64_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w, KH = g.kernel_h, KW = g.kernel_w;
  const int64_t sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, dh = g.dilation_h;
  for (int64_t ci = 0; ci < cg; ++ci) {
    for (int64_t kh = 0; kh < KH; ++kh) {
      for (int64_t kw = 0; kw < KW; ++kw) {
        for (int64_t o = 0; o < OW; ++o) {
          row[o] = 0;
        }
        const int64_t w_offset = kw * g.dilation_w - g.pad_w;
        const ValidRange v = valid_range(w_offset, sw, W, OW);
        for (int64_t n = 0; n < batch; ++n) {
          const scalar_t* gp = gy + n * gy_image;
          const scalar_t* xp = x + n * x_image + ci * H * W;
          for (int64_t oh = 0; oh < OH; ++oh) {
            const int64_t ih = oh * sh - ph + kh * dh;
            if (ih < 0 || ih >= H) {
              continue;
            }
            const scalar_t* __restrict a = gp + oh * OW;
            const scalar_t* __restrict b = xp + ih * W + w_offset;
            if (sw == 1) {
              for (int64_t o = v.begin; o < v.end; ++o) {
                row[o] += static_cast<acc_t>(a[o]) * static_cast<acc_t>(b[o]);
              }
            } else {
              for (int64_t o = v.begin; o < v.end; ++o) {
                row[o] += static_cast<acc_t>(a[o]) * static_cast<acc_t>(b[o * sw]);
              }
            }
          }
        }
        acc_t total = 0;
        for (int64_t o = 0; o < OW; ++o) {
          total += row[o];
        }
        gw[(ci * KH + kh) * KW + kw] = total;
      }
    }
  }
}

// NHWC, output row (n, oh): acc (OW x C_out) = bias + each tap's input pixels
// times the tap's weights, vectorised over channels. x: image n; wt: weights
// as (tap, ci, o).
template <typename scalar_t, typename acc_t>
inline void forward_row_nhwc(acc_t* __restrict acc, const scalar_t* __restrict x,
                             const acc_t* __restrict wt, const scalar_t* __restrict bias, int64_t oh,
                             const GroupedShape& s, const PlaneGeometry& g) {
  const int64_t co = s.out_channels, C = s.channels, cg = s.cg, mg = s.mg;
  const int64_t OW = g.out_w, KW = g.kernel_w;
  for (int64_t ow = 0; ow < OW; ++ow) {
    for (int64_t o = 0; o < co; ++o) {
      acc[ow * co + o] = bias ? static_cast<acc_t>(bias[o]) : acc_t(0);
    }
  }
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
    if (ih < 0 || ih >= g.height) {
      continue;
    }
    for (int64_t kw = 0; kw < KW; ++kw) {
      const int64_t k = kh * KW + kw;
      const int64_t w_offset = kw * g.dilation_w - g.pad_w;
      const ValidRange v = valid_range(w_offset, g.stride_w, g.width, OW);
      for (int64_t ow = v.begin; ow < v.end; ++ow) {
        const scalar_t* __restrict px = x + (ih * g.width + ow * g.stride_w + w_offset) * C;
        acc_t* __restrict pa = acc + ow * co;
        if (cg == 1 && mg == 1) {
          const acc_t* __restrict wk = wt + k * co;
          for (int64_t o = 0; o < co; ++o) {
            pa[o] += wk[o] * static_cast<acc_t>(px[o]);
          }
        } else {
          for (int64_t ci = 0; ci < cg; ++ci) {
            const acc_t* __restrict wk = wt + (k * cg + ci) * co;
            for (int64_t o = 0; o < co; ++o) {
              pa[o] += wk[o] * static_cast<acc_t>(px[(o / mg) * cg + ci]);
            }
          }
        }
      }
    }
  }
}

// NHWC, input row (n, ih): acc (W x C_in) = for each pixel, tap by tap, the
// grad_output pixels whose windows read it times the tap's weights.
// gy: image n; wt: weights as (tap, ci, o).
template <typename scalar_t, typename acc_t>
inline void grad_input_row_nhwc(acc_t* __restrict acc, const scalar_t* __restrict gy,
                                const acc_t* __restrict wt, int64_t ih, const GroupedShape& s,
                                const PlaneGeometry& g) {
  const int64_t co = s.out_channels, C = s.channels, cg = s.cg, mg = s.mg;
  for (int64_t q = 0; q < g.width * C; ++q) {
    acc[q] = 0;
  }
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t h_off = ih + g.pad_h - kh * g.dilation_h;  // = oh * stride_h
    if (h_off < 0 || h_off % g.stride_h != 0 || h_off / g.stride_h >= g.out_h) {
      continue;
    }
    const int64_t oh = h_off / g.stride_h;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t k = kh * g.kernel_w + kw;
      for (int64_t iw = 0; iw < g.width; ++iw) {
        const int64_t w_off = iw + g.pad_w - kw * g.dilation_w;  // = ow * stride_w
        if (w_off < 0 || w_off % g.stride_w != 0 || w_off / g.stride_w >= g.out_w) {
          continue;
        }
        const scalar_t* __restrict pg = gy + (oh * g.out_w + w_off / g.stride_w) * co;
        acc_t* __restrict pa = acc + iw * C;
        if (cg == 1 && mg == 1) {
          const acc_t* __restrict wk = wt + k * co;
          for (int64_t c = 0; c < C; ++c) {
            pa[c] += wk[c] * static_cast<acc_t>(pg[c]);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) {
            const int64_t group = c / cg, ci = c % cg;
            const acc_t* wk = wt + (k * cg + ci) * co + group * mg;
            acc_t sum = 0;
            for (int64_t j = 0; j < mg; ++j) {
              sum += wk[j] * static_cast<acc_t>(pg[group * mg + j]);
            }
            pa[c] += sum;
          }
        }
      }
    }
  }
}

// NHWC, output channels [o0, o0 + ob): acc (tap, ci, kGradWeightBlock), each
// (tap, ci) row summed over (n, oh, ow) in order in a local accumulator that
// stays in vector registers.
constexpr int64_t kGradWeightBlock = 32;
template <typename scalar_t, typename acc_t>
inline void grad_weight_block_nhwc(acc_t* __restrict acc, const scalar_t* __restrict gy,
                                   const scalar_t* __restrict x, int64_t o0, int64_t ob,
                                   const GroupedShape& s, const PlaneGeometry& g) {
  const int64_t co = s.out_channels, C = s.channels, cg = s.cg, mg = s.mg, KW = g.kernel_w;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    for (int64_t kw = 0; kw < KW; ++kw) {
      const int64_t k = kh * KW + kw;
      const int64_t w_offset = kw * g.dilation_w - g.pad_w;
      const ValidRange v = valid_range(w_offset, g.stride_w, g.width, g.out_w);
      for (int64_t ci = 0; ci < cg; ++ci) {
        acc_t sum[kGradWeightBlock] = {};
        for (int64_t n = 0; n < s.batch; ++n) {
          for (int64_t oh = 0; oh < g.out_h; ++oh) {
            const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
            if (ih < 0 || ih >= g.height) {
              continue;
            }
            for (int64_t ow = v.begin; ow < v.end; ++ow) {
              const scalar_t* __restrict pg = gy + ((n * g.out_h + oh) * g.out_w + ow) * co + o0;
              const scalar_t* __restrict px =
                  x + ((n * g.height + ih) * g.width + ow * g.stride_w + w_offset) * C;
              if (cg == 1 && mg == 1 && ob == kGradWeightBlock) {
                for (int64_t j = 0; j < kGradWeightBlock; ++j) {
                  sum[j] += static_cast<acc_t>(pg[j]) * static_cast<acc_t>(px[o0 + j]);
                }
              } else {
                for (int64_t j = 0; j < ob; ++j) {
                  sum[j] += static_cast<acc_t>(pg[j]) * static_cast<acc_t>(px[((o0 + j) / mg) * cg + ci]);
                }
              }
            }
          }
        }
        for (int64_t j = 0; j < kGradWeightBlock; ++j) {
          acc[(k * cg + ci) * kGradWeightBlock + j] = sum[j];
        }
      }
    }
  }
}

// The bodies as functions: generic templates, and multiversioned overloads
// for float and double (the loader picks the clone for the machine).
#define MYCONV_DIRECT_BODIES(T)                                                                     \
  MYCONV_VECTOR_CLONES void stride1_grad_weight(T* gw, T* lanes, T* padded, T* wide, const T* gy,   \
                                                int64_t gy_image, const T* x, int64_t x_image,      \
                                                int64_t planes, int64_t batch,                      \
                                                const Stride1Plane& q) {                            \
    stride1_grad_weight<T, T>(gw, lanes, padded, wide, gy, gy_image, x, x_image, planes, batch, q); \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void stride1_plane(T* out, T* padded, T* wide, const T* in, int64_t plane_stride, \
                                          int64_t planes, const T* weights, T bias,                 \
                                          const Stride1Plane& q) {                                  \
    stride1_plane<T, T>(out, padded, wide, in, plane_stride, planes, weights, bias, q);             \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void forward_plane_nchw(T* acc, const T* x, const T* w, T bias, int64_t cg,  \
                                               const PlaneGeometry& g) {                            \
    forward_plane_nchw<T, T>(acc, x, w, bias, cg, g);                                               \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void grad_input_plane_nchw(T* acc, const T* gy, const T* w,                  \
                                                  int64_t w_ostride, int64_t mg,                    \
                                                  const PlaneGeometry& g) {                         \
    grad_input_plane_nchw<T, T>(acc, gy, w, w_ostride, mg, g);                                      \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void grad_weight_channel_nchw(T* gw, T* row, const T* gy, int64_t gy_image,  \
                                                     const T* x, int64_t x_image, int64_t cg,       \
                                                     int64_t batch, const PlaneGeometry& g) {       \
    grad_weight_channel_nchw<T, T>(gw, row, gy, gy_image, x, x_image, cg, batch, g);               \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void forward_row_nhwc(T* acc, const T* x, const T* wt, const T* bias,        \
                                             int64_t oh, const GroupedShape& s,                     \
                                             const PlaneGeometry& g) {                              \
    forward_row_nhwc<T, T>(acc, x, wt, bias, oh, s, g);                                             \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void grad_input_row_nhwc(T* acc, const T* gy, const T* wt, int64_t ih,       \
                                                const GroupedShape& s, const PlaneGeometry& g) {    \
    grad_input_row_nhwc<T, T>(acc, gy, wt, ih, s, g);                                               \
  }                                                                                                 \
  MYCONV_VECTOR_CLONES void grad_weight_block_nhwc(T* acc, const T* gy, const T* x, int64_t o0,     \
                                                   int64_t ob, const GroupedShape& s,               \
                                                   const PlaneGeometry& g) {                        \
    grad_weight_block_nhwc<T, T>(acc, gy, x, o0, ob, s, g);                                         \
  }
MYCONV_DIRECT_BODIES(float)
MYCONV_DIRECT_BODIES(double)
#undef MYCONV_DIRECT_BODIES

// The weight as (tap, ci, o) in the accumulation type, for the NHWC bodies
// (a tap's weights for all output channels are contiguous).
template <typename scalar_t>
std::vector<at::opmath_type<scalar_t>> taps_major(const scalar_t* w, const GroupedShape& s, int64_t kk) {
  std::vector<at::opmath_type<scalar_t>> out(kk * s.cg * s.out_channels);
  for (int64_t o = 0; o < s.out_channels; ++o) {
    for (int64_t ci = 0; ci < s.cg; ++ci) {
      for (int64_t k = 0; k < kk; ++k) {
        out[(k * s.cg + ci) * s.out_channels + o] =
            static_cast<at::opmath_type<scalar_t>>(w[(o * s.cg + ci) * kk + k]);
      }
    }
  }
  return out;
}

// Stores n accumulators as scalar_t.
template <typename acc_t, typename scalar_t>
void store(const acc_t* acc, int64_t n, scalar_t* dst) {
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = static_cast<scalar_t>(acc[i]);
  }
}

// Runs body(task, acc, scratch) for the tasks [0, count) over ATen's
// threads; each thread has an accumulator of `size` and scratch of
// `scratch_size` elements; after its body, a task's accumulator is stored, as
// scalar_t, at out + task * size.
template <typename acc_t, typename scalar_t, typename Body>
void accumulate_tasks(int64_t count, int64_t work_per_task, int64_t size, int64_t scratch_size, scalar_t* out,
                      const Body& body) {
  at::parallel_for(0, count, grain_for(work_per_task), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(size), scratch(scratch_size);
    for (int64_t task = begin; task < end; ++task) {
      body(task, acc.data(), scratch.data());
      store(acc.data(), size, out + task * size);
    }
  });
}

template <typename scalar_t>
void grouped_forward_cpu(const scalar_t* x, const scalar_t* w, const scalar_t* bias, const PlaneGeometry& g,
                         const GroupedShape& s, bool channels_last, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w, plane = g.height * g.width;
  const auto bias_of = [&](int64_t o) { return bias ? static_cast<acc_t>(bias[o]) : acc_t(0); };
  if (channels_last) {  // one task per output row (n, oh)
    const std::vector<acc_t> wt = taps_major(w, s, kk);
    const int64_t row = g.out_w * s.out_channels;
    accumulate_tasks<acc_t>(s.batch * g.out_h, row * s.cg * kk, row, 0, out, [&](int64_t r, acc_t* acc, acc_t*) {
      forward_row_nhwc(acc, x + (r / g.out_h) * plane * s.channels, wt.data(), bias, r % g.out_h, s, g);
    });
    return;
  }
  // NCHW: one task per output plane (n, o)
  const auto group_planes = [&](int64_t p) {  // the input planes of p's group
    return x + ((p / s.out_channels) * s.channels + (p % s.out_channels / s.mg) * s.cg) * plane;
  };
  if (g.stride_h == 1 && g.stride_w == 1) {
    const Stride1Plane q{g.height, g.width, g.kernel_h, g.kernel_w, g.dilation_h, g.dilation_w,
                         g.pad_h, g.pad_w, g.out_h, g.out_w};
    const std::vector<acc_t> wacc(w, w + s.out_channels * s.cg * kk);  // weights in acc_t
    accumulate_tasks<acc_t>(s.batch * s.out_channels, L * s.cg * kk, L, q.padded_size() + q.wide_size(), out,
                            [&](int64_t p, acc_t* acc, acc_t* scratch) {
      const int64_t o = p % s.out_channels;
      stride1_plane(acc, scratch, scratch + q.padded_size(), group_planes(p), plane, s.cg,
                    wacc.data() + o * s.cg * kk, bias_of(o), q);
    });
    return;
  }
  accumulate_tasks<acc_t>(s.batch * s.out_channels, L * s.cg * kk, L, 0, out, [&](int64_t p, acc_t* acc, acc_t*) {
    const int64_t o = p % s.out_channels;
    forward_plane_nchw(acc, group_planes(p), w + o * s.cg * kk, bias_of(o), s.cg, g);
  });
}

template <typename scalar_t>
void grouped_grad_input_cpu(const scalar_t* gy, const scalar_t* w, const PlaneGeometry& g,
                            const GroupedShape& s, bool channels_last, scalar_t* gi) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w, plane = g.height * g.width;
  if (channels_last) {  // one task per input row (n, ih)
    const std::vector<acc_t> wt = taps_major(w, s, kk);
    const int64_t row = g.width * s.channels;
    accumulate_tasks<acc_t>(s.batch * g.height, row * s.mg * kk, row, 0, gi, [&](int64_t r, acc_t* acc, acc_t*) {
      grad_input_row_nhwc(acc, gy + (r / g.height) * L * s.out_channels, wt.data(), r % g.height, s, g);
    });
    return;
  }
  // NCHW: one task per input plane (n, c)
  const auto group_grads = [&](int64_t p) {  // the grad_output planes of p's group
    return gy + ((p / s.channels) * s.out_channels + (p % s.channels / s.cg) * s.mg) * L;
  };
  // Stride 1: the input gradient is the stride-1 convolution of grad_output
  // with the flipped kernel and padding (k - 1) * dilation - padding. (With a
  // transposed convolution's output_padding the image has rows and columns
  // past the last window: not this shortcut.)
  const int64_t fph = (g.kernel_h - 1) * g.dilation_h - g.pad_h, fpw = (g.kernel_w - 1) * g.dilation_w - g.pad_w;
  if (g.stride_h == 1 && g.stride_w == 1 && fph >= 0 && fpw >= 0 &&
      g.height == g.out_h + 2 * fph - (g.kernel_h - 1) * g.dilation_h &&
      g.width == g.out_w + 2 * fpw - (g.kernel_w - 1) * g.dilation_w) {
    const Stride1Plane q{g.out_h, g.out_w, g.kernel_h, g.kernel_w, g.dilation_h, g.dilation_w,
                         fph, fpw, g.height, g.width};
    // flipped[c][j][tap] = w[group * mg + j][c % cg][kk - 1 - tap]
    std::vector<acc_t> flipped(s.channels * s.mg * kk);
    for (int64_t c = 0; c < s.channels; ++c) {
      for (int64_t j = 0; j < s.mg; ++j) {
        for (int64_t k = 0; k < kk; ++k) {
          flipped[(c * s.mg + j) * kk + k] =
              static_cast<acc_t>(w[(((c / s.cg) * s.mg + j) * s.cg + c % s.cg) * kk + (kk - 1 - k)]);
        }
      }
    }
    accumulate_tasks<acc_t>(s.batch * s.channels, L * s.mg * kk, plane, q.padded_size() + q.wide_size(), gi,
                            [&](int64_t p, acc_t* acc, acc_t* scratch) {
      stride1_plane(acc, scratch, scratch + q.padded_size(), group_grads(p), L, s.mg,
                    flipped.data() + (p % s.channels) * s.mg * kk, acc_t(0), q);
    });
    return;
  }
  accumulate_tasks<acc_t>(s.batch * s.channels, L * s.mg * kk, plane, 0, gi, [&](int64_t p, acc_t* acc, acc_t*) {
    const int64_t c = p % s.channels;
    grad_input_plane_nchw(acc, group_grads(p), w + ((c / s.cg) * s.mg * s.cg + c % s.cg) * kk, s.cg * kk, s.mg, g);
  });
}

template <typename scalar_t>
void grouped_grad_weight_cpu(const scalar_t* gy, const scalar_t* x, const PlaneGeometry& g,
                             const GroupedShape& s, bool channels_last, scalar_t* gw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t L = g.out_h * g.out_w, kk = g.kernel_h * g.kernel_w, plane = g.height * g.width;
  if (channels_last) {  // one task per block of output channels
    const int64_t blocks = (s.out_channels + kGradWeightBlock - 1) / kGradWeightBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(kk * s.cg * kGradWeightBlock);
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t o0 = blk * kGradWeightBlock, ob = std::min(kGradWeightBlock, s.out_channels - o0);
        grad_weight_block_nhwc(acc.data(), gy, x, o0, ob, s, g);
        for (int64_t j = 0; j < ob; ++j) {
          for (int64_t ci = 0; ci < s.cg; ++ci) {
            for (int64_t k = 0; k < kk; ++k) {
              gw[((o0 + j) * s.cg + ci) * kk + k] =
                  static_cast<scalar_t>(acc[(k * s.cg + ci) * kGradWeightBlock + j]);
            }
          }
        }
      }
    });
    return;
  }
  // NCHW: one task per output channel o
  const int64_t work = s.batch * L * s.cg * kk;
  const auto group_inputs = [&](int64_t o) { return x + (o / s.mg) * s.cg * plane; };
  if (g.stride_h == 1 && g.stride_w == 1) {
    const Stride1Plane q{g.height, g.width, g.kernel_h, g.kernel_w, g.dilation_h, g.dilation_w,
                         g.pad_h, g.pad_w, g.out_h, g.out_w};
    const int64_t lanes = kk * kLanes;
    accumulate_tasks<acc_t>(s.out_channels, work, s.cg * kk, lanes + q.padded_size() + q.wide_size(), gw,
                            [&](int64_t o, acc_t* acc, acc_t* scratch) {
      stride1_grad_weight(acc, scratch, scratch + lanes, scratch + lanes + q.padded_size(), gy + o * L,
                          s.out_channels * L, group_inputs(o), s.channels * plane, s.cg, s.batch, q);
    });
    return;
  }
  accumulate_tasks<acc_t>(s.out_channels, work, s.cg * kk, g.out_w, gw, [&](int64_t o, acc_t* acc, acc_t* row) {
    grad_weight_channel_nchw(acc, row, gy + o * L, s.out_channels * L, group_inputs(o), s.channels * plane, s.cg,
                             s.batch, g);
  });
}

// ---- the backend --------------------------------------------------------------

// L2 cache of one core, in bytes (sysconf, then sysfs, else 1 MiB).
int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (v > 0) {
      return static_cast<int64_t>(v);
    }
#endif
    if (FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r")) {
      long kib = 0;
      const int got = std::fscanf(f, "%ldK", &kib);
      std::fclose(f);
      if (got == 1 && kib > 0) {
        return static_cast<int64_t>(kib) << 10;
      }
    }
    return int64_t{1} << 20;
  }();
  return bytes;
}

#define MYCONV_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

class CpuBackend final : public Backend {
 public:
  Tuning tuning(const at::Tensor&) const override {
    if (cpu_whole_image_plan()) {
      return Tuning{};  // the CUDA backend's plan (tests of that composition)
    }
    Tuning t;
    t.workers = at::get_num_threads();
    t.tile_bytes = tile_bytes_setting() > 0 ? tile_bytes_setting() : l2_cache_bytes() / 2;
    t.min_tile_positions = 64;
    t.split_images = true;
    t.split_work = true;
    t.gemm_on_views = true;
    t.channels_last = true;
    t.direct_grouped = true;
    return t;
  }

  void im2col(const at::Tensor& images, const PlaneGeometry& g, const ColumnTile& tile,
              const at::Tensor& columns, ColumnLayout layout) const override {
    if (images.size(0) == 0 || tile.positions() <= 0 || tile.channels() <= 0) {
      return;
    }
    const bool nhwc = layout.channels_last;
    check_layout(images, nhwc);
    MYCONV_DISPATCH(images.scalar_type(), "myconv_im2col_cpu", [&] {
      const scalar_t* src = images.const_data_ptr<scalar_t>();
      scalar_t* dst = columns.mutable_data_ptr<scalar_t>();
      nhwc ? im2col_nhwc<scalar_t>(src, images.size(0), g, tile, dst, layout)
           : im2col_nchw<scalar_t>(src, images.size(0), g, tile, dst, layout);
    });
  }

  void col2im(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile,
              const PlaneGeometry& g, const at::Tensor& images, bool accumulate) const override {
    if (images.numel() == 0 || tile.channels() <= 0) {
      return;
    }
    const bool nhwc = layout.channels_last;
    check_layout(images, nhwc);
    MYCONV_DISPATCH(images.scalar_type(), "myconv_col2im_cpu", [&] {
      const scalar_t* src = columns.const_data_ptr<scalar_t>();
      scalar_t* dst = images.mutable_data_ptr<scalar_t>();
      nhwc ? col2im_nhwc<scalar_t>(src, layout, tile, g, images.size(0), dst, accumulate)
           : col2im_nchw<scalar_t>(src, layout, tile, g, images.size(0), dst, accumulate);
    });
  }

  // One GEMM per batch entry through ATen (MKL for float / double), on views:
  // strided operands and results need no copies. With the CUDA backend's work
  // plan, the CUDA backend's cuBLAS call instead, replayed on the CPU
  // (csrc/blas_plan.h): every operand is read only as cuBLAS would read it.
  void bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
           bool accumulate) const override {
    if (cpu_whole_image_plan()) {
      run_column_major_gemm_on_cpu(plan_column_major_gemm(a, b, c, accumulate));
      return;
    }
    for (int64_t i = 0; i < c.size(0); ++i) {
      at::Tensor ci = c.select(0, i);
      if (accumulate) {
        ci.addmm_(a.select(0, i), b.select(0, i));
      } else {
        at::mm_out(ci, a.select(0, i), b.select(0, i));
      }
    }
  }

  // Items always run inside a parallel region (unless torch runs on one
  // thread, or the call comes from inside a parallel region already): there
  // the GEMM library stays single-threaded, so every product is computed the
  // same way whatever the thread count, even when there is a single item.
  // Workers take items from a shared counter, so a slow item does not hold
  // the others back; which worker runs an item never changes its result.
  // Each worker takes the caller's thread-local state (grad mode, dispatch
  // keys excluded below autograd, ...), since the items call ATen ops.
  void run_items(int64_t items, int64_t workers,
                 const std::function<void(int64_t, int64_t)>& fn) const override {
    const int64_t threads = at::get_num_threads();
    if (threads <= 1 || at::in_parallel_region()) {
      for (int64_t i = 0; i < items; ++i) {
        fn(i, 0);
      }
      return;
    }
    std::atomic<int64_t> next{0};
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      for (int64_t w = begin; w < std::min(end, workers); ++w) {
        for (int64_t i = next.fetch_add(1); i < items; i = next.fetch_add(1)) {
          fn(i, w);
        }
      }
    });
  }

  void grouped_forward(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                       const PlaneGeometry& g, int64_t groups, bool channels_last,
                       const at::Tensor& out) const override {
    const GroupedShape s(g, x.size(0), w.size(0), groups);
    check_layout(x, channels_last);
    check_layout(out, channels_last);
    MYCONV_DISPATCH(x.scalar_type(), "myconv_grouped_forward_cpu", [&] {
      grouped_forward_cpu<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                    bias ? bias->const_data_ptr<scalar_t>() : nullptr, g, s, channels_last,
                                    out.mutable_data_ptr<scalar_t>());
    });
  }

  void grouped_grad_input(const at::Tensor& gy, const at::Tensor& w, const PlaneGeometry& g,
                          int64_t groups, bool channels_last, const at::Tensor& gi) const override {
    const GroupedShape s(g, gy.size(0), w.size(0), groups);
    check_layout(gy, channels_last);
    check_layout(gi, channels_last);
    MYCONV_DISPATCH(gy.scalar_type(), "myconv_grouped_grad_input_cpu", [&] {
      grouped_grad_input_cpu<scalar_t>(gy.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), g, s,
                                       channels_last, gi.mutable_data_ptr<scalar_t>());
    });
  }

  void grouped_grad_weight(const at::Tensor& gy, const at::Tensor& x, const PlaneGeometry& g,
                           int64_t groups, bool channels_last, const at::Tensor& gw) const override {
    const GroupedShape s(g, gy.size(0), gw.size(0), groups);
    check_layout(gy, channels_last);
    check_layout(x, channels_last);
    MYCONV_DISPATCH(gy.scalar_type(), "myconv_grouped_grad_weight_cpu", [&] {
      grouped_grad_weight_cpu<scalar_t>(gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), g, s,
                                        channels_last, gw.mutable_data_ptr<scalar_t>());
    });
  }
};

#undef MYCONV_DISPATCH

} // namespace

TORCH_LIBRARY_IMPL(myconv, CPU, m) {
  register_backend_kernels<CpuBackend>(m);
}

} // namespace myconv::detail
