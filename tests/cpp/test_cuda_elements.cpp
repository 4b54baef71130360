// The CUDA im2col / col2im kernels' arithmetic, run on the host: the same
// per-element work (cuda/im2col_elements.h) and the same launch plans
// (cuda/kernels.h) as the device, through a launcher that runs every
// (block, thread) of the launch grid's grid-stride loops. Checked for 1-D,
// 2-D and 3-D windows against a textbook nested-loop reference, the CPU
// backend's kernels and (2-D) ATen's unfold / fold, for the whole-image
// layouts the CUDA backend is given; coverage (each column entry written
// once, each image element gathered from exactly the taps that read it); and
// index arithmetic past 2^31 on sampled elements of problems too large to
// allocate.
#include "helpers.h"
#include "host_grid.h"

#include <algorithm>
#include <iostream>
#include <cstdint>
#include <random>
#include <sstream>
#include <vector>

#include "../../cuda/kernels.h"
#include "conv_plan.h"
#include "cpu/cpu_kernels.h"
#include "cuda_tuning.h"

namespace {

using myconv::cuda::blocks_for;
using myconv::cuda::Geom;
using myconv::cuda::kThreads;
using myconv::detail::ColumnLayout;
using myconv::detail::ColumnTile;
using myconv::detail::ConvGeometry;
using myconv_test::f64;

using myconv_test::run_grid;

// The launcher of cuda/kernels.h's launch plans, on the host.
struct HostLauncher {
  template <typename Work, typename Access>
  void run(int64_t total, const Geom& g, const typename Access::In* in, typename Access::Out* out) const {
    Access io{in, out};
    run_grid<Work>(total, g, io);
  }
};

TEST(CudaGrid, EveryElementOnceAcrossSeveralGridStrides) {
  // more elements than the largest grid has threads: each thread loops
  const int64_t total = 2 * kThreads * myconv::cuda::kMaxBlocks + 777;
  EXPECT_EQ(blocks_for(total), myconv::cuda::kMaxBlocks);
  std::vector<uint8_t> seen(total, 0);
  const int64_t blocks = blocks_for(total);
  auto count = [&](int64_t i) { ++seen[i]; };
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t thread = 0; thread < kThreads; ++thread) {
      myconv::cuda::grid_stride(block, thread, blocks, total, count);
    }
  }
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](uint8_t s) { return s == 1; }));
  EXPECT_EQ(blocks_for(0), 1u);
  EXPECT_EQ(blocks_for(1), 1u);
  EXPECT_EQ(blocks_for(kThreads + 1), 2u);
}

// A window over (N, C, *spatial) images, 1 to 3 spatial dimensions.
struct Case {
  std::vector<int64_t> input;  // N, C, *spatial
  std::vector<int64_t> kernel, stride, padding, dilation;
  // positions that do not exist at the end of each axis: a transposed
  // convolution's output_padding >= stride leaves the last ones out
  std::vector<int64_t> drop = {};
  int64_t dims() const { return static_cast<int64_t>(kernel.size()); }
};

const std::vector<Case> kCases = {
    // 2-D
    {{2, 3, 7, 5}, {3, 3}, {1, 1}, {1, 1}, {1, 1}},
    {{1, 1, 5, 7}, {3, 2}, {1, 1}, {0, 0}, {1, 1}},
    {{3, 2, 9, 11}, {3, 5}, {2, 3}, {1, 2}, {2, 1}},       // odd everything
    {{2, 4, 6, 6}, {1, 1}, {1, 1}, {0, 0}, {1, 1}},        // 1x1
    {{2, 3, 13, 10}, {1, 1}, {3, 2}, {0, 0}, {1, 1}},      // strided 1x1
    {{1, 2, 4, 4}, {4, 4}, {1, 1}, {0, 0}, {1, 1}},        // kernel == image: one position
    {{2, 2, 3, 4}, {2, 2}, {5, 7}, {3, 3}, {1, 1}},        // stride far above the kernel, padding > kernel
    {{1, 3, 17, 9}, {3, 2}, {1, 1}, {0, 4}, {7, 9}},       // dilation near the padded size
    {{2, 1, 5, 5}, {5, 5}, {1, 1}, {4, 4}, {1, 1}},        // padding = kernel - 1 (full convolution)
    {{0, 3, 6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}},        // batch 0
    {{2, 3, 8, 7}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}},  // output_padding >= stride
    {{1, 2, 11, 9}, {2, 3}, {3, 2}, {0, 1}, {2, 1}, {2, 0}},
    {{1, 2, 30, 29}, {3, 3}, {1, 1}, {12, 12}, {12, 12}},  // atrous (ASPP): far more positions than taps reach
    {{2, 1, 25, 26}, {3, 2}, {2, 3}, {9, 4}, {9, 7}},      // dilation far above the stride, strided
    // 1-D
    {{2, 3, 17}, {3}, {1}, {1}, {1}},
    {{3, 2, 40}, {10}, {5}, {0}, {1}},                     // wav2vec-style
    {{1, 4, 23}, {3}, {2}, {4}, {5}, {1}},
    {{2, 2, 60}, {2}, {1}, {0}, {17}},                     // a TCN layer: dilation 17, kernel 2
    // 3-D
    {{2, 2, 5, 6, 7}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}},
    {{1, 3, 4, 9, 8}, {3, 7, 7}, {1, 2, 2}, {1, 3, 3}, {1, 1, 1}},  // an R3D-style stem
    {{2, 1, 7, 5, 6}, {2, 3, 2}, {2, 1, 3}, {0, 2, 1}, {3, 1, 2}},
    {{1, 2, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}},
    {{1, 2, 6, 5, 7}, {3, 2, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {1, 0, 1}},
};

ConvGeometry geometry(const Case& c) {
  ConvGeometry g(c.input[1], at::IntArrayRef(c.input).slice(2), c.kernel, c.stride, c.padding, c.dilation);
  int64_t* const outs[] = {&g.out_d, &g.out_h, &g.out_w};
  for (size_t i = 0; i < c.drop.size(); ++i) {
    *outs[3 - c.drop.size() + i] -= c.drop[i];
  }
  return g;
}

// (N, C, *spatial) as (N, C, D, H, W)
at::Tensor as_5d(const at::Tensor& t) {
  at::Tensor v = t;
  while (v.dim() < 5) {
    v = v.unsqueeze(2);
  }
  return v;
}

// The textbook definition of the column matrix: calls visit(b, c, pixel,
// row, col) for each entry (b, row = (c, kd, kh, kw), col = (od, oh, ow)) whose
// tap reads image element (b, c, pixel) inside the image.
template <class Visit>
void for_each_tap(const ConvGeometry& g, int64_t n, Visit visit) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t c = 0; c < g.channels; ++c)
      for (int64_t kd = 0; kd < g.kernel_d; ++kd)
        for (int64_t kh = 0; kh < g.kernel_h; ++kh)
          for (int64_t kw = 0; kw < g.kernel_w; ++kw)
            for (int64_t od = 0; od < g.out_d; ++od)
              for (int64_t oh = 0; oh < g.out_h; ++oh)
                for (int64_t ow = 0; ow < g.out_w; ++ow) {
                  const int64_t id = od * g.stride_d - g.pad_d + kd * g.dilation_d;
                  const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
                  const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
                  if (id >= 0 && id < g.depth && ih >= 0 && ih < g.height && iw >= 0 && iw < g.width) {
                    visit(b, c, (id * g.height + ih) * g.width + iw,
                          ((c * g.kernel_d + kd) * g.kernel_h + kh) * g.kernel_w + kw,
                          (od * g.out_h + oh) * g.out_w + ow);
                  }
                }
}

