#!/usr/bin/env bash
# The test command (CI runs exactly this). Debian packages, then these stages; any failure fails
# the command:
#   1. Release build (build/) and every test through CTest;
#   2. the package installed to a temporary prefix, and every project under examples/ configured,
#      built and run against it (its CTest tests), so the installed package cannot break silently;
#   3. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/; the
#      library and the CLI instrumented, the tests' own code not): any memory error, leak or
#      undefined behaviour aborts the test that hit it;
#   4. a 10-second libFuzzer smoke run of every file-parser harness (build-fuzz/), 2 at a time;
#      the long runs are scripts/fuzz.sh with more seconds (docs/reliability.md).
# Each stage prints its wall-clock and CPU time (user + sys of everything it ran), and a table at
# the end. Skip stages with CONVNEXT_TEST_SKIP="examples asan fuzz" (any of them; local use).
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP=" ${CONVNEXT_TEST_SKIP:-} "
JOBS=$(nproc)
t0=$SECONDS
TIMES=$(mktemp)
trap 'rm -f "$TIMES"' EXIT
SUMMARY=()

# Sets CPU to the CPU seconds (user + sys) of every finished child of this shell. `times` must run
# in this shell, not in a $(...) subshell, which has children of its own.
children_cpu() {
  times > "$TIMES"
  CPU=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); s += p[1] * 60 + p[2] } printf "%.1f", s }' "$TIMES")
}
# stage NAME COMMAND...: runs the command as one timed stage.
stage() {
  local name=$1 w0=$SECONDS c0
  shift
  echo "== $name ($((SECONDS - t0)) s so far)"
  children_cpu
  c0=$CPU
  "$@"
  children_cpu
  SUMMARY+=("$(printf '%-18s %6d s wall %8.1f s CPU' "$name" $((SECONDS - w0)) "$(awk "BEGIN { print $CPU - $c0 }")")")
  echo "   ${SUMMARY[-1]}"
}
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

release_tests() { (cd build && ctest --output-on-failure -j"$JOBS" --timeout 900); }

# Every examples/<name>/ with a CMakeLists.txt: configure against the installed package, build,
# run its tests (an example without any test fails: it must prove it runs).
examples() {
  local prefix=$PWD/build/examples-install dir name
  rm -rf "$prefix"
  cmake --install build --prefix "$prefix" > build/install.log 2>&1 || { cat build/install.log >&2; return 1; }
  for dir in examples/*/; do
    [ -f "$dir/CMakeLists.txt" ] || continue
    name=$(basename "$dir")
    local out=build/examples/$name
    rm -rf "$out"
    mkdir -p "$out"
    echo "examples: $name"
    cmake -S "$dir" -B "$out" -DCMAKE_PREFIX_PATH="$prefix" > "$out.configure.log" 2>&1 ||
      { cat "$out.configure.log" >&2; return 1; }
    cmake --build "$out" -j"$JOBS" > "$out.build.log" 2>&1 || { tail -n 60 "$out.build.log" >&2; return 1; }
    (cd "$out" && ctest --output-on-failure --no-tests=error --timeout 900)
  done
}

sanitizer_build() {
  # No -march=native (ASan's reports stay portable; the AVX-512 kernels are dispatched at run
  # time either way) and no benchmarks (nothing tests them).
  BUILD_DIR=build-asan scripts/build.sh -DCONVNEXT_SANITIZE=ON -DCONVNEXT_NATIVE=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONVNEXT_TESTS=ON -DCONVNEXT_BENCH=OFF
}

sanitizer_tests() {
  # LeakSanitizer stops the process to scan it (ptrace); some containers forbid that. There it
  # would fail every test, so leak checking is turned off with a notice, everything else stays.
  if ASAN_OPTIONS=detect_leaks=1 build-asan/bin/convnext --help 2>&1 | grep -q "LeakSanitizer has encountered"; then
    echo "test: LeakSanitizer cannot run on this machine (ptrace restricted); leak checking is off" >&2
    export CONVNEXT_DETECT_LEAKS=0
  fi
  # abort_on_error: a report fails the test even where the test expects a non-zero exit.
  # tests/ubsan.supp: one report in a third-party header the tests use (see the comments there).
  (cd build-asan &&
    ASAN_OPTIONS=detect_leaks=${CONVNEXT_DETECT_LEAKS:-1}:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions="$PWD/../tests/ubsan.supp" \
    ctest --output-on-failure -j"$JOBS" --timeout 1800)
}

stage "setup" scripts/setup.sh
stage "release build" scripts/build.sh -DCONVNEXT_TESTS=ON
stage "release tests" release_tests
if ! skipped examples; then stage "examples" examples; fi
if ! skipped asan; then
  stage "sanitizer build" sanitizer_build
  stage "sanitizer tests" sanitizer_tests
fi
if ! skipped fuzz; then stage "fuzz smoke run" scripts/fuzz.sh 10; fi

echo "== all passed in $((SECONDS - t0)) s"
printf '   %s\n' "${SUMMARY[@]}"
children_cpu
printf '   %-18s %6d s wall %8.1f s CPU\n' "total" $((SECONDS - t0)) "$CPU"
