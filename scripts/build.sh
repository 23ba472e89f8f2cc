#!/usr/bin/env bash
# Configure and build (Release) into build/. Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" > /tmp/convnext-configure.log 2>&1 || { cat /tmp/convnext-configure.log; exit 1; }
cmake --build build -j"$(nproc)" 2>&1 | tail -n 3
