// im2col / col2im against plain nested-loop references.
#include "helpers.h"

#include <tuple>
#include <vector>

namespace {

using myconv_test::f64;

struct Window {
  int64_t kh, kw, dh, dw, ph, pw, sh, sw;
};

int64_t blocks(int64_t size, int64_t k, int64_t d, int64_t p, int64_t s) {
  return (size + 2 * p - d * (k - 1) - 1) / s + 1;
}

// The textbook definition of the column matrix: entry (b, row = (ch, i, j),
// col = (y, x)) reads image pixel (b, ch, y*s - p + i*d, x*s - p + j*d) when it
// lies inside the image. Calls visit(b, ch, iy, ix, row, col) for each such entry.
template <class Visit>
void for_each_tap(int64_t n, int64_t c, int64_t h, int64_t wd, const Window& w, Visit visit) {
  const int64_t oh = blocks(h, w.kh, w.dh, w.ph, w.sh), ow = blocks(wd, w.kw, w.dw, w.pw, w.sw);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < w.kh; ++i)
        for (int64_t j = 0; j < w.kw; ++j)
          for (int64_t y = 0; y < oh; ++y)
            for (int64_t x = 0; x < ow; ++x) {
              const int64_t iy = y * w.sh - w.ph + i * w.dh, ix = x * w.sw - w.pw + j * w.dw;
              if (iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                visit(b, ch, iy, ix, (ch * w.kh + i) * w.kw + j, y * ow + x);
              }
            }
}

// (N, C, H, W) -> (N, C*kh*kw, oh*ow)
at::Tensor im2col_reference(const at::Tensor& image, const Window& w) {
  const int64_t n = image.size(0), c = image.size(1), h = image.size(2), wd = image.size(3);
  const int64_t l = blocks(h, w.kh, w.dh, w.ph, w.sh) * blocks(wd, w.kw, w.dw, w.pw, w.sw);
  at::Tensor out = at::zeros({n, c * w.kh * w.kw, l}, f64());
  auto in = image.accessor<double, 4>();
  auto o = out.accessor<double, 3>();
  for_each_tap(n, c, h, wd, w, [&](int64_t b, int64_t ch, int64_t iy, int64_t ix, int64_t row, int64_t col) {
    o[b][row][col] = in[b][ch][iy][ix];
  });
  return out;
}

// (N, C*kh*kw, L) -> (N, C, H, W), summing overlapping entries.
at::Tensor col2im_reference(const at::Tensor& cols, int64_t h, int64_t wd, const Window& w) {
  const int64_t n = cols.size(0), c = cols.size(1) / (w.kh * w.kw);
  at::Tensor out = at::zeros({n, c, h, wd}, f64());
  auto in = cols.accessor<double, 3>();
  auto o = out.accessor<double, 4>();
  for_each_tap(n, c, h, wd, w, [&](int64_t b, int64_t ch, int64_t iy, int64_t ix, int64_t row, int64_t col) {
    o[b][ch][iy][ix] += in[b][row][col];
  });
  return out;
}

// (N, C, H, W, window): odd, non-square shapes with every parameter exercised.
const std::vector<std::tuple<std::vector<int64_t>, Window>> kCases = {
    {{1, 1, 5, 7}, {3, 3, 1, 1, 1, 1, 1, 1}},
    {{2, 3, 7, 5}, {3, 2, 1, 1, 0, 0, 1, 1}},
    {{2, 2, 9, 11}, {3, 5, 2, 1, 1, 2, 2, 3}},
    {{3, 1, 6, 6}, {1, 1, 1, 1, 0, 0, 2, 2}},
    {{1, 4, 8, 3}, {2, 3, 3, 1, 3, 1, 1, 2}},
    {{2, 2, 4, 4}, {4, 4, 1, 1, 0, 0, 1, 1}},
    {{1, 3, 5, 9}, {5, 1, 1, 2, 2, 0, 3, 1}},
    {{0, 2, 5, 5}, {3, 3, 1, 1, 1, 1, 1, 1}},
};

std::vector<int64_t> v2(int64_t a, int64_t b) { return {a, b}; }

