#include "verbose.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "myconv/ops.h"

namespace myconv {
namespace {

int level_from_env() {
  const char* env = std::getenv("MYCONV_VERBOSE");
  if (env == nullptr || *env == '\0') {
    return 0;
  }
  char* end = nullptr;
  const long level = std::strtol(env, &end, 10);
  if (end == env || *end != '\0' || level < 0 || level > 2) {
    TORCH_WARN("myconv: ignoring MYCONV_VERBOSE='", env, "' (expected 0, 1 or 2)");
    return 0;
  }
  return static_cast<int>(level);
}

std::atomic<int>& level_value() {
  static std::atomic<int> level{level_from_env()};
  return level;
}

using Sink = void (*)(int, const char*);
std::atomic<Sink>& sink_value() {
  static std::atomic<Sink> sink{nullptr};
  return sink;
}

} // namespace

int verbose() {
  return level_value().load(std::memory_order_relaxed);
}

void set_verbose(int64_t level) {
  TORCH_CHECK(level >= 0 && level <= 2, "myconv: expected a verbose level of 0 (off), 1 (one line per call) or 2 "
              "(with the call's time), but got ", level);
  level_value().store(static_cast<int>(level), std::memory_order_relaxed);
}

namespace detail {

int verbose_level() {
  return level_value().load(std::memory_order_relaxed);
}

void emit_verbose_line(int level, const std::string& line) {
  if (const Sink sink = sink_value().load()) {
    sink(level, line.c_str());
    return;
  }
  static std::mutex mutex;  // whole lines, from any thread
  const std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

} // namespace detail
} // namespace myconv

extern "C" __attribute__((visibility("default"))) void myconv_set_verbose_sink(void (*sink)(int, const char*)) {
  myconv::sink_value().store(sink);
}
