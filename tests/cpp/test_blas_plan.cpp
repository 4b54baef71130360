// The CUDA backend's host-side GEMM decisions (csrc/blas_plan.h), without a
// GPU: which cuBLAS operation and leading dimension read each operand, when a
// copy is needed, the compute type, and the plan replayed on the CPU exactly
// as cuBLAS reads it.
#include "helpers.h"

#include <ATen/Context.h>

#include "blas_plan.h"

namespace {

using myconv::detail::blas_operand;
using myconv::detail::BlasOperand;
using myconv::detail::GemmCompute;

void expect_operand(std::optional<BlasOperand> op, bool transposed, int64_t ld) {
  ASSERT_TRUE(op.has_value());
  EXPECT_EQ(op->transposed, transposed);
  EXPECT_EQ(op->ld, ld);
}

TEST(BlasOperand, OrdinaryViews) {
  // a contiguous (rows x cols) matrix: op N, ld = cols
  expect_operand(blas_operand(4, 7, 7, 1), false, 7);
  // its transpose view (a weight matrix read as W^T): op T, ld = the original row stride
  expect_operand(blas_operand(7, 4, 1, 7), true, 7);
  // a narrowed block of columns (a channel block's weights, a tile of an output row): rows further apart
  expect_operand(blas_operand(4, 3, 7, 1), false, 7);
  // column tiles of several images side by side: (K, P) with P = nb * L
  expect_operand(blas_operand(27, 96, 96, 1), false, 96);
  // channels-last output rows: (P, M) rows of C channels
  expect_operand(blas_operand(10, 4, 12, 1), false, 12);
  // a transposed channels-last view: (M, P), rows C apart
  expect_operand(blas_operand(4, 10, 1, 12), true, 12);
}

TEST(BlasOperand, SizeOneDimensionsTakeAnyStride) {
  // the grad_output of y.sum() for a (1, 1, 1, 1) output: an expanded scalar, strides all 0
  expect_operand(blas_operand(1, 1, 0, 0), false, 1);
  // one row with a stale row stride (a view of a channels_last tensor)
  expect_operand(blas_operand(1, 5, 0, 1), false, 5);
  expect_operand(blas_operand(1, 5, 123, 1), false, 5);
  // one column with any column stride: still op N, rows ld apart
  expect_operand(blas_operand(6, 1, 3, 0), false, 3);
  expect_operand(blas_operand(6, 1, 1, 0), false, 1);
  // groups == C_out, 1x1 output, channels_last grad_output: (M = 1, L = 1) per group, strides (C, C)
  expect_operand(blas_operand(1, 1, 64, 64), false, 1);
  // one row whose columns are strided: op T reads it, ld = the column stride
  expect_operand(blas_operand(1, 5, 9, 3), true, 3);
  // one column whose rows are strided
  expect_operand(blas_operand(5, 1, 3, 9), false, 3);
  // nothing to read
  expect_operand(blas_operand(0, 0, 0, 0), false, 1);
  expect_operand(blas_operand(1, 0, 0, 0), false, 1);
}

TEST(BlasOperand, UnreadableViews) {
  // both strides above 1 (a strided view in both directions)
  EXPECT_FALSE(blas_operand(3, 4, 12, 2).has_value());
  // a zero stride along a dimension longer than 1 (expanded rows or columns)
  EXPECT_FALSE(blas_operand(3, 4, 0, 1).has_value());
  EXPECT_FALSE(blas_operand(3, 4, 1, 0).has_value());
  // overlapping rows (row stride below the row length)
  EXPECT_FALSE(blas_operand(3, 4, 2, 1).has_value());
  EXPECT_FALSE(blas_operand(4, 3, 1, 2).has_value());
}

// Replays c = a @ b (+ c) through the plan on the CPU and compares with at::bmm.
void expect_plan_matches_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c_init,
                             bool accumulate, bool expect_copy_a, bool expect_copy_b) {
  const at::Tensor c = c_init.clone();
  const auto plan = myconv::detail::plan_column_major_gemm(a, b, c, accumulate);
  EXPECT_EQ(plan.second_copy.defined(), expect_copy_a) << "a: " << a.sizes() << " strides " << a.strides();
  EXPECT_EQ(plan.first_copy.defined(), expect_copy_b) << "b: " << b.sizes() << " strides " << b.strides();
  myconv::detail::run_column_major_gemm_on_cpu(plan);
  const at::Tensor expected = accumulate ? c_init + at::bmm(a, b) : at::bmm(a, b);
  EXPECT_CLOSE(c, expected, 1e-12);
}

