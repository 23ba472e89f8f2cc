#!/usr/bin/env bash
# Fuzzes the file parsers with libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/fuzz.sh [seconds-per-harness] [harness ...]     (default: 60 s, all three)
#
# Builds tests/fuzz/{fuzz_unpickler,fuzz_pth,fuzz_safetensors}.cpp with the library sources they
# need into build-fuzz/, then runs each harness from its seed corpus tests/fuzz/corpus/<harness>/
# (read-only; new inputs go to build-fuzz/corpus/<harness>/). A crash, sanitizer report, leak or
# timeout leaves the input in build-fuzz/ and makes the script exit 1.
# Needs clang and its runtime: apt-get install -y clang libclang-rt-14-dev libomp-dev
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
HARNESSES=("$@")
[ ${#HARNESSES[@]} -eq 0 ] && HARNESSES=(fuzz_unpickler fuzz_pth fuzz_safetensors)
CXX=${CXX:-clang++}
command -v "$CXX" >/dev/null || { echo "fuzz: $CXX not found (apt-get install -y clang libclang-rt-14-dev libomp-dev)" >&2; exit 1; }

OUT=build-fuzz
mkdir -p "$OUT/obj"
FLAGS=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fopenmp -I. -fsanitize=address,undefined
       -fno-sanitize-recover=undefined)
# Only what the parsers reach: core (Tensor, Storage) and the io readers.
SOURCES=(core/*.cpp io/zip_reader.cpp io/unpickler.cpp io/pth.cpp io/safetensors.cpp io/atomic_file.cpp)

echo "fuzz: compiling ${#SOURCES[@]} library sources with $CXX"
objs=()
pids=()
for src in "${SOURCES[@]}"; do
  obj="$OUT/obj/$(echo "$src" | tr / _).o"
  objs+=("$obj")
  "$CXX" "${FLAGS[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$(nproc)" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
for h in "${HARNESSES[@]}"; do
  "$CXX" "${FLAGS[@]}" -fsanitize=fuzzer "tests/fuzz/$h.cpp" "${objs[@]}" -lz $(pkg-config --libs openblas) -o "$OUT/$h"
done

status=0
for h in "${HARNESSES[@]}"; do
  mkdir -p "$OUT/corpus/$h" "$OUT/artifacts/$h"
  extra=()
  [ "$h" != fuzz_safetensors ] && extra+=(-dict=tests/fuzz/pickle.dict)
  echo "fuzz: $h for ${SECS}s"
  if ASAN_OPTIONS=detect_leaks=1 "./$OUT/$h" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$h/" "${extra[@]}" \
       "$OUT/corpus/$h" "tests/fuzz/corpus/$h" > "$OUT/$h.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$OUT/$h.log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$OUT/$h.log" | tail -1 || true)
    echo "fuzz: $h ok: $runs executions, $cov, no findings"
  else
    echo "fuzz: $h FOUND A PROBLEM; see $OUT/$h.log and $OUT/artifacts/$h/" >&2
    grep -E "ERROR|SUMMARY|runtime error|uncaught" "$OUT/$h.log" | head -20 >&2 || true
    status=1
  fi
done
exit $status
