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

#include <algorithm>
#include <cstdint>
#include <random>
#include <sstream>
#include <vector>

#include "../../cuda/kernels.h"
#include "cpu/cpu_kernels.h"

namespace {

using myconv::cuda::blocks_for;
using myconv::cuda::Geom;
using myconv::cuda::kThreads;
using myconv::detail::ColumnLayout;
using myconv::detail::ColumnTile;
using myconv::detail::ConvGeometry;
using myconv_test::f64;

// Runs element i = 0 .. total-1 of Work with `io` exactly as a launch of
// blocks_for(total) blocks of kThreads would: every thread's grid-stride loop.
template <typename Work, typename Access>
void run_grid(int64_t total, const Geom& g, Access& io) {
  const int64_t blocks = blocks_for(total);
  auto element = [&](int64_t i) { Work::run(g, i, io); };
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t thread = 0; thread < kThreads; ++thread) {
      myconv::cuda::grid_stride(block, thread, blocks, total, element);
    }
  }
}

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
    // 1-D
    {{2, 3, 17}, {3}, {1}, {1}, {1}},
    {{3, 2, 40}, {10}, {5}, {0}, {1}},                     // wav2vec-style
    {{1, 4, 23}, {3}, {2}, {4}, {5}, {1}},
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

// The two whole-image column layouts the CUDA backend is given: the im2col /
// col2im ops' (N, rows, L), and the convolutions' tiles of nb images side by
// side (rows, nb * L). Returns the layout and a (N, rows, L) view of `buffer`.
enum class Layout { kOp, kTile };

std::pair<ColumnLayout, at::Tensor> layout_of(Layout layout, const at::Tensor& buffer, int64_t n,
                                              const ConvGeometry& g) {
  if (layout == Layout::kOp) {
    return {{g.rows() * g.cols(), g.cols(), 1}, buffer.view({n, g.rows(), g.cols()})};
  }
  return {{g.cols(), n * g.cols(), 1}, buffer.view({g.rows(), n, g.cols()}).permute({1, 0, 2})};
}

std::string describe(const Case& c) {
  std::ostringstream out;
  out << "input " << at::IntArrayRef(c.input) << " kernel " << at::IntArrayRef(c.kernel) << " stride "
      << at::IntArrayRef(c.stride) << " padding " << at::IntArrayRef(c.padding) << " dilation "
      << at::IntArrayRef(c.dilation);
  return out.str();
}

TEST(CudaIm2col, MatchesTheReferenceTheCpuBackendAndUnfoldOnTheHost) {
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const at::Tensor x = as_5d(at::randn(c.input, f64()));
      const at::Tensor buffer = at::full({n * g.rows() * g.cols()}, NAN, f64());
      const auto [cl, view] = layout_of(layout, buffer, n, g);
      myconv::cuda::launch_im2col(HostLauncher{}, x, g, buffer, cl);
      EXPECT_TRUE(at::equal(view, im2col_reference(x, g))) << describe(c);
      // the CPU backend's kernel, same layout
      const at::Tensor cpu = at::full({n * g.rows() * g.cols()}, NAN, f64());
      myconv::detail::im2col_cpu(x, g, ColumnTile::whole(g), cpu, cl);
      EXPECT_TRUE(at::equal(buffer, cpu)) << describe(c);
      if (c.dims() == 2 && c.drop.empty()) {  // F.unfold
        EXPECT_TRUE(at::equal(view, at::im2col(x.squeeze(2), c.kernel, c.dilation, c.padding, c.stride)))
            << describe(c);
      }
    }
  }
}

