// CPU im2col / col2im of column tiles, for channels-first (N, C, D, H, W) and
// channels-last (N, D, H, W, C) images. An output "row" is a run of out_w
// positions at one (od, oh); its taps read input rows at (id, ih), which for
// 1-D and 2-D problems (unit depth, and height) is one plane row.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_kernels.h"

// Short copy and zero loops stay loops: without this, GCC turns each into a
// memcpy / memset call, which costs more than a row of a small image. (Long
// rows call std::copy / std::fill, the library, on purpose.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif

namespace myconv::detail {
namespace {

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

// Rows shorter than this are added element by element: a multiversioned
// call per row would cost more than the row (small images).
constexpr int64_t kShortRow = 16;
// Rows shorter than this are copied by the compiler's own (vectorised) loop:
// a library call per row costs more than the copy up to a few cache lines.
constexpr int64_t kShortCopy = 64;

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

// out_row[o * cs] for o in [o0, o1): in_row[o * sw] for o in [lo, hi), zero
// elsewhere. Long contiguous rows through the library's fill / copy; shorter
// ones and strided ones in plain loops, each a zero run, a
// copy and a zero run: no test per element, and the compiler vectorises the
// contiguous copy.
template <typename scalar_t>
inline void gather_row(const scalar_t* __restrict in_row, int64_t sw, scalar_t* __restrict out_row, int64_t cs,
                       int64_t o0, int64_t lo, int64_t hi, int64_t o1) {
  if (cs == 1) {
    if (o1 - o0 >= kShortCopy) {
      std::fill(out_row + o0, out_row + lo, scalar_t(0));
      if (sw == 1) {
        std::copy(in_row + lo, in_row + hi, out_row + lo);
      } else {
        for (int64_t o = lo; o < hi; ++o) {
          out_row[o] = in_row[o * sw];
        }
      }
      std::fill(out_row + hi, out_row + o1, scalar_t(0));
      return;
    }
    for (int64_t o = o0; o < lo; ++o) {
      out_row[o] = scalar_t(0);
    }
    if (sw == 1) {
      for (int64_t o = lo; o < hi; ++o) {
        out_row[o] = in_row[o];
      }
    } else {
      for (int64_t o = lo; o < hi; ++o) {
        out_row[o] = in_row[o * sw];
      }
    }
    for (int64_t o = hi; o < o1; ++o) {
      out_row[o] = scalar_t(0);
    }
    return;
  }
  for (int64_t o = o0; o < lo; ++o) {
    out_row[o * cs] = scalar_t(0);
  }
  for (int64_t o = lo; o < hi; ++o) {
    out_row[o * cs] = in_row[o * sw];
  }
  for (int64_t o = hi; o < o1; ++o) {
    out_row[o * cs] = scalar_t(0);
  }
}

// What every row of a channels-first column tile needs, computed once per
// call: the output rows the tile's positions cover, as (row, o_begin, o_end)
// segments (row = od * out_h + oh, o counted within the row); for each
// kernel row (kd, kh) the input row each segment's taps read (-1: padding);
// and per kernel column kw its offset in an input row and the output columns
// whose tap lands inside.
struct TileRows {
  struct Segment {
    int64_t row, o0, o1;
  };
  std::vector<Segment> segments;
  std::vector<int64_t> input_rows;  // [(kd * kernel_h + kh) * segments + s]
  std::vector<int64_t> w_offset;
  std::vector<ValidRange> valid;

  TileRows(const ConvGeometry& g, const ColumnTile& t) {
    if (t.l_end > t.l_begin) {
      const int64_t first = t.l_begin / g.out_w, last = (t.l_end - 1) / g.out_w;
      for (int64_t q = first; q <= last; ++q) {
        segments.push_back({q, q == first ? t.l_begin - q * g.out_w : 0, q == last ? t.l_end - q * g.out_w : g.out_w});
      }
    }
    for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (const Segment& s : segments) {
          input_rows.push_back(input_row(g, s.row / g.out_h, s.row % g.out_h, kd, kh));
        }
      }
    }
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      w_offset.push_back(kw * g.dilation_w - g.pad_w);
      valid.push_back(valid_range(w_offset.back(), g.stride_w, g.width, g.out_w));
    }
  }
  // The input rows the segments read for kernel row (kd, kh).
  const int64_t* rows_for(int64_t kd, int64_t kh, int64_t kernel_h) const {
    return input_rows.data() + (kd * kernel_h + kh) * static_cast<int64_t>(segments.size());
  }
};