at::Tensor im2col_reference(const at::Tensor& x5, const ConvGeometry& g) {
  const int64_t n = x5.size(0);
  at::Tensor out = at::zeros({n, g.rows(), g.cols()}, f64());
  const at::Tensor x = x5.reshape({n, g.channels, g.pixels()});
  auto in = x.accessor<double, 3>();
  auto o = out.accessor<double, 3>();
  for_each_tap(g, n, [&](int64_t b, int64_t c, int64_t pixel, int64_t row, int64_t col) {
    o[b][row][col] = in[b][c][pixel];
  });
  return out;
}

at::Tensor col2im_reference(const at::Tensor& cols, const ConvGeometry& g) {
  const int64_t n = cols.size(0);
  at::Tensor out = at::zeros({n, g.channels, g.pixels()}, f64());
  auto in = cols.accessor<double, 3>();
  auto o = out.accessor<double, 3>();
  for_each_tap(g, n, [&](int64_t b, int64_t c, int64_t pixel, int64_t row, int64_t col) {
    o[b][c][pixel] += in[b][row][col];
  });
  return out.view({n, g.channels, g.depth, g.height, g.width});
}

// The whole-image column layouts the CUDA backend is given: the im2col /
// col2im ops' (N, rows, L), the convolutions' tiles of nb images side by
// side (rows, nb * L), rows back to back or, as the CUDA plan lays them, on
// 32-byte sectors (column_row_stride), and grad_input's columns of large
// images (image_gemms), a matrix an image with its rows on sectors.
// layout_of returns the layout and a (N, rows, L) view of `buffer`
// (buffer_elements long).
enum class Layout { kOp, kTile, kPaddedTile, kPaddedImages };
constexpr Layout kLayouts[] = {Layout::kOp, Layout::kTile, Layout::kPaddedTile, Layout::kPaddedImages};

int64_t row_stride_of(Layout layout, int64_t n, const ConvGeometry& g) {
  if (layout == Layout::kOp) {
    return g.cols();
  }
  const myconv::detail::Tuning t = myconv::detail::cuda_backend_tuning();
  return layout == Layout::kTile           ? n * g.cols()
         : layout == Layout::kPaddedImages ? myconv::detail::column_row_stride(t, g.cols(), 4)
                                           : myconv::detail::column_row_stride(t, n * g.cols(), 4);
}

int64_t buffer_elements(Layout layout, int64_t n, const ConvGeometry& g) {
  return layout == Layout::kOp             ? n * g.rows() * g.cols()
         : layout == Layout::kPaddedImages ? n * g.rows() * row_stride_of(layout, n, g)
                                           : g.rows() * row_stride_of(layout, n, g);
}

std::pair<ColumnLayout, at::Tensor> layout_of(Layout layout, const at::Tensor& buffer, int64_t n,
                                              const ConvGeometry& g) {
  if (layout == Layout::kOp) {
    return {{g.rows() * g.cols(), g.cols(), 1}, buffer.view({n, g.rows(), g.cols()})};
  }
  if (layout == Layout::kPaddedImages) {
    const int64_t rs = row_stride_of(layout, n, g);
    return {{g.rows() * rs, rs, 1}, buffer.as_strided({n, g.rows(), g.cols()}, {g.rows() * rs, rs, 1})};
  }
  const int64_t rs = row_stride_of(layout, n, g);
  return {{g.cols(), rs, 1}, buffer.as_strided({n, g.rows(), g.cols()}, {g.cols(), rs, 1})};
}

std::string describe(const Case& c) {
  std::ostringstream out;
  out << "input " << at::IntArrayRef(c.input) << " kernel " << at::IntArrayRef(c.kernel) << " stride "
      << at::IntArrayRef(c.stride) << " padding " << at::IntArrayRef(c.padding) << " dilation "
      << at::IntArrayRef(c.dilation);
  return out.str();
}

TEST(CudaIm2col, MatchesTheReferenceTheCpuBackendAndUnfoldOnTheHost) {
  for (const Layout layout : kLayouts) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const at::Tensor x = as_5d(at::randn(c.input, f64()));
      const at::Tensor buffer = at::full({buffer_elements(layout, n, g)}, NAN, f64());
      const auto [cl, view] = layout_of(layout, buffer, n, g);
      myconv::cuda::launch_im2col(HostLauncher{}, x, g, ColumnTile::whole(g), buffer, cl);
      EXPECT_TRUE(at::equal(view, im2col_reference(x, g))) << describe(c);
      // nothing written between the rows
      EXPECT_EQ(at::isnan(buffer).sum().item<int64_t>(), buffer.numel() - view.numel()) << describe(c);
      // the CPU backend's kernel, same layout
      const at::Tensor cpu = at::full({buffer_elements(layout, n, g)}, NAN, f64());
      myconv::detail::im2col_cpu(x, g, ColumnTile::whole(g), cpu, cl);
      EXPECT_TRUE(at::equal(view, layout_of(layout, cpu, n, g).second)) << describe(c);
      if (c.dims() == 2 && c.drop.empty()) {  // F.unfold
        EXPECT_TRUE(at::equal(view, at::im2col(x.squeeze(2), c.kernel, c.dilation, c.padding, c.stride)))
            << describe(c);
      }
    }
  }
}

TEST(CudaCol2im, MatchesTheReferenceTheCpuBackendAndFoldOnTheHost) {
  for (const Layout layout : kLayouts) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const at::Tensor buffer = at::randn({buffer_elements(layout, n, g)}, f64());
      const auto [cl, view] = layout_of(layout, buffer, n, g);
      const at::Tensor images = at::full({n, g.channels, g.depth, g.height, g.width}, NAN, f64());
      myconv::cuda::launch_col2im(HostLauncher{}, buffer, cl, ColumnTile::whole(g), g, images);
      EXPECT_CLOSE(images, col2im_reference(view.contiguous(), g), 1e-15) << describe(c);
      // the CPU backend's kernel: the same sums in the same (kd, kh, kw) order, the same bits
      const at::Tensor cpu = at::full_like(images, NAN);
      myconv::detail::col2im_cpu(buffer, cl, ColumnTile::whole(g), g, cpu, /*accumulate=*/false);
      EXPECT_TRUE(at::equal(images, cpu)) << describe(c);
      if (c.dims() == 2 && c.drop.empty() && n > 0) {  // F.fold
        EXPECT_CLOSE(images.squeeze(2),
                     at::col2im(view.contiguous(), {g.height, g.width}, c.kernel, c.dilation, c.padding, c.stride),
                     1e-15);
      }
    }
  }
}

