// The CUDA im2col / col2im kernels' arithmetic, run on the host: the same
// per-element functors (cuda/im2col_elements.h) and the same launch plans
// (cuda/kernels.h) as the device, through a launcher that runs every
// (block, thread) of the launch grid's grid-stride loops. Checked against
// ATen's unfold / fold and the CPU backend, for the whole-image layouts the
// CUDA backend is given; coverage (each column entry written once, each image
// element gathered from exactly the taps that read it); and index arithmetic
// past 2^31 on sampled elements of problems too large to allocate.
#include "helpers.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "../../cuda/kernels.h"

namespace {

using myconv::cuda::blocks_for;
using myconv::cuda::Geom;
using myconv::cuda::kThreads;
using myconv::detail::ColumnLayout;
using myconv::detail::PlaneGeometry;
using myconv_test::f64;

// Runs a launch as the device would: the grid-stride loop of every thread of
// every block of the grid blocks_for() sizes.
struct HostLauncher {
  template <typename Op>
  void operator()(int64_t total, Op op) const {
    const int64_t blocks = blocks_for(total);
    for (int64_t block = 0; block < blocks; ++block) {
      for (int64_t thread = 0; thread < kThreads; ++thread) {
        myconv::cuda::grid_stride(block, thread, blocks, total, op);
      }
    }
  }
};

TEST(CudaGrid, EveryElementOnceAcrossSeveralGridStrides) {
  // more elements than the largest grid has threads: each thread loops
  const int64_t total = 2 * kThreads * myconv::cuda::kMaxBlocks + 777;
  EXPECT_EQ(blocks_for(total), myconv::cuda::kMaxBlocks);
  std::vector<uint8_t> seen(total, 0);
  struct Count {
    uint8_t* seen;
    void operator()(int64_t i) { ++seen[i]; }
  };
  HostLauncher{}(total, Count{seen.data()});
  EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](uint8_t s) { return s == 1; }));
  EXPECT_EQ(blocks_for(0), 1u);
  EXPECT_EQ(blocks_for(1), 1u);
  EXPECT_EQ(blocks_for(kThreads + 1), 2u);
}

// A window over (N, C, H, W) images.
struct Case {
  std::vector<int64_t> input;  // N, C, H, W
  std::vector<int64_t> kernel, stride, padding, dilation;
  // rows (columns) of the window's positions that do not exist: a transposed
  // convolution's output_padding >= stride leaves the last positions out
  int64_t drop_h = 0, drop_w = 0;
};

const std::vector<Case> kCases = {
    {{2, 3, 7, 5}, {3, 3}, {1, 1}, {1, 1}, {1, 1}},
    {{1, 1, 5, 7}, {3, 2}, {1, 1}, {0, 0}, {1, 1}},
    {{3, 2, 9, 11}, {3, 5}, {2, 3}, {1, 2}, {2, 1}},            // odd everything
    {{2, 4, 6, 6}, {1, 1}, {1, 1}, {0, 0}, {1, 1}},             // 1x1
    {{2, 3, 13, 10}, {1, 1}, {3, 2}, {0, 0}, {1, 1}},           // strided 1x1
    {{1, 2, 4, 4}, {4, 4}, {1, 1}, {0, 0}, {1, 1}},             // kernel == image: one position
    {{2, 2, 3, 4}, {2, 2}, {5, 7}, {3, 3}, {1, 1}},             // stride far above the kernel, padding > kernel
    {{1, 3, 17, 9}, {3, 2}, {1, 1}, {0, 4}, {7, 9}},            // dilation near the padded size
    {{2, 1, 5, 5}, {5, 5}, {1, 1}, {4, 4}, {1, 1}},             // padding = kernel - 1 (full convolution)
    {{0, 3, 6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1}},             // batch 0
    {{2, 3, 8, 7}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, 1, 1},       // output_padding >= stride: a position row and column missing
    {{1, 2, 11, 9}, {2, 3}, {3, 2}, {0, 1}, {2, 1}, 2, 0},
};

PlaneGeometry geometry(const Case& c) {
  PlaneGeometry g(c.input[1], c.input[2], c.input[3], c.kernel, c.stride, c.padding, c.dilation);
  g.out_h -= c.drop_h;
  g.out_w -= c.drop_w;
  return g;
}

