#include "autotune.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <chrono>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>

#include "myconv/ops.h"

namespace myconv {
namespace {

std::atomic<bool>& autotune_value() {
  static std::atomic<bool> on{false};
  return on;
}

} // namespace

bool autotune() {
  return autotune_value().load(std::memory_order_relaxed);
}

void set_autotune(bool on) {
  autotune_value().store(on, std::memory_order_relaxed);
}

} // namespace myconv

namespace myconv::detail {
namespace {

struct Cache {
  std::mutex mutex;
  std::unordered_map<std::string, int64_t> tile_bytes;  // key -> the winner
};

Cache& cache() {
  static Cache c;
  return c;
}

// Everything the plan of a pass depends on, and what the timings depend on
// (the thread count, the CPU GEMM engine setting).
std::string key_of(Pass pass, const ConvProblem& p, at::ScalarType dtype, int64_t default_tile_bytes) {
  const ConvGeometry& g = p.geom;
  std::string key;
  for (const int64_t v :
       {static_cast<int64_t>(pass), static_cast<int64_t>(dtype), static_cast<int64_t>(p.layout), p.batch,
        p.out_channels, p.groups, g.channels, g.depth, g.height, g.width, g.kernel_d, g.kernel_h, g.kernel_w,
        g.stride_d, g.stride_h, g.stride_w, g.pad_d, g.pad_h, g.pad_w, g.dilation_d, g.dilation_h, g.dilation_w,
        g.out_d, g.out_h, g.out_w, default_tile_bytes, static_cast<int64_t>(at::get_num_threads()),
        workspace_limit_bytes()}) {
    key += std::to_string(v);
    key += ',';
  }
  key += cpu_gemm_engine();  // a forced CPU GEMM engine times differently
  return key;
}

} // namespace

std::vector<int64_t> autotune_candidates(int64_t default_tile_bytes) {
  // a quarter, half, once and twice the default (on CPUs: half, once, twice
  // and four times the L2 of a core)
  return {default_tile_bytes / 4, default_tile_bytes / 2, default_tile_bytes, 2 * default_tile_bytes};
}

bool autotune_applies(const Tuning& t, const ConvProblem& p) {
  // (a tile size set by myconv::set_tile_bytes is the user's choice: kept)
  return autotune() && t.tile_bytes > 0 && tile_bytes() <= 0 && !use_direct_grouped(t, p);
}

PassPlan next_plan(const Backend& backend, Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t,
                   const PlanSettings& s) {
  Tuning chosen = t;
  const char* state = "off";
  if (autotune_applies(t, p)) {
    const std::string key = key_of(pass, p, dtype, t.tile_bytes);
    const std::lock_guard<std::mutex> lock(cache().mutex);
    const auto it = cache().tile_bytes.find(key);
    state = it != cache().tile_bytes.end() ? "tuned" : "pending";
    if (it != cache().tile_bytes.end()) {
      chosen.tile_bytes = it->second;
    }
  }
  PassPlan plan = plan_pass(pass, p, dtype, chosen, s);
  name_engine(backend, plan);
  plan.autotune = state;
  return plan;
}

Tuning autotuned(const Tuning& t, Pass pass, const ConvProblem& p, at::ScalarType dtype,
                 c10::function_ref<void(const Tuning&)> run) {
  if (!autotune_applies(t, p)) {
    return t;
  }
  const std::string key = key_of(pass, p, dtype, t.tile_bytes);
  {
    const std::lock_guard<std::mutex> lock(cache().mutex);
    const auto it = cache().tile_bytes.find(key);
    if (it != cache().tile_bytes.end()) {
      Tuning tuned = t;
      tuned.tile_bytes = it->second;
      return tuned;
    }
  }
  int64_t best = t.tile_bytes;
  double best_seconds = std::numeric_limits<double>::infinity();
  for (const int64_t candidate : autotune_candidates(t.tile_bytes)) {
    if (candidate <= 0) {
      continue;
    }
    Tuning c = t;
    c.tile_bytes = candidate;
    run(c);  // warm: buffers, the GEMM library's kernels for these shapes
    const auto start = std::chrono::steady_clock::now();
    run(c);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (seconds < best_seconds) {
      best_seconds = seconds;
      best = candidate;
    }
  }
  {
    // another thread may have tuned the same problem meanwhile, and timed
    // another winner: every call takes the one plan the cache keeps
    const std::lock_guard<std::mutex> lock(cache().mutex);
    best = cache().tile_bytes.emplace(key, best).first->second;
  }
  Tuning tuned = t;
  tuned.tile_bytes = best;
  return tuned;
}

int64_t autotune_cache_size() {
  const std::lock_guard<std::mutex> lock(cache().mutex);
  return static_cast<int64_t>(cache().tile_bytes.size());
}

void clear_autotune_cache() {
  const std::lock_guard<std::mutex> lock(cache().mutex);
  cache().tile_bytes.clear();
}

} // namespace myconv::detail