TEST(CudaCol2im, ReducedPrecisionSumsInFloat) {
  for (const Case& c : {Case{{2, 3, 9, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1}},
                        Case{{1, 2, 5, 6, 4}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}}}) {
    const ConvGeometry g = geometry(c);
    const int64_t n = c.input[0];
    const ColumnLayout cl{g.rows() * g.cols(), g.cols(), 1};
    for (const auto dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
      const at::Tensor cols = at::randn({n, g.rows(), g.cols()}, f64()).to(dtype);
      const at::Tensor images = at::empty({n, g.channels, g.depth, g.height, g.width}, cols.options());
      myconv::cuda::launch_col2im(HostLauncher{}, cols, cl, ColumnTile::whole(g), g, images);
      // the CPU backend's sums: float, in (kd, kh, kw) order, rounded once
      const at::Tensor cpu = at::empty_like(images);
      myconv::detail::col2im_cpu(cols, cl, ColumnTile::whole(g), g, cpu, /*accumulate=*/false);
      EXPECT_TRUE(at::equal(images, cpu)) << dtype;
      EXPECT_CLOSE(images, col2im_reference(cols.to(at::kDouble), g), dtype == at::kFloat ? 1e-6 : 1e-2);
      const at::Tensor x = at::randn({n, g.channels, g.depth, g.height, g.width}, f64()).to(dtype);
      const at::Tensor out = at::empty({n, g.rows(), g.cols()}, x.options());
      myconv::cuda::launch_im2col(HostLauncher{}, x, g, ColumnTile::whole(g), out, cl);
      EXPECT_TRUE(at::equal(out, im2col_reference(x.to(at::kDouble), g).to(dtype))) << dtype;
    }
  }
}

// ---- coverage ------------------------------------------------------------------

// im2col through an access that counts writes per column entry and records
// the image element each one copied (-1: a padding zero).
struct TraceIm2col {
  int64_t entries, pixels;
  int32_t* writes;
  int64_t* source;
  void copy(int64_t column, int64_t image) const {
    ASSERT_TRUE(column >= 0 && column < entries) << "column " << column;
    ASSERT_TRUE(image >= -1 && image < pixels) << "image element " << image;
    ++writes[column];
    source[column] = image;
  }
};

// col2im through an access whose "sum" is the multiset of column entries
// gathered: a sum of 64-bit hashes and a count.
struct Gathered {
  uint64_t hash = 0;
  int64_t count = 0;
  bool operator==(const Gathered& o) const { return hash == o.hash && count == o.count; }
};
struct TraceCol2im {
  int64_t entries, pixels;
  const uint64_t* hash_of_column;
  Gathered* images;
  int32_t* stores;
  Gathered zero_sum() const { return {}; }
  void add(Gathered& sum, int64_t column) const {
    ASSERT_TRUE(column >= 0 && column < entries) << "column " << column;
    sum.hash += hash_of_column[column];
    ++sum.count;
  }
  void store(int64_t image, Gathered sum) const {
    ASSERT_TRUE(image >= 0 && image < pixels) << "image element " << image;
    images[image] = sum;
    ++stores[image];
  }
};

TEST(CudaKernels, Im2colWritesEachEntryOnceAndCol2imGathersExactlyTheTapsThatReadAnElement) {
  std::mt19937_64 rng(7);
  for (const Layout layout : kLayouts) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const int64_t entries = buffer_elements(layout, n, g), pixels = n * g.channels * g.pixels();
      const auto [cl, unused] = layout_of(layout, at::empty({entries}), n, g);
      const Geom geom = myconv::cuda::make_geom(g, cl, n);
      // the entries of the matrix (not the gaps between padded rows): -1, the gaps -2
      std::vector<int64_t> expected(entries, -2);
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t r = 0; r < g.rows(); ++r) {
          for (int64_t l = 0; l < g.cols(); ++l) {
            expected[b * cl.batch_stride + r * cl.row_stride + l] = -1;
          }
        }
      }
      // each entry copies the element its tap reads, by the textbook definition
      for_each_tap(g, n, [&](int64_t b, int64_t ch, int64_t pixel, int64_t row, int64_t col) {
        expected[b * cl.batch_stride + row * cl.row_stride + col] = (b * g.channels + ch) * g.pixels() + pixel;
      });
      for (const bool narrow : {false, true}) {  // 64-bit and 32-bit index arithmetic
        std::vector<int32_t> writes(entries, 0);
        std::vector<int64_t> source(entries, -2);
        TraceIm2col trace_im2col{entries, pixels, writes.data(), source.data()};
        if (narrow) {
          run_grid<myconv::cuda::Im2colWork<uint32_t>>(myconv::cuda::im2col_elements(geom), geom, trace_im2col);
        } else {
          run_grid<myconv::cuda::Im2colWork<>>(myconv::cuda::im2col_elements(geom), geom, trace_im2col);
        }
        for (int64_t e = 0; e < entries; ++e) {  // each entry once, no gap between rows
          ASSERT_EQ(writes[e], expected[e] == -2 ? 0 : 1)
              << "column entry " << e << " written " << writes[e] << " times, " << describe(c);
        }
        EXPECT_TRUE(source == expected) << describe(c);
      }

      // col2im gathers, for every element, exactly the entries whose tap read it
      std::vector<uint64_t> hash(entries);
      std::vector<Gathered> want(pixels);
      for (int64_t e = 0; e < entries; ++e) {
        hash[e] = rng();
        if (expected[e] >= 0) {
          want[expected[e]].hash += hash[e];
          ++want[expected[e]].count;
        }
      }
      std::vector<Gathered> got(pixels);
      std::vector<int32_t> stores(pixels, 0);
      TraceCol2im trace_col2im{entries, pixels, hash.data(), got.data(), stores.data()};
      run_grid<myconv::cuda::Col2imWork<>>(myconv::cuda::col2im_elements(geom), geom, trace_col2im);
      EXPECT_TRUE(std::all_of(stores.begin(), stores.end(), [](int32_t s) { return s == 1; }));
      EXPECT_TRUE(got == want) << "col2im gathered other entries than the taps that read, " << describe(c);
    }
  }
}

// ---- index arithmetic past 2^31 ---------------------------------------------------

// Records the offsets one element reads and writes.
struct RecordOffsets {
  std::vector<std::pair<int64_t, int64_t>>* copies;  // (column, image); image -1 for a zero
  std::vector<int64_t>* gathered;
  int64_t* stored;
  void copy(int64_t column, int64_t image) const { copies->push_back({column, image}); }
  int64_t zero_sum() const { return 0; }
  void add(int64_t& sum, int64_t column) const {
    gathered->push_back(column);
    ++sum;
  }
  void store(int64_t image, int64_t) const { *stored = image; }
};

using i128 = __int128;

// Sampled elements of a window of 3 taps, stride 1 and padding 1 along each
// spatial axis, over images too large to allocate; every offset checked in
// 128-bit arithmetic.
// Tap `tap` of output position `at` (stride 1, a position per pixel): the
// input element it reads (`source`, flattened over the three axes after
// `outer`; inside = false where it lies in the padding), and the position
// whose same tap reads element `at` (`reader`; reads = false where there is
// none).
struct TapEnds {
  bool inside = true, reads = true;
  i128 source = 0, reader = 0;
};
TapEnds tap_ends(const int64_t at[3], const int64_t tap[3], const int64_t pad[3], const int64_t extent[3],
                 i128 outer) {
  TapEnds e;
  e.source = outer;
  for (int a = 0; a < 3; ++a) {
    const int64_t in = at[a] - pad[a] + tap[a], out = at[a] + pad[a] - tap[a];
    e.inside = e.inside && in >= 0 && in < extent[a];
    e.reads = e.reads && out >= 0 && out < extent[a];
    e.source = e.source * extent[a] + in;
    e.reader = e.reader * extent[a] + out;
  }
  return e;
}

