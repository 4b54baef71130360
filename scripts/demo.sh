#!/usr/bin/env bash
# Sets everything up from nothing, then runs the demo: seed examples, parity
# with F.conv2d, a gradient check, a CPU speed comparison and a short training.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
printf '\n== python -m myconv.demo\n'
.venv/bin/python -m myconv.demo "$@"
