// MYCONV_VERBOSE: one line per convolution call, naming what ran (op,
// shapes, dtype, device, and each pass's plan: path, layout, engine, tiles,
// workers, workspace); level 2 adds the call's time. The level starts from
// the environment variable MYCONV_VERBOSE (0 when unset) and is set with
// myconv::set_verbose. Lines go to the sink Python's myconv package installs
// (the "myconv" logger), else to stderr. Off, a call pays one relaxed load.
#pragma once

#include <string>

namespace myconv::detail {

// The current level (0: off), one relaxed atomic load.
int verbose_level();

// Hands a finished line to the sink, or writes it to stderr.
void emit_verbose_line(int level, const std::string& line);

} // namespace myconv::detail

// The sink of verbose lines (null: stderr). For the Python package, which
// installs a ctypes callback that logs through the "myconv" logger; the
// callback must stay valid until it is replaced.
extern "C" void myconv_set_verbose_sink(void (*sink)(int level, const char* line));