TEST(CudaCol2im, MatchesTheReferenceTheCpuBackendAndFoldOnTheHost) {
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const at::Tensor buffer = at::randn({n * g.rows() * g.cols()}, f64());
      const auto [cl, view] = layout_of(layout, buffer, n, g);
      const at::Tensor images = at::full({n, g.channels, g.depth, g.height, g.width}, NAN, f64());
      myconv::cuda::launch_col2im(HostLauncher{}, buffer, cl, g, images);
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
      myconv::cuda::launch_col2im(HostLauncher{}, cols, cl, g, images);
      // the CPU backend's sums: float, in (kd, kh, kw) order, rounded once
      const at::Tensor cpu = at::empty_like(images);
      myconv::detail::col2im_cpu(cols, cl, ColumnTile::whole(g), g, cpu, /*accumulate=*/false);
      EXPECT_TRUE(at::equal(images, cpu)) << dtype;
      EXPECT_CLOSE(images, col2im_reference(cols.to(at::kDouble), g), dtype == at::kFloat ? 1e-6 : 1e-2);
      const at::Tensor x = at::randn({n, g.channels, g.depth, g.height, g.width}, f64()).to(dtype);
      const at::Tensor out = at::empty({n, g.rows(), g.cols()}, x.options());
      myconv::cuda::launch_im2col(HostLauncher{}, x, g, out, cl);
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
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    for (const auto& c : kCases) {
      const ConvGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const int64_t entries = n * g.rows() * g.cols(), pixels = n * g.channels * g.pixels();
      const auto [cl, unused] = layout_of(layout, at::empty({entries}), n, g);
      const Geom geom = myconv::cuda::make_geom(g, cl);

      std::vector<int32_t> writes(entries, 0);
      std::vector<int64_t> source(entries, -2);
      TraceIm2col trace_im2col{entries, pixels, writes.data(), source.data()};
      run_grid<myconv::cuda::Im2colWork>(myconv::cuda::im2col_elements(geom, n), geom, trace_im2col);
      ASSERT_TRUE(std::all_of(writes.begin(), writes.end(), [](int32_t w) { return w == 1; }))
          << "an im2col column entry not written exactly once, " << describe(c);
      // each entry copied the element its tap reads, by the textbook definition
      std::vector<int64_t> expected(entries, -1);
      for_each_tap(g, n, [&](int64_t b, int64_t ch, int64_t pixel, int64_t row, int64_t col) {
        expected[b * cl.batch_stride + row * cl.row_stride + col] = (b * g.channels + ch) * g.pixels() + pixel;
      });
      EXPECT_TRUE(source == expected) << describe(c);

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
      run_grid<myconv::cuda::Col2imWork>(myconv::cuda::col2im_elements(geom, n), geom, trace_col2im);
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
void check_large(int64_t N, int64_t C, std::vector<int64_t> size) {
  const int64_t dims = static_cast<int64_t>(size.size());
  const std::vector<int64_t> three(dims, 3), one(dims, 1);
  const ConvGeometry g(C, size, three, one, one, one);
  const int64_t D = g.depth, H = g.height, W = g.width, L = g.cols(), R = g.rows();
  const int64_t K[3] = {g.kernel_d, g.kernel_h, g.kernel_w}, P[3] = {g.pad_d, g.pad_h, g.pad_w};
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    const ColumnLayout cl = layout == Layout::kOp ? ColumnLayout{R * L, L, 1} : ColumnLayout{L, N * L, 1};
    const Geom geom = myconv::cuda::make_geom(g, cl);
    const int64_t total = myconv::cuda::im2col_elements(geom, N);
    ASSERT_EQ(static_cast<i128>(total), static_cast<i128>(N) * C * D * H * W);
    ASSERT_EQ(myconv::cuda::col2im_elements(geom, N), total);  // padding 1, stride 1: a position per pixel
    ASSERT_GT(total, int64_t{1} << 32);
    EXPECT_EQ(blocks_for(total), myconv::cuda::kMaxBlocks);
    const i128 columns_numel = static_cast<i128>(N) * R * L;

    const int64_t image = C * D * H * W;
    const std::vector<int64_t> samples = {0, (int64_t{1} << 31) - 1, int64_t{1} << 31, (int64_t{1} << 32) + 12345,
                                          image - 1, image + H * W + W + 1, total - 1};
    for (const int64_t i : samples) {
      const int64_t b = i / image, c = i / (D * H * W) % C;
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
            const i128 row = ((static_cast<i128>(c) * K[0] + kd) * K[1] + kh) * K[2] + kw;
            const i128 position = (static_cast<i128>(at[0]) * H + at[1]) * W + at[2];
            const i128 column = static_cast<i128>(b) * cl.batch_stride + row * cl.row_stride + position;
            // the element tap `tap` of position `at` reads, and the position whose tap reads element `at`
            bool inside = true, reads = true;
            i128 pixel = static_cast<i128>(b) * C + c, reader = 0;
            for (int a = 0; a < 3; ++a) {
              const int64_t in = at[a] - P[a] + tap[a], out = at[a] + P[a] - tap[a];
              inside = inside && in >= 0 && in < extent[a];
              reads = reads && out >= 0 && out < extent[a];
              pixel = pixel * extent[a] + in;
              reader = reader * extent[a] + out;
            }
            EXPECT_EQ(static_cast<i128>(copies[t].first), column) << "element " << i << " tap " << t;
            EXPECT_EQ(static_cast<i128>(copies[t].second), inside ? pixel : -1) << "element " << i << " tap " << t;
            EXPECT_LT(static_cast<i128>(copies[t].first), columns_numel);
            if (reads) {
              want_gathered.push_back(static_cast<int64_t>(static_cast<i128>(b) * cl.batch_stride +
                                                           row * cl.row_stride + reader));
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