void check_large(int64_t N, int64_t C, std::vector<int64_t> size) {
  const int64_t dims = static_cast<int64_t>(size.size());
  const std::vector<int64_t> three(dims, 3), one(dims, 1);
  const ConvGeometry g(C, size, three, one, one, one);
  const int64_t D = g.depth, H = g.height, W = g.width, L = g.cols(), R = g.rows();
  const int64_t K[3] = {g.kernel_d, g.kernel_h, g.kernel_w}, P[3] = {g.pad_d, g.pad_h, g.pad_w};
  // (the padded tile layout's offsets are those of the tile layout with a larger row stride, and its element
  // order has idle lanes: its coverage and its 32- vs 64-bit agreement are checked on the cases above)
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    const ColumnLayout cl = layout == Layout::kOp ? ColumnLayout{R * L, L, 1} : ColumnLayout{L, N * L, 1};
    const Geom geom = myconv::cuda::make_geom(g, cl, N);
    EXPECT_EQ(geom.images_side_by_side, layout == Layout::kTile);
    const int64_t total = myconv::cuda::im2col_elements(geom);
    ASSERT_EQ(static_cast<i128>(total), static_cast<i128>(N) * C * D * H * W);
    ASSERT_EQ(myconv::cuda::col2im_elements(geom), total);  // padding 1, stride 1: a position per pixel
    ASSERT_GT(total, int64_t{1} << 32);
    EXPECT_EQ(blocks_for(total), myconv::cuda::kMaxBlocks);
    const i128 columns_numel = static_cast<i128>(N) * R * L;

    const int64_t image = C * D * H * W;
    const std::vector<int64_t> samples = {0, (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 12345,
                                          image - 1, image + H * W + W + 1, total - 1};
    for (const int64_t i : samples) {
      // col2im's element i is image element (b, c, z, y, x); im2col's element i is position (z, y, x) of
      // image b and channel c taken in (b, c) order, or in (c, b) order where the images lie side by side
      const int64_t b = i / image, c = i / (D * H * W) % C;
      const int64_t ib = geom.images_side_by_side ? i / (D * H * W) % N : b;
      const int64_t ic = geom.images_side_by_side ? i / (D * H * W * N) : c;
      const int64_t at[3] = {i / (H * W) % D, i / W % H, i % W};  // (z, y, x)
      const int64_t extent[3] = {D, H, W};
      std::vector<std::pair<int64_t, int64_t>> copies;
      RecordOffsets record{&copies, nullptr, nullptr};
      myconv::cuda::im2col_element(geom, i, record);
      ASSERT_EQ(static_cast<int64_t>(copies.size()), g.taps());
      std::vector<int64_t> want_gathered;
      int64_t t = 0;
      for (int64_t kd = 0; kd < K[0]; ++kd) {
        for (int64_t kh = 0; kh < K[1]; ++kh) {
          for (int64_t kw = 0; kw < K[2]; ++kw, ++t) {
            const int64_t tap[3] = {kd, kh, kw};
            const i128 row = ((static_cast<i128>(ic) * K[0] + kd) * K[1] + kh) * K[2] + kw;
            const i128 gather_row = ((static_cast<i128>(c) * K[0] + kd) * K[1] + kh) * K[2] + kw;
            const i128 position = (static_cast<i128>(at[0]) * H + at[1]) * W + at[2];
            const i128 column = static_cast<i128>(ib) * cl.batch_stride + row * cl.row_stride + position;
            // the element tap `tap` of position `at` reads, and the position whose tap reads element `at`
            const TapEnds e = tap_ends(at, tap, P, extent, static_cast<i128>(ib) * C + ic);
            EXPECT_EQ(static_cast<i128>(copies[t].first), column) << "element " << i << " tap " << t;
            EXPECT_EQ(static_cast<i128>(copies[t].second), e.inside ? e.source : -1) << "element " << i << " tap " << t;
            EXPECT_LT(static_cast<i128>(copies[t].first), columns_numel);
            if (e.reads) {
              want_gathered.push_back(static_cast<int64_t>(static_cast<i128>(b) * cl.batch_stride +
                                                           gather_row * cl.row_stride + e.reader));
            }
          }
        }
      }
      std::vector<int64_t> gathered;
      int64_t stored = -1;
      RecordOffsets io{nullptr, &gathered, &stored};
      myconv::cuda::col2im_element(geom, i, io);
      EXPECT_EQ(stored, i);
      EXPECT_EQ(gathered, want_gathered) << "element " << i;
    }
  }
}

TEST(CudaKernels, IndexArithmeticPast2To31WithoutAllocating) {
  check_large(2, 3, {40000, 30000});       // 2-D: 7.2e9 image elements, 6.5e10 column entries
  check_large(2, 3, {1000, 1000, 1200});   // 3-D: 7.2e9 image elements, 1.9e11 column entries
  check_large(3, 5, {300000000});          // 1-D: 4.5e9 image elements
}

} // namespace

// ---- 32-bit index arithmetic ------------------------------------------------------

namespace {

TEST(CudaDivider, MagicNumbersDivideExactlyBelow2To31) {
  using myconv::cuda::Divider;
  std::mt19937_64 rng(3);
  std::vector<uint32_t> divisors = {1, 2, 3, 5, 7, 9, 10, 16, 17, 49, 56, 100, 196, 224, 3136, 50176, 65535, 65536,
                                    65537, 1000003, (1u << 30) - 1, 1u << 30, (1u << 31) - 1};
  for (int i = 0; i < 200; ++i) {
    divisors.push_back(1 + static_cast<uint32_t>(rng() % ((1u << 31) - 1)));
  }
  for (const uint32_t d : divisors) {
    const Divider<uint32_t> div(d);
    std::vector<uint32_t> ns = {0, 1, d - 1, d, d + 1, (1u << 31) - 1, (1u << 31) - 2};
    for (int i = 0; i < 2000; ++i) {
      ns.push_back(static_cast<uint32_t>(rng() % (1u << 31)));
    }
    for (uint64_t k = 1; k < 4; ++k) {
      if (k * d < (1u << 31)) {
        ns.push_back(static_cast<uint32_t>(k * d - 1));
        ns.push_back(static_cast<uint32_t>(k * d));
      }
    }
    for (const uint32_t n : ns) {
      if (n >= (1u << 31)) {
        continue;
      }
      uint32_t r = 0;
      ASSERT_EQ(div.divmod(n, r), n / d) << n << " / " << d;
      ASSERT_EQ(r, n % d) << n << " % " << d;
    }
  }
}

// Records, in order, the offsets one element writes, reads and sums.
struct RecordAll {
  std::vector<int64_t>* out;
  void copy(int64_t column, int64_t image) const {
    out->push_back(column);
    out->push_back(image);
  }
  int64_t zero_sum() const { return 0; }
  void add(int64_t& sum, int64_t column) const {
    out->push_back(column);
    ++sum;
  }
  void store(int64_t image, int64_t sum) const {
    out->push_back(image);
    out->push_back(sum);
  }
};

TEST(CudaKernels, ThirtyTwoBitIndexArithmeticDoesExactlyTheSixtyFourBitWork) {
  for (const Layout layout : kLayouts) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const auto [cl, unused] = layout_of(layout, at::empty({buffer_elements(layout, n, g)}), n, g);
      const Geom geom = myconv::cuda::make_geom(g, cl, n);
      if (n == 0) {
        EXPECT_FALSE(geom.narrow_sizes);  // nothing to launch: the 32-bit divisors are not even made
        continue;
      }
      ASSERT_TRUE(geom.narrow_sizes && myconv::cuda::narrow_launch(geom, myconv::cuda::im2col_elements(geom)));
      for (int64_t i = 0; i < myconv::cuda::im2col_elements(geom); ++i) {
        std::vector<int64_t> wide, narrow;
        RecordAll w{&wide}, r{&narrow};
        myconv::cuda::im2col_element<int64_t>(geom, i, w);
        myconv::cuda::im2col_element<uint32_t>(geom, i, r);
        ASSERT_EQ(wide, narrow) << "im2col element " << i << ", " << describe(c);
      }
      for (int64_t i = 0; i < myconv::cuda::col2im_elements(geom); ++i) {
        std::vector<int64_t> wide, narrow;
        RecordAll w{&wide}, r{&narrow};
        myconv::cuda::col2im_element<int64_t>(geom, i, w);
        myconv::cuda::col2im_element<uint32_t>(geom, i, r);
        ASSERT_EQ(wide, narrow) << "col2im element " << i << ", " << describe(c);
      }
    }
  }
  // a launch of 2^31 elements or more, or a size past 31 bits, takes the 64-bit arithmetic
  const ConvGeometry big(3, std::vector<int64_t>{40000, 30000}, std::vector<int64_t>{3, 3},
                         std::vector<int64_t>{1, 1}, std::vector<int64_t>{1, 1}, std::vector<int64_t>{1, 1});
  const Geom geom = myconv::cuda::make_geom(big, ColumnLayout{big.rows() * big.cols(), big.cols(), 1}, 1);
  EXPECT_TRUE(geom.narrow_sizes);
  EXPECT_TRUE(myconv::cuda::narrow_launch(geom, (int64_t{1} << 31) - 1));
  EXPECT_FALSE(myconv::cuda::narrow_launch(geom, myconv::cuda::im2col_elements(geom)));
  const ConvGeometry long1d(1, std::vector<int64_t>{int64_t{3} << 30}, std::vector<int64_t>{3},
                            std::vector<int64_t>{1}, std::vector<int64_t>{1}, std::vector<int64_t>{1});
  EXPECT_FALSE(myconv::cuda::make_geom(long1d, ColumnLayout{long1d.cols(), long1d.cols(), 1}, 1).narrow_sizes);
}

