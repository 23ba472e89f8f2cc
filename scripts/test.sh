#!/usr/bin/env bash
# The test command: Debian packages -> configure -> build (Release) -> every test through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 900
