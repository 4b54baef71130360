// The CUDA backend's plan choices as in effect: the defaults of cuda_tuning.h
// with the overrides of myconv::set_cuda_tuning, so that a session with a GPU
// can time each choice against its alternative in one process
// (scripts/gpu_check.sh). The CPU replay of the CUDA plan takes them too.
#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda_tuning.h"
#include "myconv/ops.h"

namespace myconv {
namespace detail {
namespace {

// The choices that may be overridden: every one a GPU session may want to
// time (not `workers`: the CUDA backend runs one; not `float_gemm_results`: a
// precision, not a speed, choice; not `grouped_channels_last_columns`: the
// groups' GEMM results would interleave, which no cuBLAS strided-batched call
// writes).
struct IntKnob {
  const char* name;
  int64_t Tuning::*field;
};
struct BoolKnob {
  const char* name;
  bool Tuning::*field;
};
constexpr IntKnob kIntKnobs[] = {
    {"chunk_bytes", &Tuning::chunk_bytes},
    {"chunk_min_positions", &Tuning::chunk_min_positions},
    {"column_row_bytes", &Tuning::column_row_bytes},
    {"image_gemm_min_positions", &Tuning::image_gemm_min_positions},
};
constexpr BoolKnob kBoolKnobs[] = {
    {"gemm_on_views", &Tuning::gemm_on_views},
    {"image_batched_views", &Tuning::image_batched_views},
    {"grad_weight_image_products", &Tuning::grad_weight_image_products},
    {"view_chunks", &Tuning::view_chunks},
    {"channels_last", &Tuning::channels_last},
    {"direct_grouped", &Tuning::direct_grouped},
};

// (a bound that keeps the plan's arithmetic on them far from overflow)
constexpr long long kMaxIntKnob = 1LL << 40;

struct Overrides {
  std::vector<std::pair<const IntKnob*, int64_t>> ints;
  std::vector<std::pair<const BoolKnob*, bool>> bools;
};

std::mutex& overrides_mutex() {
  static std::mutex m;
  return m;
}

Overrides& current_overrides() {
  static Overrides o;
  return o;
}

std::string known_keys() {
  std::string keys;
  for (const IntKnob& k : kIntKnobs) {
    keys += std::string(keys.empty() ? "" : ", ") + k.name;
  }
  for (const BoolKnob& k : kBoolKnobs) {
    keys += std::string(", ") + k.name;
  }
  return keys;
}

std::string trimmed(const std::string& s) {
  const auto first = s.find_first_not_of(" \t");
  return first == std::string::npos ? "" : s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

Overrides parse(const std::string& spec) {
  Overrides o;
  std::stringstream items(spec);
  std::string item;
  while (std::getline(items, item, ',')) {
    item = trimmed(item);
    if (item.empty()) {
      continue;
    }
    const auto eq = item.find('=');
    TORCH_CHECK(eq != std::string::npos, "myconv.set_cuda_tuning: expected items key=value separated by commas, ",
                "but got '", item, "' in '", spec, "'");
    const std::string key = trimmed(item.substr(0, eq)), value = trimmed(item.substr(eq + 1));
    bool found = false;
    for (const IntKnob& k : kIntKnobs) {
      if (key != k.name) {
        continue;
      }
      char* end = nullptr;
      errno = 0;
      const long long v = value.empty() ? -1 : std::strtoll(value.c_str(), &end, 10);
      TORCH_CHECK(!value.empty() && *end == '\0' && errno == 0 && v >= 0 && v <= kMaxIntKnob,
                  "myconv.set_cuda_tuning: ", key, " expects an integer from 0 to 2^40, but got '", value, "'");
      TORCH_CHECK(key != "column_row_bytes" || (v <= 4096 && (v & (v - 1)) == 0),
                  "myconv.set_cuda_tuning: column_row_bytes expects 0 or a power of two up to 4096, but got ", v);
      o.ints.emplace_back(&k, static_cast<int64_t>(v));
      found = true;
    }
    for (const BoolKnob& k : kBoolKnobs) {
      if (key != k.name) {
        continue;
      }
      const bool on = value == "1" || value == "true", off = value == "0" || value == "false";
      TORCH_CHECK(on || off, "myconv.set_cuda_tuning: ", key, " expects 0, 1, false or true, but got '", value,
                  "'");
      o.bools.emplace_back(&k, on);
      found = true;
    }
    TORCH_CHECK(found, "myconv.set_cuda_tuning: unknown key '", key, "' (known: ", known_keys(), ")");
  }
  return o;
}

Tuning with_overrides(Tuning t, const Overrides& o) {
  for (const auto& [knob, value] : o.ints) {
    t.*(knob->field) = value;
  }
  for (const auto& [knob, value] : o.bools) {
    t.*(knob->field) = value;
  }
  return t;
}

} // namespace

Tuning cuda_tuning_in_effect() {
  const std::lock_guard<std::mutex> lock(overrides_mutex());
  return with_overrides(cuda_backend_tuning(), current_overrides());
}

std::string describe_cuda_tuning(const Tuning& t) {
  std::ostringstream out;
  for (const IntKnob& k : kIntKnobs) {
    out << (out.tellp() > 0 ? "," : "") << k.name << "=" << t.*(k.field);
  }
  for (const BoolKnob& k : kBoolKnobs) {
    out << "," << k.name << "=" << (t.*(k.field) ? "true" : "false");
  }
  return out.str();
}

} // namespace detail

std::string cuda_tuning() {
  return detail::describe_cuda_tuning(detail::cuda_tuning_in_effect());
}

void set_cuda_tuning(const std::string& overrides) {
  detail::Overrides parsed = detail::parse(overrides);  // (a bad spec changes nothing)
  const std::lock_guard<std::mutex> lock(detail::overrides_mutex());
  detail::current_overrides() = std::move(parsed);
}

} // namespace myconv