TEST(ColumnMajorGemm, ReadsEveryViewTheCompositionPasses) {
  const auto o = myconv_test::f64();
  const at::Tensor w = at::randn({3, 5, 12}, o);       // (G, M, K) weights
  const at::Tensor cols = at::randn({3, 12, 20}, o);   // (G, K, P) columns
  const at::Tensor out = at::zeros({3, 5, 20}, o);
  // forward NCHW: W @ cols
  expect_plan_matches_bmm(w, cols, out, false, false, false);
  // with a bias already in the result
  expect_plan_matches_bmm(w, cols, at::randn({3, 5, 20}, o), true, false, false);
  // grad_input: W^T @ gy
  const at::Tensor gy = at::randn({3, 5, 20}, o);
  expect_plan_matches_bmm(w.transpose(1, 2), gy, at::zeros({3, 12, 20}, o), false, false, false);
  // grad_weight: gy @ cols^T, accumulated
  expect_plan_matches_bmm(gy, cols.transpose(1, 2), at::randn({3, 5, 12}, o), true, false, false);
  // a block of output channels and a block of column rows
  expect_plan_matches_bmm(w.narrow(1, 1, 3).narrow(2, 4, 6), cols.narrow(1, 4, 6), at::zeros({3, 3, 20}, o),
                          false, false, false);
}

TEST(ColumnMajorGemm, ExpandedAndSizeOneOperandsNeedNoCopy) {
  const auto o = myconv_test::f64();
  // C_out = 1 and a 1x1 output, y.sum().backward(): grad_output (1, 1, 1) with strides (0, 0, 0)
  const at::Tensor gy = at::ones({1}, o).as_strided({1, 1, 1}, {0, 0, 0});
  const at::Tensor w = at::randn({1, 1, 9}, o);
  // grad_input columns: W^T (9 x 1) @ gy (1 x 1)
  expect_plan_matches_bmm(w.transpose(1, 2), gy, at::zeros({1, 9, 1}, o), false, false, false);
  // grad_weight: gy (1 x 1) @ cols^T (1 x 9)
  const at::Tensor cols = at::randn({1, 9, 1}, o);
  expect_plan_matches_bmm(gy, cols.transpose(1, 2), at::zeros({1, 1, 9}, o), false, false, false);
  // groups == C_out, 1x1 output, channels_last grad_output: per group a (1 x 1) matrix, strides (C, C)
  const int64_t C = 6;
  const at::Tensor gy_cl = at::randn({1, C, 1, 1}, o).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor gyg = gy_cl.select(0, 0).view({C, 1, 1});
  expect_plan_matches_bmm(at::randn({C, 9, 1}, o), gyg, at::zeros({C, 9, 1}, o), false, false, false);
  // an expanded batch of one weight matrix (batch stride 0)
  const at::Tensor shared = at::randn({1, 4, 9}, o).expand({3, 4, 9});
  expect_plan_matches_bmm(shared, at::randn({3, 9, 5}, o), at::zeros({3, 4, 5}, o), false, false, false);
}

TEST(ColumnMajorGemm, CopiesWhatNoOperationReads) {
  const auto o = myconv_test::f64();
  // strided in both directions
  const at::Tensor a = at::randn({2, 8, 10}, o).slice(1, 0, 8, 2).slice(2, 0, 10, 2);  // (2, 4, 5)
  expect_plan_matches_bmm(a, at::randn({2, 5, 3}, o), at::zeros({2, 4, 3}, o), false, true, false);
  // expanded columns along a dimension longer than 1
  const at::Tensor b = at::randn({2, 5, 1}, o).expand({2, 5, 3});
  expect_plan_matches_bmm(at::randn({2, 4, 5}, o), b, at::zeros({2, 4, 3}, o), false, false, true);
}

TEST(ColumnMajorGemm, ResultsMustBeWrittenRowByRow) {
  const auto o = myconv_test::f64();
  const at::Tensor c = at::zeros({2, 5, 4}, o).transpose(1, 2);  // (2, 4, 5) column by column
  EXPECT_THROW(myconv::detail::plan_column_major_gemm(at::randn({2, 4, 3}, o), at::randn({2, 3, 5}, o), c, false),
               c10::Error);
}

TEST(ColumnMajorGemm, ReducedPrecisionAccumulatesInFloat) {
  for (const auto dtype : {at::kHalf, at::kBFloat16, at::kFloat}) {
    const auto o = at::TensorOptions().dtype(dtype);
    const at::Tensor a = at::randn({2, 6, 40}, o), b = at::randn({2, 40, 7}, o);
    at::Tensor c = at::zeros({2, 6, 7}, o);
    myconv::detail::run_column_major_gemm_on_cpu(myconv::detail::plan_column_major_gemm(a, b, c, false));
    const at::Tensor ref = at::bmm(a.to(at::kDouble), b.to(at::kDouble));
    EXPECT_CLOSE(c, ref, dtype == at::kFloat ? 1e-6 : 1e-2);
  }
}