TEST(Im2col, MatchesNestedLoops) {
  for (const auto& [shape, w] : kCases) {
    const at::Tensor x = at::randn(shape, f64());
    const at::Tensor got = myconv::im2col(x, v2(w.kh, w.kw), v2(w.dh, w.dw), v2(w.ph, w.pw), v2(w.sh, w.sw));
    EXPECT_TRUE(at::equal(got, im2col_reference(x, w))) << "shape " << at::IntArrayRef(shape);
  }
}

TEST(Im2col, FloatAndUnbatched) {
  const Window w{3, 2, 2, 1, 1, 1, 2, 1};
  const at::Tensor x = at::randn({2, 3, 9, 6}, f64());
  const at::Tensor ref = im2col_reference(x, w);
  const at::Tensor got = myconv::im2col(x.to(at::kFloat), {3, 2}, {2, 1}, {1, 1}, {2, 1});
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(got.to(at::kDouble), im2col_reference(x.to(at::kFloat).to(at::kDouble), w)));
  const at::Tensor single = myconv::im2col(x[1], {3, 2}, {2, 1}, {1, 1}, {2, 1});
  EXPECT_TRUE(at::equal(single, ref[1]));
}

TEST(Col2im, MatchesNestedLoops) {
  for (const auto& [shape, w] : kCases) {
    const int64_t h = shape[2], wd = shape[3];
    const int64_t l = blocks(h, w.kh, w.dh, w.ph, w.sh) * blocks(wd, w.kw, w.dw, w.pw, w.sw);
    const at::Tensor cols = at::randn({shape[0], shape[1] * w.kh * w.kw, l}, f64());
    const at::Tensor got = myconv::col2im(cols, v2(h, wd), v2(w.kh, w.kw), v2(w.dh, w.dw), v2(w.ph, w.pw), v2(w.sh, w.sw));
    EXPECT_CLOSE(got, col2im_reference(cols, h, wd, w), 1e-14);
  }
}

TEST(Col2im, IsTheAdjointOfIm2col) {
  // <im2col(x), y> == <x, col2im(y)> for any x, y.
  const at::Tensor x = at::randn({2, 3, 8, 7}, f64());
  const at::Tensor cols = myconv::im2col(x, {3, 3}, {1, 2}, {1, 2}, {2, 1});
  const at::Tensor y = at::randn_like(cols);
  const at::Tensor back = myconv::col2im(y, {8, 7}, {3, 3}, {1, 2}, {1, 2}, {2, 1});
  EXPECT_NEAR((cols * y).sum().item<double>(), (x * back).sum().item<double>(), 1e-9);
}

TEST(Col2im, BitwiseDeterministic) {
  const at::Tensor cols = at::randn({4, 2 * 9, 64}, at::kFloat);
  const at::Tensor a = myconv::col2im(cols, {8, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1});
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(at::equal(a, myconv::col2im(cols, {8, 8}, {3, 3}, {1, 1}, {1, 1}, {1, 1})));
  }
}

TEST(Col2im, SeedExampleFoldOfOuterProduct) {
  // From the seed "Convolution and Matrix Multiplication": fold(k ⊗ conv(x, k))
  // equals conv_transpose2d(conv(x, k), k) on a 5x7 image, 3x3 kernel, padding 1.
  const at::Tensor data = at::arange(35, f64()).view({1, 1, 5, 7});
  const at::Tensor kernel = at::arange(1, 10, f64()).view({1, 1, 3, 3});
  const at::Tensor conv = myconv::conv2d(data, kernel, std::nullopt, {1, 1}, {1, 1});
  const at::Tensor outer = kernel.reshape({9, 1}).mm(conv.reshape({1, 35})).unsqueeze(0);
  const at::Tensor folded = myconv::col2im(outer, {5, 7}, {3, 3}, {1, 1}, {1, 1}, {1, 1});
  const at::Tensor expected = at::tensor(
      {2672., 5379., 6804., 7659., 8514., 8403., 6254., 8117., 15408., 18909., 20790., 22671.,
       21780., 15539., 14868., 27315., 32400., 34425., 36450., 34191., 23922., 20039., 35544.,
       41283., 43164., 45045., 41508., 28325., 18608., 32055., 36756., 38151., 39546., 35943.,
       23966.},
      f64());
  EXPECT_TRUE(at::equal(folded.flatten(), expected));
}

} // namespace
