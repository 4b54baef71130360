// The process-wide settings of myconv.h: the workspace limit, the CPU tile
// size, and the test switch that runs the CUDA backend's plan on the CPU.
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

#include "myconv/ops.h"
#include "workspace.h"

namespace myconv {
namespace {

constexpr int64_t kDefaultWorkspaceBytes = int64_t{256} << 20;

int64_t workspace_limit_from_env() {
  const char* env = std::getenv("MYCONV_WORKSPACE_MB");
  if (env == nullptr || *env == '\0') {
    return kDefaultWorkspaceBytes;
  }
  char* end = nullptr;
  const double mb = std::strtod(env, &end);
  if (end == env || *end != '\0' || !(mb > 0) || mb > 1e12) {
    TORCH_WARN("myconv: ignoring MYCONV_WORKSPACE_MB='", env,
               "' (expected a positive number of MiB); using the default of 256 MiB");
    return kDefaultWorkspaceBytes;
  }
  return static_cast<int64_t>(mb * (1 << 20));
}

std::atomic<int64_t>& workspace_limit() {
  static std::atomic<int64_t> limit{workspace_limit_from_env()};
  return limit;
}

std::atomic<int64_t>& tile_bytes_value() {
  static std::atomic<int64_t> bytes{0};
  return bytes;
}

std::atomic<bool>& whole_image_plan_value() {
  static std::atomic<bool> on{false};
  return on;
}

} // namespace

int64_t workspace_limit_bytes() {
  return workspace_limit().load(std::memory_order_relaxed);
}

void set_workspace_limit_bytes(int64_t bytes) {
  TORCH_CHECK(bytes > 0, "myconv: expected a positive workspace limit, but got ", bytes, " bytes");
  workspace_limit().store(bytes, std::memory_order_relaxed);
}

int64_t tile_bytes() {
  return tile_bytes_value().load(std::memory_order_relaxed);
}

void set_tile_bytes(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "myconv: expected a non-negative tile size (0: from the cache size), but got ",
              bytes, " bytes");
  tile_bytes_value().store(bytes, std::memory_order_relaxed);
}

bool cpu_whole_image_plan() {
  return whole_image_plan_value().load(std::memory_order_relaxed);
}

void set_cpu_whole_image_plan(bool on) {
  whole_image_plan_value().store(on, std::memory_order_relaxed);
}

int64_t last_workspace_peak_bytes() {
  return detail::workspace_stats().peak;
}

} // namespace myconv