// Small images (output rows shorter than kShortRow, the digits of the
// training script, late layers of a small CNN): the plane element each
// (tap, position) of a tile reads, -1 in the padding, computed once per call.
// Every channel and image of the call reads through the same table: one
// branch-free pass per column row instead of a zero / copy / zero run per
// output row of a few elements. Built only where it is small (at most
// kMaxTapTable entries, planes indexable by int32).
constexpr int64_t kMaxTapTable = int64_t{1} << 16;

struct TapTable {
  std::vector<int32_t> index;  // [tap * positions + (l - l_begin)]

  static bool worth_it(const ConvGeometry& g, const ColumnTile& t, int64_t col_stride) {
    return col_stride == 1 && g.out_w < kShortRow && g.taps() * t.positions() <= kMaxTapTable &&
           g.pixels() <= std::numeric_limits<int32_t>::max();
  }

  TapTable(const ConvGeometry& g, const ColumnTile& t) {
    index.reserve(g.taps() * t.positions());
    for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          for (int64_t l = t.l_begin; l < t.l_end; ++l) {
            const int64_t q = l / g.out_w, ow = l % g.out_w;
            const int64_t row = input_row(g, q / g.out_h, q % g.out_h, kd, kh);
            const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
            index.push_back(row >= 0 && iw >= 0 && iw < g.width ? static_cast<int32_t>(row * g.width + iw) : -1);
          }
        }
      }
    }
  }
};

// Channels-first images, rows (c, kd, kh, kw). One task per (image, channel);
// the common col_stride 1 copies runs of input rows (element by element when
// short).
template <typename scalar_t>
void im2col_channels_first(const scalar_t* images, int64_t nb, const ConvGeometry& g, const ColumnTile& t,
                           scalar_t* columns, ColumnLayout layout) {
  const int64_t taps = g.taps(), plane_size = g.pixels();
  const int64_t cs = layout.col_stride, sw = g.stride_w;
  if (TapTable::worth_it(g, t, cs)) {
    const TapTable table(g, t);
    const int64_t P = t.positions();
    at::parallel_for(0, nb * t.channels(), grain_for(P * taps), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t b = p / t.channels(), cc = p % t.channels();
        const scalar_t* __restrict plane = images + (b * g.channels + t.c_begin + cc) * plane_size;
        for (int64_t r = 0; r < taps; ++r) {
          scalar_t* __restrict dst = columns + b * layout.batch_stride + (cc * taps + r) * layout.row_stride;
          const int32_t* __restrict ix = table.index.data() + r * P;
          for (int64_t j = 0; j < P; ++j) {
            dst[j] = ix[j] >= 0 ? plane[ix[j]] : scalar_t(0);
          }
        }
      }
    });
    return;
  }
  const TileRows rows(g, t);
  at::parallel_for(0, nb * t.channels(), grain_for(t.positions() * taps), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / t.channels(), cc = p % t.channels();
      const scalar_t* plane = images + (b * g.channels + t.c_begin + cc) * plane_size;
      int64_t r = cc * taps;
      for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
        for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
          const int64_t* in_rows = rows.rows_for(kd, kh, g.kernel_h);
          for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++r) {
            // Column of position l: dst[l * cs] (dst is offset so that l indexes it).
            scalar_t* dst = columns + b * layout.batch_stride + r * layout.row_stride - t.l_begin * cs;
            const int64_t w_offset = rows.w_offset[kw];
            const ValidRange valid = rows.valid[kw];
            for (size_t si = 0; si < rows.segments.size(); ++si) {
              const auto& [q, o0, o1] = rows.segments[si];
              scalar_t* out_row = dst + q * g.out_w * cs;
              const int64_t in_row_index = in_rows[si];
              // Input element of output column o: in_row[o * stride_w + w_offset].
              const scalar_t* in_row = plane + in_row_index * g.width + w_offset;
              const int64_t lo = in_row_index >= 0 ? std::clamp(valid.begin, o0, o1) : o1;
              const int64_t hi = in_row_index >= 0 ? std::clamp(valid.end, lo, o1) : o1;
              gather_row(in_row, sw, out_row, cs, o0, lo, hi, o1);
            }
          }
        }
      }
    }
  });
}

