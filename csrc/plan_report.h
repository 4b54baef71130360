// Plans shown to users: one line per pass (MYCONV_VERBOSE, and the printed
// form of myconv.explain()) and JSON (myconv.explain()'s dict). Presentation
// only: the plans themselves are made in pass_plan.cpp.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

#include "conv_plan.h"
#include "pass_plan.h"

namespace myconv::detail {

// "1.5 MiB", "12 KiB", "312 B".
std::string format_bytes(int64_t bytes);

// One line: "forward path=columns layout=channels_first engine=onednn
// gemm=1x64x3136x576 tiles=8(1image*3136pos) items=8 workers=2 workspace=4.1MiB".
std::string plan_summary(const PassPlan& plan);

// The plan as a JSON object (its problem included), for myconv.explain():
// `computes` names what the pass gives the call ("output", "grad_input",
// "grad_weight").
std::string plan_json(const PassPlan& plan, const ConvProblem& p, const char* computes);

// torch's name of a dtype: "float32", "bfloat16", ...
std::string dtype_name(at::ScalarType dtype);

// "(8, 64, 56, 56)".
std::string format_sizes(at::IntArrayRef sizes);

// "[8, 64, 56, 56]", a JSON array.
std::string json_ints(at::IntArrayRef values);

} // namespace myconv::detail