// The window's full unfold (F.unfold), with the missing positions left out:
// (N, rows, out_h * out_w).
at::Tensor unfold_reference(const at::Tensor& x, const Case& c, const PlaneGeometry& g) {
  const at::Tensor full = at::im2col(x, c.kernel, c.dilation, c.padding, c.stride);
  const int64_t fh = g.out_h + c.drop_h, fw = g.out_w + c.drop_w;
  return full.view({x.size(0), g.rows(), fh, fw})
      .narrow(2, 0, g.out_h)
      .narrow(3, 0, g.out_w)
      .reshape({x.size(0), g.rows(), g.cols()});
}

// F.fold of columns, with zeros at the missing positions.
at::Tensor fold_reference(const at::Tensor& cols, const Case& c, const PlaneGeometry& g) {
  const int64_t n = cols.size(0), fh = g.out_h + c.drop_h, fw = g.out_w + c.drop_w;
  at::Tensor full = at::zeros({n, g.rows(), fh, fw}, cols.options());
  full.narrow(2, 0, g.out_h).narrow(3, 0, g.out_w).copy_(cols.view({n, g.rows(), g.out_h, g.out_w}));
  return at::col2im(full.view({n, g.rows(), fh * fw}), {g.height, g.width}, c.kernel, c.dilation, c.padding,
                    c.stride);
}

// The two whole-image column layouts the CUDA backend is given: the im2col /
// col2im ops' (N, rows, L), and conv2d's tiles of nb images side by side
// (rows, nb * L). Returns the layout and a (N, rows, L) view of `buffer`.
enum class Layout { kOp, kTile };

std::pair<ColumnLayout, at::Tensor> layout_of(Layout layout, const at::Tensor& buffer, int64_t n,
                                              const PlaneGeometry& g) {
  if (layout == Layout::kOp) {
    return {{g.rows() * g.cols(), g.cols(), 1}, buffer.view({n, g.rows(), g.cols()})};
  }
  return {{g.cols(), n * g.cols(), 1}, buffer.view({g.rows(), n, g.cols()}).permute({1, 0, 2})};
}

TEST(CudaIm2col, MatchesUnfoldAndTheCpuBackendOnTheHost) {
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    for (const auto& c : kCases) {
      const PlaneGeometry g = geometry(c);
      const at::Tensor x = at::randn(c.input, f64());
      const at::Tensor buffer = at::full({x.size(0) * g.rows() * g.cols()}, NAN, f64());
      const auto [cl, view] = layout_of(layout, buffer, x.size(0), g);
      myconv::cuda::launch_im2col(HostLauncher{}, x, g, buffer, cl);
      const at::Tensor expected = unfold_reference(x, c, g);
      EXPECT_TRUE(at::equal(view, expected)) << "case input " << x.sizes();
      if (c.drop_h == 0 && c.drop_w == 0) {  // the CPU backend, through the op
        EXPECT_TRUE(at::equal(view, myconv::im2col(x, c.kernel, c.dilation, c.padding, c.stride)));
      }
    }
  }
}

TEST(CudaCol2im, MatchesFoldAndTheCpuBackendOnTheHost) {
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    for (const auto& c : kCases) {
      const PlaneGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const at::Tensor buffer = at::randn({n * g.rows() * g.cols()}, f64());
      const auto [cl, view] = layout_of(layout, buffer, n, g);
      const at::Tensor images = at::full(c.input, NAN, f64());
      myconv::cuda::launch_col2im(HostLauncher{}, buffer, cl, g, images);
      EXPECT_CLOSE(images, fold_reference(view.contiguous(), c, g), 1e-15);
      if (c.drop_h == 0 && c.drop_w == 0 && n > 0) {  // the CPU backend, through the op: same order, same bits
        EXPECT_TRUE(at::equal(images, myconv::col2im(view.contiguous(), {g.height, g.width}, c.kernel, c.dilation,
                                                     c.padding, c.stride)));
      }
    }
  }
}