// Channels-last images, rows (kd, kh, kw, c): each tap copies a run of the
// tile's channels (contiguous in the common row_stride 1); with all channels
// and dilation_w 1, a kernel row's taps are one run of adjacent pixels. One
// task per (image, position).
template <typename scalar_t>
void im2col_channels_last(const scalar_t* images, int64_t nb, const ConvGeometry& g, const ColumnTile& t,
                          scalar_t* columns, ColumnLayout layout) {
  const int64_t cb = t.channels(), P = t.positions(), rs = layout.row_stride;
  const bool row_runs = rs == 1 && cb == g.channels && g.dilation_w == 1;
  at::parallel_for(0, nb * P, grain_for(cb * g.taps()), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / P, l = t.l_begin + i % P;
      const int64_t q = l / g.out_w, ow = l % g.out_w, od = q / g.out_h, oh = q % g.out_h;
      const scalar_t* image = images + b * g.pixels() * g.channels + t.c_begin;
      scalar_t* dst = columns + b * layout.batch_stride + (l - t.l_begin) * layout.col_stride;
      const int64_t iw0 = ow * g.stride_w - g.pad_w;
      for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
        for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
          const int64_t in_row_index = input_row(g, od, oh, kd, kh);
          const bool row_inside = in_row_index >= 0;
          if (row_runs) {
            // taps [lo, hi) of this kernel row read pixels iw0 + lo ... iw0 + hi - 1
            const int64_t lo = row_inside ? std::clamp<int64_t>(-iw0, 0, g.kernel_w) : g.kernel_w;
            const int64_t hi = row_inside ? std::clamp<int64_t>(g.width - iw0, lo, g.kernel_w) : g.kernel_w;
            std::fill(dst, dst + lo * cb, scalar_t(0));
            if (hi > lo) {
              copy_run(image + (in_row_index * g.width + iw0 + lo) * g.channels, dst + lo * cb, (hi - lo) * cb);
            }
            std::fill(dst + hi * cb, dst + g.kernel_w * cb, scalar_t(0));
            dst += g.kernel_w * cb;
            continue;
          }
          for (int64_t kw = 0; kw < g.kernel_w; ++kw, dst += cb * rs) {
            const int64_t iw = iw0 + kw * g.dilation_w;
            const bool inside = row_inside && iw >= 0 && iw < g.width;
            const scalar_t* src = image + (in_row_index * g.width + iw) * g.channels;
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
    }
  });
}

// Channels-first col2im: each task owns whole image planes (b, c), so no two
// threads write the same element. Within a plane, contributions are added tap
// by tap in (kd, kh, kw) order and, within a tap, position by position: a
// fixed order, whatever the thread count. Reduced precision accumulates in a
// float plane.
template <typename scalar_t>
void col2im_channels_first(const scalar_t* columns, ColumnLayout layout, const ColumnTile& t,
                           const ConvGeometry& g, int64_t nb, scalar_t* images, bool accumulate) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kWide = !std::is_same_v<acc_t, scalar_t>;
  const int64_t plane_size = g.pixels(), taps = g.taps();
  const int64_t cs = layout.col_stride;
  const std::optional<TapTable> table =
      TapTable::worth_it(g, t, cs) ? std::optional<TapTable>(std::in_place, g, t) : std::nullopt;
  const std::optional<TileRows> rows_storage =
      table ? std::nullopt : std::optional<TileRows>(std::in_place, g, t);
  at::parallel_for(0, nb * t.channels(), grain_for(t.positions() * taps), [&](int64_t begin, int64_t end) {
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
      int64_t r = cc * taps;
      if (table) {  // the same order: tap by tap, position by position
        const int64_t P = t.positions();
        for (int64_t tap = 0; tap < taps; ++tap, ++r) {
          const scalar_t* src = columns + b * layout.batch_stride + r * layout.row_stride;
          const int32_t* ix = table->index.data() + tap * P;
          for (int64_t j = 0; j < P; ++j) {
            if (ix[j] >= 0) {
              acc[ix[j]] += static_cast<acc_t>(src[j]);
            }
          }
        }
      }
      for (int64_t kd = 0; kd < g.kernel_d && rows_storage; ++kd) {
        const TileRows& rows = *rows_storage;
        for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
          const int64_t* in_rows = rows.rows_for(kd, kh, g.kernel_h);
          for (int64_t kw = 0; kw < g.kernel_w; ++kw, ++r) {
            const scalar_t* src = columns + b * layout.batch_stride + r * layout.row_stride - t.l_begin * cs;
            const int64_t w_offset = rows.w_offset[kw];
            const ValidRange valid = rows.valid[kw];
            for (size_t si = 0; si < rows.segments.size(); ++si) {
              const auto& [q, o0, o1] = rows.segments[si];
              const int64_t in_row_index = in_rows[si];
              if (in_row_index < 0) {
                continue;
              }
              const int64_t lo = std::clamp(valid.begin, o0, o1), hi = std::clamp(valid.end, lo, o1);
              acc_t* acc_row = acc + in_row_index * g.width + w_offset;
              const scalar_t* src_row = src + q * g.out_w * cs;
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
      }
      if constexpr (kWide) {
        std::transform(acc, acc + plane_size, image, [](acc_t v) { return static_cast<scalar_t>(v); });
      }
    }
  });
}

