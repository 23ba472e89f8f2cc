#!/usr/bin/env bash
# Configure and build (Release) into build/, or into $BUILD_DIR. Extra arguments go to cmake's
# configure step (later -D options override the defaults here):
#   scripts/build.sh
#   BUILD_DIR=build-asan scripts/build.sh -DCONVNEXT_SANITIZE=ON -DCONVNEXT_NATIVE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${BUILD_DIR:-build}
mkdir -p "$DIR"
cmake -S . -B "$DIR" -DCMAKE_BUILD_TYPE=Release "$@" > "$DIR/configure.log" 2>&1 || { cat "$DIR/configure.log"; exit 1; }
if ! cmake --build "$DIR" -j"$(nproc)" > "$DIR/build.log" 2>&1; then
  grep -E -A8 "error|Error" "$DIR/build.log" | head -n 80
  echo "build: failed in $DIR (full log: $DIR/build.log)" >&2
  exit 1
fi
tail -n 1 "$DIR/build.log"
