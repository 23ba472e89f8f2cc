#!/usr/bin/env bash
# Fuzzes every parser of untrusted files with libFuzzer under AddressSanitizer +
# UndefinedBehaviorSanitizer (leak checking on unless CONVNEXT_DETECT_LEAKS=0).
#
#   scripts/fuzz.sh [seconds-per-harness] [harness ...]   (default: 60 s, all harnesses)
#   FUZZ_RUNS=1000000 scripts/fuzz.sh 3600 fuzz_image     (stop after that many executions)
#
# Harnesses (tests/fuzz/<name>.cpp): fuzz_unpickler, fuzz_pth, fuzz_safetensors, fuzz_image,
# fuzz_idx, fuzz_class_indices, fuzz_checkpoint_meta. tests/fuzz/CMakeLists.txt builds them with
# clang into build-fuzz/bin/; each runs from its seed corpus tests/fuzz/corpus/<name>/ (read
# only; new inputs go to build-fuzz/corpus/<name>/), up to FUZZ_JOBS (default: nproc) at once.
# A crash, sanitizer report, leak, uncaught exception or timeout leaves the input in
# build-fuzz/artifacts/<name>/ and makes the script exit 1. Reproduce one with
#   build-fuzz/bin/<name> build-fuzz/artifacts/<name>/crash-...
# Needs clang and its runtime: apt-get install -y clang libclang-rt-14-dev libomp-dev
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=(fuzz_unpickler fuzz_pth fuzz_safetensors fuzz_image fuzz_idx fuzz_class_indices fuzz_checkpoint_meta)
SECS=${1:-60}
shift || true
HARNESSES=("$@")
[ ${#HARNESSES[@]} -eq 0 ] && HARNESSES=("${ALL[@]}")
JOBS=${FUZZ_JOBS:-$(nproc)}
CXX=${FUZZ_CXX:-clang++}
command -v "$CXX" >/dev/null || {
  echo "fuzz: $CXX not found (scripts/setup.sh installs clang, libclang-rt-14-dev, libomp-dev)" >&2
  exit 1
}

OUT=build-fuzz
mkdir -p "$OUT"
cmake -S tests/fuzz -B "$OUT" -DCMAKE_CXX_COMPILER="$CXX" > "$OUT/configure.log" 2>&1 ||
  { cat "$OUT/configure.log" >&2; exit 1; }
echo "fuzz: building ${HARNESSES[*]}"
cmake --build "$OUT" -j"$(nproc)" --target "${HARNESSES[@]}" > "$OUT/build.log" 2>&1 ||
  { grep -E -A8 "error|Error" "$OUT/build.log" | head -n 60 >&2; exit 1; }

dict_for() {
  case "$1" in
    fuzz_unpickler | fuzz_pth) echo tests/fuzz/pickle.dict ;;
    fuzz_safetensors | fuzz_class_indices | fuzz_checkpoint_meta) echo tests/fuzz/json.dict ;;
    fuzz_image) echo tests/fuzz/image.dict ;;
  esac
}

run_one() {
  local h=$1 log=$OUT/$1.log
  local args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1
              -artifact_prefix="$OUT/artifacts/$h/")
  [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
  local dict
  dict=$(dict_for "$h")
  [ -n "$dict" ] && args+=(-dict="$dict")
  mkdir -p "$OUT/corpus/$h" "$OUT/artifacts/$h"
  local start=$SECONDS
  if ASAN_OPTIONS=detect_leaks=${CONVNEXT_DETECT_LEAKS:-1} "$OUT/bin/$h" "${args[@]}" \
       "$OUT/corpus/$h" "tests/fuzz/corpus/$h" > "$log" 2>&1; then
    local runs cov
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "fuzz: $h ok: $runs executions in $((SECONDS - start)) s, $cov, no findings"
  else
    echo "fuzz: $h FOUND A PROBLEM; see $log and $OUT/artifacts/$h/" >&2
    grep -E "ERROR|SUMMARY|runtime error|uncaught|Test unit written" "$log" | head -20 >&2 || true
    return 1
  fi
}

status=0
pids=()
names=()
reap() {  # waits for the oldest running harness
  if ! wait "${pids[0]}"; then status=1; fi
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
}
echo "fuzz: ${#HARNESSES[@]} harness(es), ${SECS}s each${FUZZ_RUNS:+ or $FUZZ_RUNS runs}, $JOBS at a time"
for h in "${HARNESSES[@]}"; do
  [ ${#pids[@]} -ge "$JOBS" ] && reap
  run_one "$h" &
  pids+=($!)
  names+=("$h")
done
while [ ${#pids[@]} -gt 0 ]; do reap; done
exit $status