// Channels-last col2im: one task per image; positions in order, taps in
// (kd, kh, kw) order, each adding a run of channels. Reduced precision
// accumulates in a float copy of the tile's channels.
template <typename scalar_t>
void col2im_channels_last(const scalar_t* columns, ColumnLayout layout, const ColumnTile& t,
                          const ConvGeometry& g, int64_t nb, scalar_t* images, bool accumulate) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kWide = !std::is_same_v<acc_t, scalar_t>;
  const int64_t cb = t.channels(), pixels = g.pixels(), rs = layout.row_stride;
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
        const int64_t q = l / g.out_w, ow = l % g.out_w, od = q / g.out_h, oh = q % g.out_h;
        const scalar_t* src = columns + b * layout.batch_stride + (l - t.l_begin) * layout.col_stride;
        const int64_t iw0 = ow * g.stride_w - g.pad_w;
        for (int64_t kd = 0; kd < g.kernel_d; ++kd) {
          for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
            const int64_t in_row_index = input_row(g, od, oh, kd, kh);
            if (row_runs) {
              if (in_row_index >= 0) {
                const int64_t lo = std::clamp<int64_t>(-iw0, 0, g.kernel_w);
                const int64_t hi = std::clamp<int64_t>(g.width - iw0, lo, g.kernel_w);
                add_scatter(acc + (in_row_index * g.width + iw0 + lo) * acc_stride, 1, src + lo * cb,
                            (hi - lo) * cb);
              }
              src += g.kernel_w * cb;
              continue;
            }
            for (int64_t kw = 0; kw < g.kernel_w; ++kw, src += cb * rs) {
              const int64_t iw = iw0 + kw * g.dilation_w;
              if (in_row_index >= 0 && iw >= 0 && iw < g.width) {
                acc_t* dst = acc + (in_row_index * g.width + iw) * acc_stride;
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

} // namespace

void im2col_cpu(const at::Tensor& images, const ConvGeometry& g, const ColumnTile& tile, const at::Tensor& columns,
                ColumnLayout layout) {
  if (images.size(0) == 0 || tile.positions() <= 0 || tile.channels() <= 0) {
    return;
  }
  const bool cl = layout.channels_last;
  check_layout(images, cl);
  MYCONV_CPU_DISPATCH(images.scalar_type(), "myconv_im2col_cpu", [&] {
    const scalar_t* src = images.const_data_ptr<scalar_t>();
    scalar_t* dst = columns.mutable_data_ptr<scalar_t>();
    cl ? im2col_channels_last<scalar_t>(src, images.size(0), g, tile, dst, layout)
       : im2col_channels_first<scalar_t>(src, images.size(0), g, tile, dst, layout);
  });
}

void col2im_cpu(const at::Tensor& columns, ColumnLayout layout, const ColumnTile& tile, const ConvGeometry& g,
                const at::Tensor& images, bool accumulate) {
  if (images.numel() == 0 || tile.channels() <= 0) {
    return;
  }
  const bool cl = layout.channels_last;
  check_layout(images, cl);
  MYCONV_CPU_DISPATCH(images.scalar_type(), "myconv_col2im_cpu", [&] {
    const scalar_t* src = columns.const_data_ptr<scalar_t>();
    scalar_t* dst = images.mutable_data_ptr<scalar_t>();
    cl ? col2im_channels_last<scalar_t>(src, layout, tile, g, images.size(0), dst, accumulate)
       : col2im_channels_first<scalar_t>(src, layout, tile, g, images.size(0), dst, accumulate);
  });
}

} // namespace myconv::detail
