#!/usr/bin/env bash
# Runs a command and samples its memory from outside (/proc/<pid>/status: VmRSS, VmHWM), so a
# long run can be checked for growth without touching the program.
#
#   scripts/rss_watch.sh [--interval S] [--mark REGEX] [--csv FILE] -- COMMAND [ARGS...]
#
# The command's output passes through. Every output line matching --mark (default: the
# trainer's per-epoch validation line, '^\[valid epoch') closes a period; for each period the
# script records the largest VmRSS it sampled, VmRSS at the mark and VmHWM (the kernel's own
# peak). --csv gets one row per period: period,seconds,peak_rss_kb,rss_kb,hwm_kb. At the end it
# prints the table and the growth of the per-period peak from period 2 to the last one. The exit
# status is the command's.
set -euo pipefail
INTERVAL=0.5
MARK='^\[valid epoch'
CSV=""
while [ $# -gt 0 ]; do
  case "$1" in
    --interval) INTERVAL=$2; shift 2 ;;
    --mark) MARK=$2; shift 2 ;;
    --csv) CSV=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "rss_watch: unknown option $1 (usage: rss_watch.sh [--interval S] [--mark REGEX] [--csv FILE] -- CMD...)" >&2
       exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "rss_watch: no command given" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/output
: > "$out"
"$@" > >(tee -a "$out") 2>&1 &
pid=$!
start=$(date +%s.%N)

kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status" 2>/dev/null || true; }
rows=()
marks=0
peak=0
rss=0
hwm=0
record() {
  local t
  t=$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }')
  rows+=("$1,$t,$peak,$rss,$hwm")
  peak=0
}
while kill -0 "$pid" 2>/dev/null; do
  r=$(kb VmRSS)
  h=$(kb VmHWM)
  if [ -n "$r" ]; then
    rss=$r
    hwm=${h:-$hwm}
    [ "$r" -gt "$peak" ] && peak=$r
  fi
  n=$(grep -c -E "$MARK" "$out" || true)
  while [ "$n" -gt "$marks" ]; do
    marks=$((marks + 1))
    record "$marks"
  done
  sleep "$INTERVAL"
done
status=0
wait "$pid" || status=$?
n=$(grep -c -E "$MARK" "$out" || true)
while [ "$n" -gt "$marks" ]; do marks=$((marks + 1)); record "$marks"; done
[ "$peak" -gt 0 ] && record "end"

{
  echo "period,seconds,peak_rss_kb,rss_kb,hwm_kb"
  printf '%s\n' "${rows[@]}"
} > "$work/table.csv"
[ -n "$CSV" ] && cp "$work/table.csv" "$CSV"
echo "rss_watch: pid $pid exited with status $status; memory per period (kB):"
column -s, -t < "$work/table.csv" 2>/dev/null || cat "$work/table.csv"
awk -F, 'NR > 1 && $1 != "end" { p[$1] = $3; last = $1 }
  END { if (last >= 2 && p[2] > 0) {
          max = 0; for (i = 3; i <= last; i++) if (p[i] > max) max = p[i]
          if (last == 2) max = p[2]
          printf "rss_watch: peak RSS period 2: %d kB, highest later period: %d kB, growth %+.2f%%\n",
                 p[2], max, 100 * (max - p[2]) / p[2] } }' "$work/table.csv"
exit $status