TEST(ColumnMajorGemm, ReducedPrecisionOperandsMayWriteFloat32Results) {
  // grad_weight on the CUDA plan: float16 / bfloat16 operands, the float32 sum accumulated across
  // chunks, never rounded to the operands' dtype (a result of 1 + tiny products keeps them)
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    const auto o = at::TensorOptions().dtype(dtype);
    const at::Tensor a = at::randn({2, 6, 40}, o), b = at::randn({2, 40, 7}, o);
    const at::Tensor start = at::full({2, 6, 7}, 1024.0, at::kFloat);
    at::Tensor c = start.clone();
    const auto plan = myconv::detail::plan_column_major_gemm(a, b, c, /*accumulate=*/true);
    EXPECT_EQ(plan.dtype, dtype);
    EXPECT_EQ(plan.result_dtype, at::kFloat);
    myconv::detail::run_column_major_gemm_on_cpu(plan);
    const at::Tensor ref = start.to(at::kDouble) + at::bmm(a.to(at::kDouble), b.to(at::kDouble));
    // float32 near 1024 resolves 1e-4; float16 / bfloat16 would resolve 1 / 8
    EXPECT_LT((c.to(at::kDouble) - ref).abs().max().item<double>(), 1e-2);
  }
  // float32 results only for float16 / bfloat16 operands
  const auto f64 = myconv_test::f64();
  EXPECT_THROW(myconv::detail::plan_column_major_gemm(at::randn({1, 2, 3}, f64), at::randn({1, 3, 4}, f64),
                                                      at::zeros({1, 2, 4}, at::kFloat), false),
               c10::Error);
}

TEST(GemmCompute, FromDtypeAndTF32) {
  using myconv::detail::gemm_compute;
  EXPECT_EQ(gemm_compute(at::kDouble, true), GemmCompute::kFloat64);
  EXPECT_EQ(gemm_compute(at::kFloat, false), GemmCompute::kFloat32);
  EXPECT_EQ(gemm_compute(at::kFloat, true), GemmCompute::kFloat32FastTF32);
  EXPECT_EQ(gemm_compute(at::kHalf, true), GemmCompute::kFloat32);
  EXPECT_EQ(gemm_compute(at::kBFloat16, true), GemmCompute::kFloat32);
  EXPECT_THROW(gemm_compute(at::kInt, false), c10::Error);
}

// TF32 through each C++ setter PyTorch has; the getter never throws.
TEST(GemmCompute, FollowsPyTorchsMatmulPrecisionWhicheverApiSetIt) {
  auto& ctx = at::globalContext();
  using myconv::detail::cuda_matmul_allows_tf32;
  const auto restore = [&] {
    ctx.setFloat32Precision(at::Float32Backend::GENERIC, at::Float32Op::ALL, at::Float32Precision::NONE);
    ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::ALL, at::Float32Precision::NONE);
    ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, at::Float32Precision::NONE);
  };
  restore();
  EXPECT_FALSE(cuda_matmul_allows_tf32());
  // current API, on CUDA matmuls
  ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, at::Float32Precision::TF32);
  EXPECT_TRUE(cuda_matmul_allows_tf32());
  ctx.setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, at::Float32Precision::IEEE);
  EXPECT_FALSE(cuda_matmul_allows_tf32());
  restore();
  // current API, on every backend (torch.backends.fp32_precision)
  ctx.setFloat32Precision(at::Float32Backend::GENERIC, at::Float32Op::ALL, at::Float32Precision::TF32);
  EXPECT_TRUE(cuda_matmul_allows_tf32());
  restore();
  // legacy flag (torch.backends.cuda.matmul.allow_tf32)
  ctx.setAllowTF32CuBLAS(true);
  EXPECT_TRUE(cuda_matmul_allows_tf32());
  ctx.setAllowTF32CuBLAS(false);
  EXPECT_FALSE(cuda_matmul_allows_tf32());
  // torch.set_float32_matmul_precision
  ctx.setFloat32MatmulPrecision("high");
  EXPECT_TRUE(cuda_matmul_allows_tf32());
  ctx.setFloat32MatmulPrecision("highest");
  EXPECT_FALSE(cuda_matmul_allows_tf32());
  restore();
}

} // namespace