TEST(CudaCol2im, ReducedPrecisionSumsInFloat) {
  const Case c{{2, 3, 9, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1}};
  const PlaneGeometry g = geometry(c);
  for (const auto dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
    const at::Tensor cols = at::randn({2, g.rows(), g.cols()}, f64()).to(dtype);
    const at::Tensor images = at::empty(c.input, cols.options());
    myconv::cuda::launch_col2im(HostLauncher{}, cols, {g.rows() * g.cols(), g.cols(), 1}, g, images);
    // the CPU backend's sums: float, in (kh, kw) order, rounded once
    EXPECT_TRUE(at::equal(images, myconv::col2im(cols, {g.height, g.width}, c.kernel, c.dilation, c.padding,
                                                 c.stride))) << dtype;
    EXPECT_CLOSE(images, fold_reference(cols.to(at::kDouble), c, g), dtype == at::kFloat ? 1e-6 : 1e-2);
    const at::Tensor x = at::randn(c.input, f64()).to(dtype);
    const at::Tensor out = at::empty({2, g.rows(), g.cols()}, x.options());
    myconv::cuda::launch_im2col(HostLauncher{}, x, g, out, {g.rows() * g.cols(), g.cols(), 1});
    EXPECT_TRUE(at::equal(out, at::im2col(x, c.kernel, c.dilation, c.padding, c.stride))) << dtype;
  }
}

// ---- coverage ------------------------------------------------------------------

