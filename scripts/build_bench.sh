#!/usr/bin/env bash
# Builds the Google Benchmark programs of bench/ against the library of an existing build directory
# (default build/, or $BUILD_DIR), into $BUILD_DIR/bin:
#   scripts/build.sh && scripts/build_bench.sh && build/bin/bench_gemm --benchmark_filter=stage0
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${BUILD_DIR:-build}
[ -f "$DIR/libconvnext.a" ] || { echo "build_bench: no $DIR/libconvnext.a (run scripts/build.sh first)" >&2; exit 1; }
mkdir -p "$DIR/bin"
for name in bench_gemm bench_ops; do
  g++ -std=c++17 -O3 -march=native -fopenmp -I. "bench/$name.cpp" "$DIR/libconvnext.a" \
    $(pkg-config --libs openblas libzip zlib) -lbenchmark -lpthread -o "$DIR/bin/$name"
  echo "built $DIR/bin/$name"
done
