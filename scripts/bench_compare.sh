#!/usr/bin/env bash
# convnext.cpp against PyTorch (the peer benchmark ../shared/peer/torch_bench.py, Debian's
# python3-torch) on the workloads of BENCHMARKS.md, runs interleaved (ours, peer, ours, peer, ...),
# medians and ratios. Not part of CI; needs a built CLI and /usr/bin/python3 with torch.
#
#   scripts/bench_compare.sh                       # W1-W4, 5 pairs each, build/bin/convnext
#   RUNS=3 WORKLOADS="W1 W4" BUILD_DIR=build-perf scripts/bench_compare.sh
#   BF16=1 scripts/bench_compare.sh                # four sides per round: ours fp32, ours
#                                                  # --precision bf16, the peer's default, and its
#                                                  # best CPU setup (--bf16 --channels-last)
#
# Environment: RUNS (pairs per workload, default 5), WORKLOADS (default "W1 W2 W3 W4"),
# BUILD_DIR (default build), THREADS (default 2), PEER (path of torch_bench.py), LOG (raw JSON
# lines, default $BUILD_DIR/bench_compare.log). Every run's JSON line goes to the log with its
# CPU seconds (user + sys of the process), which load on a shared machine moves far less than
# wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
CLI="$BUILD_DIR/bin/convnext"
PEER=${PEER:-../shared/peer/torch_bench.py}
[ -x "$CLI" ] || { echo "bench_compare: $CLI not found (scripts/build.sh first)" >&2; exit 1; }
[ -f "$PEER" ] || { echo "bench_compare: peer script $PEER not found" >&2; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "bench_compare: /usr/bin/python3 has no torch" >&2; exit 1; }

export CLI PEER
export BF16=${BF16:-0} RUNS=${RUNS:-5} WORKLOADS=${WORKLOADS:-"W1 W2 W3 W4"} THREADS=${THREADS:-2} LOG=${LOG:-$BUILD_DIR/bench_compare.log}
exec /usr/bin/python3 - <<'PY'
import json, os, resource, statistics, subprocess, sys, time

W = {  # name: (arguments shared by both sides, timed steps, target ratio)
    "W1": ("--model convnext_tiny --batch-size 8 --image-size 224 --mode train", 3, 2.0),
    "W2": ("--model convnext_tiny --batch-size 8 --image-size 224 --mode infer", 5, 2.0),
    "W3": ("--model convnext_tiny --batch-size 1 --image-size 224 --mode infer", 10, 2.0),
    "W4": ("--model convnext_atto --batch-size 128 --image-size 32 --mode train", 5, 3.0),
}
cli, peer, runs, threads, log = os.environ["CLI"], os.environ["PEER"], int(os.environ["RUNS"]), os.environ["THREADS"], os.environ["LOG"]

def run(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit("bench_compare: failed: %s\n%s" % (" ".join(cmd), out.stderr[-2000:]))
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    j = json.loads(line)
    j["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    j["wall_s"] = time.time() - t
    return j

with open(log, "a") as f:
    f.write("# %s load %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), open("/proc/loadavg").read().strip()))
rows = []
bf16 = os.environ["BF16"] == "1"
for name in os.environ["WORKLOADS"].split():
    args, steps, target = W[name]
    common = args.split() + ["--steps", str(steps), "--warmup", "1", "--threads", threads]
    sides = [("ours", [cli, "bench"] + common + ["--json"]), ("peer", ["/usr/bin/python3", peer] + common)]
    if bf16:
        sides[1:1] = [("ours-bf16", [cli, "bench"] + common + ["--json", "--precision", "bf16"])]
        sides.append(("peer-bf16-cl", ["/usr/bin/python3", peer] + common + ["--bf16", "--channels-last"]))
    got = {side: [] for side, _ in sides}
    for r in range(runs):
        for side, cmd in sides:
            j = run(cmd)
            got[side].append(j)
            with open(log, "a") as f:
                f.write("%s %s %s\n" % (name, side, json.dumps(j)))
            print("%s run %d %-12s %8.2f img/s  peak RSS %6.0f MB  cpu %6.1f s" % (name, r + 1, side, j["img_per_s"], j["peak_rss_mb"], j["cpu_s"]), file=sys.stderr)
    rows.append((name, args, target, got))

med = statistics.median
def ips(js): return med([j["img_per_s"] for j in js])
def rss(js): return med([j["peak_rss_mb"] for j in js])
print("load average now: %s" % open("/proc/loadavg").read().strip())
if not bf16:
    print("| workload | convnext.cpp img/s | PyTorch img/s | ratio of medians | median of paired ratios | target | peak RSS ours / PyTorch (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, args, target, g in rows:
        o, p = ips(g["ours"]), ips(g["peer"])
        pair = med([a["img_per_s"] / b["img_per_s"] for a, b in zip(g["ours"], g["peer"])])
        print("| %s `%s` | %.2f | %.2f | **%.2fx** %s | %.2fx | >= %.1fx | %.0f / %.0f = %.2f |" % (
            name, args, o, p, o / p, "ok" if o / p >= target else "BELOW", pair, target, rss(g["ours"]), rss(g["peer"]),
            rss(g["ours"]) / rss(g["peer"])))
else:
    print("| workload | ours fp32 | ours bf16 | PyTorch default | PyTorch --bf16 --channels-last | bf16 / fp32 (ours) | ours best / PyTorch default | ours best / PyTorch best | peak RSS MB: ours fp32, bf16; PyTorch default, best |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, args, target, g in rows:
        o, ob, p, pb = ips(g["ours"]), ips(g["ours-bf16"]), ips(g["peer"]), ips(g["peer-bf16-cl"])
        best = max(o, ob)
        print("| %s `%s` | %.2f | %.2f | %.2f | %.2f | %.2fx | %.2fx | **%.2fx** | %.0f, %.0f; %.0f, %.0f |" % (
            name, args, o, ob, p, pb, ob / o, best / p, best / pb, rss(g["ours"]), rss(g["ours-bf16"]),
            rss(g["peer"]), rss(g["peer-bf16-cl"])))
PY