// ---- memory coalescing ------------------------------------------------------------------

// Records the offsets of one element's stores, in order.
struct RecordStores {
  std::vector<int64_t>* stores;
  void copy(int64_t column, int64_t) const { stores->push_back(column); }
  int64_t zero_sum() const { return 0; }
  void add(int64_t&, int64_t) const {}
  void store(int64_t image, int64_t) const { stores->push_back(image); }
};

// Sector efficiency of a kernel's stores: for every warp (32 consecutive
// threads of a block) and every step of their grid-stride loops, the bytes the
// active threads store over the bytes of the distinct 32-byte sectors they
// touch, summed over the launch (1: every sector a warp writes is full).
template <typename Work>
double store_sector_efficiency(const Geom& g, int64_t total, int64_t element_size) {
  const int64_t blocks = blocks_for(total), stride = int64_t{kThreads} * blocks;
  int64_t useful = 0, moved = 0;
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t warp = 0; warp < kThreads / 32; ++warp) {
      for (int64_t first = block * kThreads + warp * 32; first < total; first += stride) {
        // the stores of the warp's 32 threads at this step of the loop, one list per thread
        std::vector<std::vector<int64_t>> lanes;
        for (int64_t lane = 0; lane < 32 && first + lane < total; ++lane) {
          lanes.emplace_back();
          RecordStores record{&lanes.back()};
          Work::run(g, first + lane, record);
        }
        size_t steps = 0;
        for (const auto& l : lanes) {
          steps = std::max(steps, l.size());
        }
        for (size_t s = 0; s < steps; ++s) {  // the warp's s-th store instruction
          std::vector<int64_t> sectors;
          for (const auto& l : lanes) {
            if (s < static_cast<size_t>(l.size())) {
              sectors.push_back(l[s] * element_size / 32);
              useful += element_size;
            }
          }
          std::sort(sectors.begin(), sectors.end());
          moved += 32 * (std::unique(sectors.begin(), sectors.end()) - sectors.begin());
        }
      }
    }
  }
  return moved ? static_cast<double>(useful) / static_cast<double>(moved) : 1.0;
}

}  // namespace

namespace {

TEST(CudaKernels, StoresOfStrideOneLayersFillWholeSectors) {
  // The layouts the CUDA backend hands the kernels: each chunk's images side
  // by side in rows that start on whole sectors (cuda_backend_tuning's
  // column_row_bytes; the composition's column_row_stride).
  const myconv::detail::Tuning t = myconv::detail::cuda_backend_tuning();
  struct Layer {
    const char* name;
    int64_t n, c;
    std::vector<int64_t> size, kernel, padding;
  };
  const std::vector<Layer> layers = {
      {"3x3 56x56", 2, 4, {56, 56}, {3, 3}, {1, 1}},   {"3x3 28x28", 3, 8, {28, 28}, {3, 3}, {1, 1}},
      {"3x3 14x14", 4, 16, {14, 14}, {3, 3}, {1, 1}},  {"3x3 7x7", 8, 16, {7, 7}, {3, 3}, {1, 1}},
      {"1x1 14x14", 3, 16, {14, 14}, {1, 1}, {0, 0}},  {"5x5 13x11", 2, 8, {13, 11}, {5, 5}, {2, 2}},
      {"1-D k3 1000", 4, 8, {1000}, {3}, {1}},          {"3-D 3x3x3 6x7x9", 2, 4, {6, 7, 9}, {3, 3, 3}, {1, 1, 1}},
  };
  for (const int64_t size : {4, 2}) {  // float32; float16 / bfloat16
    for (const Layer& l : layers) {
      const std::vector<int64_t> one(l.size.size(), 1);
      const ConvGeometry g(l.c, l.size, l.kernel, one, l.padding, one);
      const int64_t positions = l.n * g.cols();
      const ColumnLayout padded{g.cols(), myconv::detail::column_row_stride(t, positions, size), 1};
      ASSERT_EQ(padded.row_stride * size % 32, 0);
      ASSERT_LT(padded.row_stride - positions, 32 / size);
      const Geom geom = myconv::cuda::make_geom(g, padded, l.n);
      const double im2col = store_sector_efficiency<myconv::cuda::Im2colWork<uint32_t>>(
          geom, myconv::cuda::im2col_elements(geom), size);
      const double col2im = store_sector_efficiency<myconv::cuda::Col2imWork<uint32_t>>(
          geom, myconv::cuda::col2im_elements(geom), size);
      // the mapping before: (b, c, position) order, rows one after the other
      Geom before = myconv::cuda::make_geom(g, ColumnLayout{g.cols(), positions, 1}, l.n);
      before.images_side_by_side = false;
      const double im2col_before = store_sector_efficiency<myconv::cuda::Im2colWork<uint32_t>>(
          before, before.batch * before.channels * g.cols(), size);
      std::cout << "  " << l.name << ", " << size << "-byte stores: im2col " << im2col << " (before: " << im2col_before
                << "), col2im " << col2im << "\n";
      EXPECT_GE(im2col, 0.9) << l.name;
      EXPECT_GE(col2im, 0.9) << l.name;
    }
  }
  // the CPU backend's tuning keeps rows back to back
  EXPECT_EQ(myconv::detail::column_row_stride(myconv::detail::Tuning{}, 588, 4), 588);
  EXPECT_EQ(myconv::detail::column_row_stride(t, 588, 4), 592);
  EXPECT_EQ(myconv::detail::column_row_stride(t, 588, 2), 592);
  EXPECT_EQ(myconv::detail::column_row_stride(t, 590, 8), 592);
}

}  // namespace

