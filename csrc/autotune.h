// Opt-in autotuning of the work plan (myconv::set_autotune, off by default):
// the first call of a new problem times each candidate tile size of the
// backend's cache tiling on the real pass and keeps the fastest, cached per
// (pass, problem sizes and window, dtype, layout, threads, CPU GEMM engine
// setting). Later calls of that problem, from any thread, take the cached
// plan. A plan's results are deterministic, like the default plan's; but the
// plan is chosen by a clock, so a tuned plan may differ from the default one,
// and from the plan another process or another thread count picked, in the
// last bits (other tiles, other GEMM shapes). Backends without cache tiling
// (Tuning::tile_bytes == 0: CUDA) are never tuned.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/FunctionRef.h>

#include <cstdint>
#include <vector>

#include "backend.h"
#include "conv_plan.h"
#include "pass_plan.h"

namespace myconv::detail {

// Whether autotuning applies to this pass's plan: on, a backend with cache
// tiling, no tile size set by the user, a column path.
bool autotune_applies(const Tuning& t, const ConvProblem& p);

// t, or, with autotuning on, t with the problem's tuned tile size: looked up,
// or found now by calling run(candidate) twice for every candidate (the
// second call timed). The caller then runs its pass with the returned tuning
// (run's results are scratch).
Tuning autotuned(const Tuning& t, Pass pass, const ConvProblem& p, at::ScalarType dtype,
                 c10::function_ref<void(const Tuning&)> run);

// The plan a call runs: plan_pass() with the tuning autotuned() gives (run
// executes a candidate plan while tuning). Its engine is named only when the
// plan is shown (name_engine): each GEMM's engine is the backend's choice as
// it runs, and naming it costs a call.
template <typename RunPlan>
PassPlan tuned_plan(const Backend& backend, Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t,
                    const PlanSettings& s, const RunPlan& run) {
  const bool tuning = autotune_applies(t, p);
  const Tuning chosen = tuning ? autotuned(t, pass, p, dtype,
                                           [&](const Tuning& candidate) { run(plan_pass(pass, p, dtype, candidate, s)); })
                               : t;
  PassPlan plan = plan_pass(pass, p, dtype, chosen, s);
  plan.autotune = tuning ? "tuned" : "off";
  return plan;
}

// The plan the next call of this problem would run, without running it: the
// cached tuning if the problem was tuned, else the default one, its autotune
// state "pending" when the next call will tune it; its engine named.
PassPlan next_plan(const Backend& backend, Pass pass, const ConvProblem& p, at::ScalarType dtype, const Tuning& t,
                   const PlanSettings& s);

// The tile sizes autotuning tries for a backend's default tile size.
std::vector<int64_t> autotune_candidates(int64_t default_tile_bytes);

// For tests: the number of tuned problems, and forgetting them.
int64_t autotune_cache_size();
void clear_autotune_cache();

} // namespace myconv::detail