// im2col through an access that counts writes per column entry and records
// the image element each one copied (-1: a padding zero).
struct TraceIm2col {
  int32_t* writes;
  int64_t* source;
  void copy(int64_t column, int64_t image) const {
    ++writes[column];
    source[column] = image;
  }
  void zero(int64_t column) const {
    ++writes[column];
    source[column] = -1;
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
  const uint64_t* hash_of_column;
  Gathered* images;
  int32_t* stores;
  Gathered zero_sum() const { return {}; }
  void add(Gathered& sum, int64_t column) const {
    sum.hash += hash_of_column[column];
    ++sum.count;
  }
  void store(int64_t image, Gathered sum) const {
    images[image] = sum;
    ++stores[image];
  }
};

TEST(CudaKernels, Im2colWritesEachEntryOnceAndCol2imGathersExactlyTheTapsThatReadAnElement) {
  std::mt19937_64 rng(7);
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    for (const auto& c : kCases) {
      const PlaneGeometry g = geometry(c);
      const int64_t n = c.input[0];
      const Geom geom = myconv::cuda::make_geom(g, layout_of(layout, at::empty({n * g.rows() * g.cols()}), n, g).first);
      const int64_t entries = n * g.rows() * g.cols(), pixels = n * g.channels * g.height * g.width;

      std::vector<int32_t> writes(entries, 0);
      std::vector<int64_t> source(entries, -2);
      HostLauncher{}(myconv::cuda::im2col_elements(geom, n),
                     myconv::cuda::Im2colOp<TraceIm2col>{geom, {writes.data(), source.data()}});
      ASSERT_TRUE(std::all_of(writes.begin(), writes.end(), [](int32_t w) { return w == 1; }))
          << "an im2col column entry not written exactly once, input " << at::IntArrayRef(c.input);
      // each entry copied the element its tap reads (unfold of an image of element numbers)
      const at::Tensor numbers = at::arange(1, pixels + 1, f64()).view(c.input);
      const at::Tensor expected = unfold_reference(numbers, c, g);  // 0 in the padding
      const auto [cl, source_view] =
          layout_of(layout, at::from_blob(source.data(), {entries}, at::kLong).to(at::kDouble), n, g);
      EXPECT_TRUE(at::equal(source_view + 1, expected));

      // col2im gathers, for every element, exactly the entries whose tap read it
      std::vector<uint64_t> hash(entries);
      std::vector<Gathered> want(pixels);
      for (int64_t e = 0; e < entries; ++e) {
        hash[e] = rng();
        if (source[e] >= 0) {
          want[source[e]].hash += hash[e];
          ++want[source[e]].count;
        }
      }
      std::vector<Gathered> got(pixels);
      std::vector<int32_t> stores(pixels, 0);
      HostLauncher{}(myconv::cuda::col2im_elements(geom, n),
                     myconv::cuda::Col2imOp<TraceCol2im>{geom, {hash.data(), got.data(), stores.data()}});
      EXPECT_TRUE(std::all_of(stores.begin(), stores.end(), [](int32_t s) { return s == 1; }));
      EXPECT_TRUE(got == want) << "col2im gathered other entries than the taps that read, input "
                               << at::IntArrayRef(c.input);
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
  void zero(int64_t column) const { copies->push_back({column, -1}); }
  int64_t zero_sum() const { return 0; }
  void add(int64_t& sum, int64_t column) const {
    gathered->push_back(column);
    ++sum;
  }
  void store(int64_t image, int64_t) const { *stored = image; }
};

using i128 = __int128;

TEST(CudaKernels, IndexArithmeticPast2To31WithoutAllocating) {
  // images of 2 * 3 * 40000 * 30000 = 7.2e9 elements, columns of 6.5e10 entries
  const int64_t N = 2, C = 3, H = 40000, W = 30000;
  const PlaneGeometry g(C, H, W, {3, 3}, {1, 1}, {1, 1}, {1, 1});
  const int64_t L = g.cols(), R = g.rows();
  for (const Layout layout : {Layout::kOp, Layout::kTile}) {
    const ColumnLayout cl = layout == Layout::kOp ? ColumnLayout{R * L, L, 1} : ColumnLayout{L, N * L, 1};
    const Geom geom = myconv::cuda::make_geom(g, cl);
    const int64_t im2col_total = myconv::cuda::im2col_elements(geom, N);
    const int64_t col2im_total = myconv::cuda::col2im_elements(geom, N);
    ASSERT_EQ(static_cast<i128>(im2col_total), static_cast<i128>(N) * C * H * W);
    ASSERT_EQ(col2im_total, im2col_total);  // padding 1, stride 1: as many positions as pixels
    EXPECT_EQ(blocks_for(im2col_total), myconv::cuda::kMaxBlocks);
    const int64_t columns_numel = N * R * L;

    const std::vector<int64_t> samples = {0,
                                          (int64_t{1} << 31) - 1,
                                          int64_t{1} << 31,
                                          (int64_t{1} << 32) + 12345,
                                          C * H * W - 1,          // image 0's last element
                                          C * H * W + W + 1,      // image 1, row 1, column 1
                                          im2col_total - 1};
    for (const int64_t i : samples) {
      // the element's coordinates, and its expected reads / writes in 128-bit arithmetic
      const int64_t b = i / (C * H * W), c = i / (H * W) % C, y = i / W % H, x = i % W;
      std::vector<std::pair<int64_t, int64_t>> copies;
      RecordOffsets record{&copies, nullptr, nullptr};
      myconv::cuda::im2col_element(geom, i, record);
      ASSERT_EQ(copies.size(), 9u);
      for (int64_t kh = 0, t = 0; kh < 3; ++kh) {
        for (int64_t kw = 0; kw < 3; ++kw, ++t) {
          const i128 row = (static_cast<i128>(c) * 3 + kh) * 3 + kw;
          const i128 column = static_cast<i128>(b) * cl.batch_stride + row * cl.row_stride + static_cast<i128>(y) * W + x;
          const int64_t ih = y - 1 + kh, iw = x - 1 + kw;
          const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
          const i128 image = inside ? ((static_cast<i128>(b) * C + c) * H + ih) * W + iw : -1;
          EXPECT_EQ(static_cast<i128>(copies[t].first), column) << "element " << i << " tap " << t;
          EXPECT_EQ(static_cast<i128>(copies[t].second), image) << "element " << i << " tap " << t;
          EXPECT_LT(copies[t].first, columns_numel);
        }
      }
      // col2im of the same element (an image element here): the taps that read it, in (kh, kw) order
      std::vector<int64_t> gathered;
      int64_t stored = -1;
      RecordOffsets io{nullptr, &gathered, &stored};
      myconv::cuda::col2im_element(geom, i, io);
      EXPECT_EQ(stored, i);
      std::vector<int64_t> want;
      for (int64_t kh = 0; kh < 3; ++kh) {
        for (int64_t kw = 0; kw < 3; ++kw) {
          const int64_t oy = y + 1 - kh, ox = x + 1 - kw;  // the position whose tap (kh, kw) reads (y, x)
          if (oy >= 0 && oy < H && ox >= 0 && ox < W) {
            const i128 row = (static_cast<i128>(c) * 3 + kh) * 3 + kw;
            want.push_back(static_cast<int64_t>(static_cast<i128>(b) * cl.batch_stride + row * cl.row_stride +
                                                static_cast<i128>(oy) * W + ox));
          }
        }
      }
      EXPECT_EQ(gathered, want) << "element " << i;
    }
  }
}

} // namespace
