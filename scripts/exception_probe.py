"""Does an exception thrown by a C++ op reach Python as a RuntimeError, or does
the process die? (On the lent GPU machine's image, 2026-11-26, any exception
thrown out of a torch extension built there killed the process with SIGSEGV
inside std::ostream::_M_insert<long> while TORCH_CHECK formatted its message;
see docs/gpu.md.)

    python scripts/exception_probe.py            # myconv only (needs it installed)
    python scripts/exception_probe.py --inline   # also a five-line load_inline extension

Each probe runs in a subprocess, so a crash is reported, not suffered. The
first output line is the verdict; the rest are facts that help find the cause
(compiler, C++ ABI flag, which libstdc++ the process maps, the probe's stderr).
Exit status 0 when every probe raised cleanly, 1 otherwise.
"""
import argparse
import os
import signal
import subprocess
import sys
import textwrap

MYCONV_PROBE = """
import torch, myconv
try:
    myconv.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 1, 3, 3))  # 2 channels vs weight for 1
except RuntimeError as e:
    print("RuntimeError:", str(e).splitlines()[0][:160])
maps = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libstdc++' in l or 'libgcc_s' in l})
print("mapped:", " ".join(maps))
"""

INLINE_PROBE = """
import torch
from torch.utils.cpp_extension import load_inline
src = '''
#include <torch/library.h>
at::Tensor probe(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 99, "probe: expected 99 dims, got ", x.dim(), " (int64 ", int64_t{x.numel()}, ")");
  return x;
}
TORCH_LIBRARY(exception_probe, m) { m.def("probe(Tensor x) -> Tensor", &probe); }
'''
load_inline("exception_probe", src, is_python_module=False, verbose=False)
try:
    torch.ops.exception_probe.probe(torch.zeros(2))
except RuntimeError as e:
    print("RuntimeError:", str(e).splitlines()[0][:160])
"""


def run(code: str, timeout: int):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


def facts() -> list:
    lines = []
    try:
        import torch

        lines.append(f"torch {torch.__version__}, compiled with CXX11 ABI: {torch.compiled_with_cxx11_abi()}")
    except Exception as e:  # noqa: BLE001  (facts only)
        lines.append(f"torch not importable: {e}")
    for cmd in (["c++", "--version"], ["g++", "--version"]):
        try:
            lines.append(" ".join(cmd) + ": " + subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0])
        except (OSError, IndexError):
            pass
    lines.append(f"python {sys.version.split()[0]}, LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inline", action="store_true", help="also probe a minimal load_inline extension")
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args(argv)
    probes = [("myconv", MYCONV_PROBE)] + ([("load_inline", INLINE_PROBE)] if args.inline else [])
    verdicts, details = [], []
    ok = True
    for name, code in probes:
        try:
            rc, out, err = run(code, args.timeout)
        except subprocess.TimeoutExpired:
            rc, out, err = None, "", "timed out"
        raised = rc == 0 and "RuntimeError:" in out
        ok &= raised
        verdicts.append(f"{name}: " + ("RuntimeError raised (ok)" if raised else f"NO RuntimeError ({describe(rc) if rc is not None else 'timeout'})"))
        details += [f"-- {name}: stdout", out.strip(), f"-- {name}: stderr (last lines)",
                    "\n".join(err.strip().splitlines()[-15:])]
    print("exception probe: " + "; ".join(verdicts))
    print("\n".join(facts() + details))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