// ---- channels-last columns ------------------------------------------------------------
// The convolution's channels-last tiles: channels-last (N, D, H, W, C) images,
// a (positions, rows) matrix per image, rows (kd, kh, kw, c) over the tile's
// run of channels [c0, c1) (all of them, or a group's).

namespace {

struct ChannelRun {
  int64_t c0, c1;
  int64_t count() const { return c1 - c0; }
};

// The runs of channels a case's tiles take: all, and where there are enough,
// a run from the second channel on and one in the middle.
std::vector<ChannelRun> channel_runs(int64_t channels) {
  std::vector<ChannelRun> runs = {{0, channels}};
  if (channels >= 2) {
    runs.push_back({1, channels});
  }
  if (channels >= 3) {
    runs.push_back({1, channels - 1});
  }
  return runs;
}

ColumnLayout channels_last_layout(const ConvGeometry& g, const ChannelRun& run) {
  const int64_t rows = run.count() * g.taps();
  return {g.cols() * rows, 1, rows, /*channels_last=*/true};
}

ColumnTile channels_last_tile(const ConvGeometry& g, const ChannelRun& run) {
  return {0, g.cols(), run.c0, run.c1};
}

// (N, C, *spatial) images as channels-last 5-D tensors.
at::Tensor channels_last_images(const at::Tensor& t) {
  return as_5d(t).contiguous(at::MemoryFormat::ChannelsLast3d);
}

std::string describe(const Case& c, const ChannelRun& run) {
  return describe(c) + " channels [" + std::to_string(run.c0) + ", " + std::to_string(run.c1) + ")";
}

// The channels-last geometry of a case's tile with im2col's elements one per
// (position, channel) or, `in_order`, one per column entry (what make_geom
// picks for runs narrower than a sector; both are checked on every case).
Geom channels_last_geom(const ConvGeometry& g, const ChannelRun& run, int64_t n, bool in_order) {
  // (elements of a sector's size: never in order)
  Geom geom = myconv::cuda::make_geom(g, channels_last_layout(g, run), n, channels_last_tile(g, run),
                                      /*element_size=*/myconv::cuda::kSectorBytes);
  EXPECT_FALSE(geom.entries_in_order);
  geom.entries_in_order = in_order;
  return geom;
}

TEST(CudaChannelsLast, Im2colAndCol2imMatchTheReferenceAndTheCpuBackend) {
  for (const auto& c : kCases) {
    const ConvGeometry g = geometry(c);
    const int64_t n = c.input[0], C = g.channels, L = g.cols(), taps = g.taps();
    for (const ChannelRun& run : channel_runs(C)) {
      const ColumnLayout layout = channels_last_layout(g, run);
      const ColumnTile tile = channels_last_tile(g, run);
      const int64_t nc = run.count();

      // im2col: the reference's rows of the run's channels, as (positions, (tap, c)) per image
      const at::Tensor x = channels_last_images(at::randn(c.input, f64()));
      const at::Tensor columns = at::full({n * L * nc * taps}, NAN, f64());
      myconv::cuda::launch_im2col(HostLauncher{}, x, g, tile, columns, layout);
      const at::Tensor want =
          im2col_reference(x.contiguous(), g).view({n, C, taps, L}).narrow(1, run.c0, nc).permute({0, 3, 2, 1});
      EXPECT_TRUE(at::equal(columns.view({n, L, taps, nc}), want)) << describe(c, run);
      const at::Tensor cpu_columns = at::full_like(columns, NAN);
      myconv::detail::im2col_cpu(x, g, tile, cpu_columns, layout);
      EXPECT_TRUE(at::equal(columns, cpu_columns)) << describe(c, run);

      // col2im: the reference's sums for the run's channels; the other channels untouched
      const at::Tensor cols = at::randn({n * L * nc * taps}, f64());
      const at::Tensor images = channels_last_images(at::full(c.input, NAN, f64()));
      myconv::cuda::launch_col2im(HostLauncher{}, cols, layout, tile, g, images);
      const at::Tensor first = at::zeros({n, C, taps, L}, f64());
      first.narrow(1, run.c0, nc).copy_(cols.view({n, L, taps, nc}).permute({0, 3, 2, 1}));
      const at::Tensor expected = col2im_reference(first.view({n, C * taps, L}), g);
      EXPECT_CLOSE(images.narrow(1, run.c0, nc), expected.narrow(1, run.c0, nc), 1e-15) << describe(c, run);
      EXPECT_EQ(at::isnan(images).sum().item<int64_t>(), images.numel() / std::max<int64_t>(C, 1) * (C - nc))
          << describe(c, run);
      // the CPU backend's channels-last col2im adds position by position (the
      // kernel: tap by tap), so the same sums up to rounding
      const at::Tensor cpu_images = at::full_like(images, NAN);
      myconv::detail::col2im_cpu(cols, layout, tile, g, cpu_images, /*accumulate=*/false);
      EXPECT_CLOSE(images.narrow(1, run.c0, nc), cpu_images.narrow(1, run.c0, nc), 1e-15) << describe(c, run);
    }
  }
  // float16 / bfloat16 sum in float and round once
  const Case c{{2, 5, 9, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1}};
  const ConvGeometry g = geometry(c);
  const ChannelRun run{1, 4};
  for (const auto dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
    const at::Tensor cols = at::randn({2 * g.cols() * 3 * g.taps()}, f64()).to(dtype);
    const at::Tensor images = channels_last_images(at::zeros(c.input, cols.options()));
    myconv::cuda::launch_col2im(HostLauncher{}, cols, channels_last_layout(g, run), channels_last_tile(g, run), g,
                                images);
    const at::Tensor wide = channels_last_images(at::zeros(c.input, f64()));
    myconv::cuda::launch_col2im(HostLauncher{}, cols.to(at::kDouble), channels_last_layout(g, run),
                                channels_last_tile(g, run), g, wide);
    // rounded once from a float sum: within half an ulp of the dtype, plus float's own error
    EXPECT_TRUE(at::equal(images, wide.to(dtype)) || dtype == at::kFloat) << dtype;
    EXPECT_CLOSE(images.to(at::kDouble), wide, dtype == at::kFloat ? 1e-6 : 1e-2) << dtype;
  }
}

TEST(CudaChannelsLast, Im2colWritesEachEntryOnceAndCol2imGathersExactlyTheTapsThatReadAnElement) {
  std::mt19937_64 rng(11);
  for (const auto& c : kCases) {
    const ConvGeometry g = geometry(c);
    const int64_t n = c.input[0], C = g.channels, L = g.cols(), taps = g.taps();
    for (const ChannelRun& run : channel_runs(C)) {
      const ColumnLayout layout = channels_last_layout(g, run);
      const int64_t nc = run.count(), entries = n * L * nc * taps, pixels = n * C * g.pixels();
      // each entry copies the element its tap reads (channels-last offsets), or a padding zero
      std::vector<int64_t> expected(entries, -1);
      for_each_tap(g, n, [&](int64_t b, int64_t ch, int64_t pixel, int64_t row, int64_t col) {
        if (ch >= run.c0 && ch < run.c1) {
          const int64_t tap = row % taps;
          expected[b * layout.batch_stride + col * layout.col_stride + (tap * nc + ch - run.c0) * layout.row_stride] =
              (b * g.pixels() + pixel) * C + ch;
        }
      });
      for (const bool in_order : {false, true}) {
        const Geom geom = channels_last_geom(g, run, n, in_order);
        for (const bool narrow : {false, true}) {
          std::vector<int32_t> writes(entries, 0);
          std::vector<int64_t> source(entries, -2);
          TraceIm2col trace{entries, pixels, writes.data(), source.data()};
          if (narrow) {
            ASSERT_TRUE(n == 0 || myconv::cuda::narrow_launch(geom, myconv::cuda::im2col_elements(geom)));
            run_grid<myconv::cuda::Im2colWork<uint32_t>>(myconv::cuda::im2col_elements(geom), geom, trace);
          } else {
            run_grid<myconv::cuda::Im2colWork<>>(myconv::cuda::im2col_elements(geom), geom, trace);
          }
          EXPECT_TRUE(std::all_of(writes.begin(), writes.end(), [](int32_t w) { return w == 1; }))
              << describe(c, run) << (in_order ? ", entries in order" : "");
          EXPECT_TRUE(source == expected) << describe(c, run) << (in_order ? ", entries in order" : "");
        }
      }
      const Geom geom = channels_last_geom(g, run, n, false);
      // col2im: every element of the run's channels gathers exactly the entries whose tap read it,
      // and is stored once; the other channels' elements are not stored
      std::vector<uint64_t> hash(entries);
      std::vector<Gathered> want(pixels);
      std::vector<int32_t> want_stores(pixels, 0);
      for (int64_t e = 0; e < entries; ++e) {
        hash[e] = rng();
        if (expected[e] >= 0) {
          want[expected[e]].hash += hash[e];
          ++want[expected[e]].count;
        }
      }
      for (int64_t q = 0; q < pixels; ++q) {
        want_stores[q] = q % std::max<int64_t>(C, 1) >= run.c0 && q % std::max<int64_t>(C, 1) < run.c1;
      }
      for (const bool narrow : {false, true}) {
        std::vector<Gathered> got(pixels);
        std::vector<int32_t> stores(pixels, 0);
        TraceCol2im trace{entries, pixels, hash.data(), got.data(), stores.data()};
        if (narrow) {
          run_grid<myconv::cuda::Col2imWork<uint32_t>>(myconv::cuda::col2im_elements(geom), geom, trace);
        } else {
          run_grid<myconv::cuda::Col2imWork<>>(myconv::cuda::col2im_elements(geom), geom, trace);
        }
        EXPECT_TRUE(stores == want_stores) << describe(c, run);
        EXPECT_TRUE(got == want) << "col2im gathered other entries than the taps that read, " << describe(c, run);
      }
    }
  }
}

TEST(CudaChannelsLast, ThirtyTwoBitIndexArithmeticDoesExactlyTheSixtyFourBitWork) {
  for (const auto& c : kCases) {
    const ConvGeometry g = geometry(c);
    const int64_t n = c.input[0];
    if (n == 0) {
      continue;
    }
    for (const ChannelRun& run : channel_runs(g.channels)) {
      for (const bool in_order : {true, false}) {
        const Geom ordered = channels_last_geom(g, run, n, in_order);
        ASSERT_TRUE(ordered.narrow_sizes && ordered.channels_last && !ordered.images_side_by_side);
        for (int64_t i = 0; i < myconv::cuda::im2col_elements(ordered); ++i) {
          std::vector<int64_t> wide, narrow;
          RecordAll w{&wide}, r{&narrow};
          myconv::cuda::im2col_element<int64_t>(ordered, i, w);
          myconv::cuda::im2col_element<uint32_t>(ordered, i, r);
          ASSERT_EQ(wide, narrow) << "im2col element " << i << ", " << describe(c, run) << ", in order " << in_order;
        }
      }
      const Geom geom = channels_last_geom(g, run, n, false);
      for (int64_t i = 0; i < myconv::cuda::col2im_elements(geom); ++i) {
        std::vector<int64_t> wide, narrow;
        RecordAll w{&wide}, r{&narrow};
        myconv::cuda::col2im_element<int64_t>(geom, i, w);
        myconv::cuda::col2im_element<uint32_t>(geom, i, r);
        ASSERT_EQ(wide, narrow) << "col2im element " << i << ", " << describe(c, run);
      }
    }
  }
}

// Sampled elements of channels-last problems too large to allocate (3 taps,
// stride 1, padding 1 along each axis: a position per pixel), every offset
// checked in 128-bit arithmetic.
void check_large_channels_last(int64_t N, int64_t C, std::vector<int64_t> size, ChannelRun run) {
  const int64_t dims = static_cast<int64_t>(size.size());
  const std::vector<int64_t> three(dims, 3), one(dims, 1);
  const ConvGeometry g(C, size, three, one, one, one);
  const ColumnLayout layout = channels_last_layout(g, run);
  const Geom geom = channels_last_geom(g, run, N, false);
  const int64_t nc = run.count(), c0 = run.c0;
  const int64_t D = g.depth, H = g.height, W = g.width, L = g.cols(), rows = nc * g.taps();
  const int64_t K[3] = {g.kernel_d, g.kernel_h, g.kernel_w}, P[3] = {g.pad_d, g.pad_h, g.pad_w};
  const int64_t extent[3] = {D, H, W};
  const int64_t total = myconv::cuda::im2col_elements(geom);
  ASSERT_EQ(static_cast<i128>(total), static_cast<i128>(N) * nc * L);
  ASSERT_EQ(myconv::cuda::col2im_elements(geom), total);
  ASSERT_GT(total, int64_t{1} << 32);
  ASSERT_FALSE(myconv::cuda::narrow_launch(geom, total));
  const std::vector<int64_t> samples = {0, (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 12345,
                                        nc * L - 1, nc * L + nc * (W + 1) + 1, total - 1};
  for (const int64_t i : samples) {
    // element i: channel c of the run at pixel (and position) `at` of image b
    const int64_t c = i % nc, pixel = i / nc % L, b = i / (nc * L);
    const int64_t at[3] = {pixel / (H * W), pixel / W % H, pixel % W};
    std::vector<std::pair<int64_t, int64_t>> copies;
    RecordOffsets record{&copies, nullptr, nullptr};
    myconv::cuda::im2col_element(geom, i, record);
    ASSERT_EQ(static_cast<int64_t>(copies.size()), g.taps());
    std::vector<int64_t> want_gathered;
    int64_t t = 0;
    for (int64_t kd = 0; kd < K[0]; ++kd) {
      for (int64_t kh = 0; kh < K[1]; ++kh) {
        for (int64_t kw = 0; kw < K[2]; ++kw, ++t) {
          const int64_t tap[3] = {kd, kh, kw};
          const i128 column = static_cast<i128>(b) * L * rows + static_cast<i128>(pixel) * rows + t * nc + c;
          const TapEnds e = tap_ends(at, tap, P, extent, b);
          EXPECT_EQ(static_cast<i128>(copies[t].first), column) << "element " << i << " tap " << t;
          EXPECT_EQ(static_cast<i128>(copies[t].second), e.inside ? e.source * C + c0 + c : -1) << "element " << i;
          if (e.reads) {
            want_gathered.push_back(static_cast<int64_t>(static_cast<i128>(b) * L * rows + e.reader * rows + t * nc + c));
          }
        }
      }
    }
    std::vector<int64_t> gathered;
    int64_t stored = -1;
    RecordOffsets io{nullptr, &gathered, &stored};
    myconv::cuda::col2im_element(geom, i, io);
    EXPECT_EQ(static_cast<i128>(stored), (static_cast<i128>(b) * L + pixel) * C + c0 + c);  // (b, pixel, c0 + c)
    EXPECT_EQ(gathered, want_gathered) << "element " << i;
  }
}

TEST(CudaChannelsLast, IndexArithmeticPast2To31WithoutAllocating) {
  check_large_channels_last(2, 3, {40000, 30000}, {0, 3});
  check_large_channels_last(2, 64, {600, 600, 100}, {0, 64});
  check_large_channels_last(3, 96, {600, 600, 100}, {40, 88});  // a run of 48 channels from the 41st
  check_large_channels_last(3, 5, {300000000}, {0, 5});
  check_large_channels_last(3, 8, {300000000}, {2, 7});
}

// Sampled column entries of channels-last problems too large to allocate,
// im2col's elements one per entry (Geom::entries_in_order): element i is
// column entry i (the tile's memory order), and copies what its tap reads;
// 128-bit arithmetic.
void check_large_entries_in_order(int64_t N, int64_t C, std::vector<int64_t> size, ChannelRun run) {
  const int64_t dims = static_cast<int64_t>(size.size());
  const std::vector<int64_t> three(dims, 3), one(dims, 1);
  const ConvGeometry g(C, size, three, one, one, one);
  const Geom geom = channels_last_geom(g, run, N, true);
  const int64_t nc = run.count(), taps = g.taps(), L = g.cols();
  const int64_t K[3] = {g.kernel_d, g.kernel_h, g.kernel_w}, P[3] = {g.pad_d, g.pad_h, g.pad_w};
  const int64_t extent[3] = {g.depth, g.height, g.width};
  const int64_t total = myconv::cuda::im2col_elements(geom);
  ASSERT_EQ(static_cast<i128>(total), static_cast<i128>(N) * L * taps * nc);
  ASSERT_GT(total, int64_t{1} << 32);
  ASSERT_FALSE(myconv::cuda::narrow_launch(geom, total));
  const std::vector<int64_t> samples = {0,        (int64_t{1} << 31) - 1,          int64_t{1} << 31,
                                        (int64_t{1} << 32) + 12345, nc * taps * L - 1,
                                        nc * taps * (L + g.width + 1) + 5, total - 1};
  for (const int64_t i : samples) {
    i128 rest = i;
    const int64_t c = static_cast<int64_t>(rest % nc);
    rest /= nc;
    const int64_t t = static_cast<int64_t>(rest % taps);
    rest /= taps;
    const int64_t pixel = static_cast<int64_t>(rest % L), b = static_cast<int64_t>(rest / L);
    const int64_t at[3] = {pixel / (extent[1] * extent[2]), pixel / extent[2] % extent[1], pixel % extent[2]};
    const int64_t tap[3] = {t / (K[1] * K[2]), t / K[2] % K[1], t % K[2]};
    std::vector<std::pair<int64_t, int64_t>> copies;
    RecordOffsets record{&copies, nullptr, nullptr};
    myconv::cuda::im2col_element(geom, i, record);
    ASSERT_EQ(copies.size(), 1u) << "element " << i;
    EXPECT_EQ(copies[0].first, i);
    const TapEnds e = tap_ends(at, tap, P, extent, b);
    EXPECT_EQ(static_cast<i128>(copies[0].second), e.inside ? e.source * C + run.c0 + c : -1) << "element " << i;
  }
}

TEST(CudaChannelsLast, EntriesInOrderPast2To31WithoutAllocating) {
  check_large_entries_in_order(3, 5, {40000, 30000}, {0, 3});
  check_large_entries_in_order(2, 3, {600, 600, 100}, {0, 3});
  check_large_entries_in_order(3, 4, {300000000}, {1, 3});
}

TEST(CudaChannelsLast, StoresFillWholeSectors) {
  // A warp takes consecutive channels of a position (im2col) or a pixel
  // (col2im): whole sectors where a run of channels fills them; im2col over
  // a narrower run takes one element per column entry (make_geom:
  // entries_in_order), a warp's 32 consecutive entries.
  struct Layer {
    const char* name;
    int64_t n, c;
    std::vector<int64_t> size, kernel, padding, stride;
  };
  const std::vector<Layer> layers = {
      {"3x3 64ch 28x28", 2, 64, {28, 28}, {3, 3}, {1, 1}, {1, 1}},
      {"3x3 16ch 14x14", 2, 16, {14, 14}, {3, 3}, {1, 1}, {1, 1}},
      {"3x3/2 32ch 15x15", 2, 32, {15, 15}, {3, 3}, {1, 1}, {2, 2}},
      {"1x1/2 64ch 14x14", 2, 64, {14, 14}, {1, 1}, {0, 0}, {2, 2}},
      {"3-D 3x3x3 16ch 5x6x7", 2, 16, {5, 6, 7}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}},
      {"7x7/2 3ch 32x32 (stem)", 2, 3, {32, 32}, {7, 7}, {3, 3}, {2, 2}},
      {"3x3 4ch 20x20", 2, 4, {20, 20}, {3, 3}, {1, 1}, {1, 1}},
      {"3-D 3x7x7/1,2,2 3ch 4x16x16 (R3D stem)", 1, 3, {4, 16, 16}, {3, 7, 7}, {1, 3, 3}, {1, 2, 2}},
  };
  for (const int64_t size : {4, 2}) {
    for (const Layer& l : layers) {
      const std::vector<int64_t> one(l.size.size(), 1);
      const ConvGeometry g(l.c, l.size, l.kernel, l.stride, l.padding, one);
      const ChannelRun run{0, l.c};
      const Geom geom =
          myconv::cuda::make_geom(g, channels_last_layout(g, run), l.n, channels_last_tile(g, run), size);
      EXPECT_EQ(geom.entries_in_order, l.c * size < myconv::cuda::kSectorBytes) << l.name;
      const double im2col = store_sector_efficiency<myconv::cuda::Im2colWork<uint32_t>>(
          geom, myconv::cuda::im2col_elements(geom), size);
      const double col2im = store_sector_efficiency<myconv::cuda::Col2imWork<uint32_t>>(
          geom, myconv::cuda::col2im_elements(geom), size);
      Geom other = geom;
      other.entries_in_order = !geom.entries_in_order;
      const double im2col_other = store_sector_efficiency<myconv::cuda::Im2colWork<uint32_t>>(
          other, myconv::cuda::im2col_elements(other), size);
      std::cout << "  channels-last " << l.name << ", " << size << "-byte stores: im2col " << im2col
                << (geom.entries_in_order ? " (entries in order; by position " : " (by position; entries in order ")
                << im2col_other << "), col2im " << col2im << "\n";
      EXPECT_GE(im2col, 0.9) << l.name;
      EXPECT_GE(col2im, 0.9) << l.name;
    }
  }
}

}  // namespace
