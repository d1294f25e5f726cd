#!/usr/bin/env bash
# Issue 6's four targets on this machine, each bounded in time, loopback only.
# Reports go to bench/results/<timestamp>/ (git ignores it). DURATION sets the
# measured time of targets 1 and 3 (60s for the record; make bench uses 20s).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-20s}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/$stamp
mkdir -p "$out"
work=$(mktemp -d /tmp/xksproxy-bench.XXXXXX)
go build -o "$work/xksproxy" ./cmd/xksproxy
go build -o "$work/xksbench" ./cmd/xksbench
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start_dev() { # dir port nodes
  setsid "$work/xksproxy" dev --nodes "$3" --data "$1" --listen "127.0.0.1:$2" >"$1.out" 2>"$1.log" &
  pids+=($!)
  for _ in $(seq 1 240); do [ -f "$1/client.json" ] && return; sleep 0.5; done
  echo "dev did not start"; tail -20 "$1.log"; exit 1
}
bench() { "$work/xksbench" "$@" --quiet || true; }
summary() { python3 -c "
import json,sys
d=json.load(open(sys.argv[1])); m=d['totals']; l=m['latencyMs']
print('%-8s offered %.0f/s achieved %.0f/s errors %d  p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms' % (d['verdict']['result'], m['offeredRate'], m['achievedRate'], m['errors'], l['p50'], l['p99'], l['p99_9'], l['max']))
" "$1/result.json" 2>/dev/null || echo "(no result in $1)"; }

echo "== target 1: one node, one key, 1800/s encrypt for $duration, budget 5ms"
start_dev "$work/one" 47443 1
bench run --client "$work/one/client.json" --rate 1800 --duration "$duration" --warmup 5s --mix encrypt=100 --budget 5ms --out "$out/t1-1800"
summary "$out/t1-1800"

echo "== sustainable rate of one node (find-max, budget 250ms)"
bench find-max --client "$work/one/client.json" --mix encrypt=100 --start-rate 2000 --factor 1.5 --step-duration 5s --warmup 2s --max-steps 6 --out "$out/findmax"
max=$(python3 -c "import json; print(int(json.load(open('$out/findmax/result.json'))['findMax']['maxSustainableRatePerKey']))" 2>/dev/null || echo 0)
echo "highest sustainable rate per key: $max/s"

kill -- -"${pids[0]}"; sleep 2

echo "== target 4: overload at 3x the sustainable rate, the node limited to a quarter of a CPU"
{ OUT="$out/t4" scripts/bench-overload.sh || echo "target 4 not measured"; } | tail -13

echo "== target 2: proxy vs bare fasthttp + SoftHSMv2 under wrk"
OUT="$out/t2-ratio" DURATION=15s scripts/bench-ratio.sh | tail -5

echo "== issue 16, efficiency: server CPU per encrypt at 4,000/s, proxy vs bare baseline"
{ OUT="$out/efficiency" scripts/bench-efficiency.sh || echo "efficiency not measured"; } | tail -3

echo "== target 3: three nodes, three keys at 1800/s each for $duration, round robin, budget 10ms"
start_dev "$work/three" 48443 3
(set -a; . "$work/three/node1/admin.env"; "$work/xksproxy" key create demo k2 >/dev/null; "$work/xksproxy" key create demo k3 >/dev/null)
bench run --client "$work/three/client.json" --key demo-key --key k2 --key k3 --rate 1800 --duration "$duration" --warmup 5s --mix encrypt=100 --budget 10ms --out "$out/t3-three-nodes"
summary "$out/t3-three-nodes"
echo "== issue 16, failover: one node on two simulated network HSMs, A hangs then errors (20 s runs)"
{ OUT="$out/failover" DURATION=20 FAULT_AT=7 HEAL_AT=14 scripts/bench-failover.sh || echo "failover not measured"; } | grep '^failover' || true

echo "reports: $out   ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ))"
