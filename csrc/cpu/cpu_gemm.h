// The CPU backend's GEMM (Backend::bmm): c[i] = a[i] @ b[i] (+ c[i]) on
// strided row-major views, through one of the engines LibTorch ships, chosen
// per GEMM in one place, choose_cpu_gemm_engine():
//  - oneDNN's matmul (at::native::mkldnn_matmul, the entry ATen's own
//    matmuls use for bfloat16 / float16): float32 GEMMs with enough work.
//    On conv shapes, one core, it runs 10-20 % faster than MKL's sgemm
//    (docs/benchmarks.md, "CPU GEMM engines").
//  - The BLAS's sgemm_ / dgemm_ (MKL in torch's x86 builds), called directly
//    on the views' pointers: small float32 GEMMs, where oneDNN's per-call cost
//    shows, and float64. The call at::mm would make, without its dispatch,
//    checks and temporary views (what a tiny convolution pays for).
//  - ATen (at::mm_out / addmm_): other dtypes, operands no BLAS reads as they
//    are, and the portable fallback where torch was built without oneDNN or
//    an external BLAS.
// The backend runs every GEMM single-threaded (inside a work item), and which
// engine a GEMM gets depends only on its dtype and shape: results never
// depend on the thread count. Engines may differ from each other in the last
// bits.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>

namespace myconv::detail {

enum class CpuGemmEngine { kAten, kBlas, kOneDnn };

// Which engine torch's build offers: oneDNN's matmul and a BLAS with sgemm_ /
// dgemm_ are found at load time (weak references), else ATen only.
bool cpu_has_gemm_engine(CpuGemmEngine engine);

// The engine for one (m x k) @ (k x n) GEMM of this dtype (or the one
// myconv::set_cpu_gemm_engine forces).
CpuGemmEngine choose_cpu_gemm_engine(at::ScalarType dtype, int64_t m, int64_t n, int64_t k);
const char* cpu_gemm_engine_name(CpuGemmEngine engine);

// c[i] = a[i] @ b[i] (+ c[i] when accumulate) for 3-D a (B, m, k), b (B, k, n),
// c (B, m, n) of one dtype, any strides (c's rows must not overlap), with the
// engine choose_cpu_gemm_engine() picks, or with `engine` (tests). An engine that
// cannot take the operands (dtype, strides, 32-bit sizes, missing from this
// torch) hands them to the next: oneDNN -> BLAS -> ATen.
void cpu_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate);
void cpu_bmm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, bool accumulate,
             CpuGemmEngine engine);

} // namespace myconv::detail
