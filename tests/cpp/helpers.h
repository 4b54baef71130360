// Shared helpers of the GoogleTest suite.
#pragma once

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include <myconv/myconv.h>

namespace myconv_test {

inline at::TensorOptions f64() { return at::TensorOptions().dtype(at::kDouble); }

// Relative max error of `actual` against `expected`: max|a - e| / max|e|.
inline double rel_error(const at::Tensor& actual, const at::Tensor& expected) {
  if (expected.numel() == 0) {
    return 0.0;
  }
  const double scale = std::max(expected.abs().max().item<double>(), 1e-30);
  return (actual.to(at::kDouble).cpu() - expected.to(at::kDouble).cpu()).abs().max().item<double>() /
         scale;
}

// Same sizes and rel_error(actual, expected) <= tol.
inline ::testing::AssertionResult close(const at::Tensor& actual, const at::Tensor& expected,
                                       double tol) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.sizes() << " vs " << expected.sizes();
  }
  const double err = rel_error(actual, expected);
  if (err > tol) {
    return ::testing::AssertionFailure() << "relative error " << err << " > " << tol;
  }
  return ::testing::AssertionSuccess();
}

#define EXPECT_CLOSE(actual, expected, tol) \
  EXPECT_TRUE(::myconv_test::close((actual), (expected), (tol)))

// `fn` throws c10::Error whose message contains `needle`.
inline void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(needle), std::string::npos)
        << "message was: " << e.what_without_backtrace();
    return;
  }
  ADD_FAILURE() << "expected a c10::Error containing '" << needle << "'";
}

} // namespace myconv_test
