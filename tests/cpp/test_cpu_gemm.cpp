// The CPU backend's GEMM engines (csrc/cpu/cpu_gemm.h): every engine on
// strided operand views (transposed, rows of a wider matrix, batches, size-1
// and empty dimensions, accumulate or overwrite) against ATen in float64, the
// hand-over to the next engine where one cannot take the operands, and the
// choice per shape and dtype.
#include <ATen/Context.h>

#include "helpers.h"

#include "cpu/cpu_gemm.h"

namespace {

using myconv::detail::choose_cpu_gemm_engine;
using myconv::detail::cpu_bmm;
using myconv::detail::cpu_has_gemm_engine;
using myconv::detail::CpuGemmEngine;

constexpr CpuGemmEngine kEngines[] = {CpuGemmEngine::kAten, CpuGemmEngine::kBlas, CpuGemmEngine::kOneDnn};

// A (batch, rows, cols) view of the given layout, filled with random values:
// "rows" row-major, "cols" column-major (a transposed matrix), "wide" the
// first cols of rows twice as wide, "strided" every other element of a row.
at::Tensor operand(const std::string& layout, int64_t batch, int64_t rows, int64_t cols, at::ScalarType dtype) {
  const auto opt = at::TensorOptions().dtype(dtype);
  if (layout == "rows") {
    return at::randn({batch, rows, cols}, opt);
  }
  if (layout == "cols") {
    return at::randn({batch, cols, rows}, opt).transpose(1, 2);
  }
  if (layout == "wide") {
    return at::randn({batch, rows, 2 * cols + 3}, opt).narrow(2, 1, cols);
  }
  return at::randn({batch, rows, 2 * cols}, opt).slice(2, 0, 2 * cols, 2);  // "strided"
}

double tolerance(at::ScalarType dtype, int64_t k) {
  const double eps = dtype == at::kDouble ? 1e-15 : dtype == at::kFloat ? 1e-6 : 1e-2;
  return eps * (10 + 2 * k);
}

TEST(CpuGemm, EveryEngineOnEveryOperandLayoutMatchesATen) {
  at::manual_seed(0);
  const std::vector<std::array<int64_t, 4>> shapes = {
      // batch, m, n, k
      {1, 7, 9, 5}, {3, 33, 17, 65}, {2, 64, 100, 72}, {1, 1, 13, 8}, {1, 12, 1, 8}, {2, 5, 6, 1}, {1, 4, 3, 0}};
  for (const CpuGemmEngine engine : kEngines) {
    for (const at::ScalarType dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
      for (const auto& [batch, m, n, k] : shapes) {
        for (const std::string la : {"rows", "cols", "wide", "strided"}) {
          for (const std::string lb : {"rows", "cols", "wide"}) {
            for (const bool accumulate : {false, true}) {
              const at::Tensor a = operand(la, batch, m, k, dtype), b = operand(lb, batch, k, n, dtype);
              const at::Tensor c = operand(lb == "wide" ? "wide" : "rows", batch, m, n, dtype);
              const at::Tensor before = c.clone();
              const at::Tensor expected =
                  at::bmm(a.to(at::kDouble), b.to(at::kDouble)) + (accumulate ? before.to(at::kDouble) : 0 * before.to(at::kDouble));
              cpu_bmm(a, b, c, accumulate, engine);
              SCOPED_TRACE(std::string(myconv::detail::cpu_gemm_engine_name(engine)) + " " +
                           c10::toString(dtype) + " a " + la + " b " + lb + " m" + std::to_string(m) + " n" +
                           std::to_string(n) + " k" + std::to_string(k) + (accumulate ? " accumulate" : ""));
              EXPECT_LE((c.to(at::kDouble) - expected).abs().max().item<double>(),
                        tolerance(dtype, k) * std::max(1.0, expected.abs().max().item<double>()));
            }
          }
        }
      }
    }
  }
}

TEST(CpuGemm, OverwritingIgnoresWhatTheResultHeld) {
  // beta = 0: NaN and Inf in the result before the call must not leak into it
  for (const CpuGemmEngine engine : kEngines) {
    const at::Tensor a = at::randn({1, 40, 50}), b = at::randn({1, 50, 60});
    const at::Tensor c = at::full({1, 40, 60}, std::numeric_limits<float>::quiet_NaN());
    c.select(1, 3).fill_(std::numeric_limits<float>::infinity());
    cpu_bmm(a, b, c, /*accumulate=*/false, engine);
    EXPECT_TRUE(at::isfinite(c).all().item<bool>()) << myconv::detail::cpu_gemm_engine_name(engine);
    EXPECT_CLOSE(c, at::bmm(a, b), 1e-5);
  }
}

TEST(CpuGemm, TheResultOutsideTheViewIsUntouched) {
  for (const CpuGemmEngine engine : kEngines) {
    const at::Tensor a = at::randn({2, 48, 40}), b = at::randn({2, 40, 56});
    const at::Tensor whole = at::randn({2, 48, 100}), before = whole.clone();
    cpu_bmm(a, b, whole.narrow(2, 20, 56), /*accumulate=*/true, engine);
    EXPECT_TRUE(at::equal(whole.narrow(2, 0, 20), before.narrow(2, 0, 20)));
    EXPECT_TRUE(at::equal(whole.narrow(2, 76, 24), before.narrow(2, 76, 24)));
    EXPECT_CLOSE(whole.narrow(2, 20, 56), before.narrow(2, 20, 56) + at::bmm(a, b), 1e-5);
  }
}

TEST(CpuGemm, EachEngineIsDeterministic) {
  const at::Tensor a = at::randn({2, 96, 300}), b = at::randn({2, 300, 200});
  for (const CpuGemmEngine engine : kEngines) {
    const at::Tensor c1 = at::empty({2, 96, 200}), c2 = at::empty({2, 96, 200});
    cpu_bmm(a, b, c1, false, engine);
    cpu_bmm(a, b, c2, false, engine);
    EXPECT_TRUE(at::equal(c1, c2)) << myconv::detail::cpu_gemm_engine_name(engine);
  }
}

TEST(CpuGemm, TheChoiceFollowsDtypeAndWork) {
  const bool onednn = cpu_has_gemm_engine(CpuGemmEngine::kOneDnn), blas = cpu_has_gemm_engine(CpuGemmEngine::kBlas);
  const CpuGemmEngine small = blas ? CpuGemmEngine::kBlas : CpuGemmEngine::kAten;
  // a resnet 3x3 layer's tile: float32 -> oneDNN where torch has it
  EXPECT_EQ(choose_cpu_gemm_engine(at::kFloat, 128, 227, 1152), onednn ? CpuGemmEngine::kOneDnn : small);
  // the seed layer's 16 x 72 weight, and a tiny call: the BLAS
  EXPECT_EQ(choose_cpu_gemm_engine(at::kFloat, 16, 900, 72), small);
  EXPECT_EQ(choose_cpu_gemm_engine(at::kFloat, 1, 16, 1), small);
  // float64: the BLAS whatever the size; bfloat16 / float16: ATen
  EXPECT_EQ(choose_cpu_gemm_engine(at::kDouble, 128, 227, 1152), small);
  EXPECT_EQ(choose_cpu_gemm_engine(at::kBFloat16, 128, 227, 1152), CpuGemmEngine::kAten);
  EXPECT_EQ(choose_cpu_gemm_engine(at::kHalf, 16, 16, 16), CpuGemmEngine::kAten);
  // forced
  myconv::set_cpu_gemm_engine("aten");
  EXPECT_EQ(myconv::cpu_gemm_engine(), "aten");
  EXPECT_EQ(choose_cpu_gemm_engine(at::kFloat, 128, 227, 1152), CpuGemmEngine::kAten);
  myconv::set_cpu_gemm_engine("onednn");  // float32 only: float64 goes down to the BLAS
  EXPECT_EQ(choose_cpu_gemm_engine(at::kFloat, 1, 16, 1), onednn ? CpuGemmEngine::kOneDnn : small);
  EXPECT_EQ(choose_cpu_gemm_engine(at::kDouble, 128, 227, 1152), small);
  EXPECT_EQ(choose_cpu_gemm_engine(at::kBFloat16, 128, 227, 1152), CpuGemmEngine::kAten);
  myconv::set_cpu_gemm_engine("auto");
  EXPECT_EQ(myconv::cpu_gemm_engine(), "auto");
  myconv_test::expect_error([] { myconv::set_cpu_gemm_engine("mkl"); },
                            "expected a CPU GEMM engine 'auto', 'onednn', 'blas' or 'aten', but got 'mkl'");
}

TEST(CpuGemm, OneDnnOnlyWhileTorchHasItComputeFloat32InFloat32) {
  if (!cpu_has_gemm_engine(CpuGemmEngine::kOneDnn)) {
    GTEST_SKIP() << "no oneDNN float32 matmul in this torch, on this CPU";
  }
  at::Context& ctx = at::globalContext();
  const at::Float32Precision saved = ctx.float32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
  ctx.setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, at::Float32Precision::BF16);
  const CpuGemmEngine rounded = choose_cpu_gemm_engine(at::kFloat, 128, 227, 1152);
  ctx.setFloat32Precision(at::Float32Backend::MKLDNN, at::Float32Op::MATMUL, saved);
  EXPECT_EQ(rounded, CpuGemmEngine::kBlas);
  EXPECT_EQ(choose_cpu_gemm_engine(at::kFloat, 128, 227, 1152), CpuGemmEngine::kOneDnn);
}

} // namespace
