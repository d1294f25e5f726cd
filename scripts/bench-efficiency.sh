#!/usr/bin/env bash
# Issue 16, item 6, efficiency: the server's CPU per encrypt at one constant
# offered rate that both sustain, for the proxy (one dev node, HTTPS + SigV4,
# 32-byte plaintext + 64-byte AAD, no CDIV) and bench/baseline (a bare
# fasthttp server doing only the same SoftHSMv2 AES-GCM call: same TLS
# certificate, same token, same pool size, same kind of key object). Both are
# driven by the same open-loop generator (xksbench run: requests sent on
# schedule, each signed afresh), and each server's CPU is `perf stat -e
# task-clock -p PID` over the measured seconds only. Rounds alternate the two
# servers; the target is proxy <= 1.35 x baseline (median of the rounds).
# Loopback only; every run is bounded (WARMUP + SECONDS + 2 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${RATE:-4000}
seconds=${SECONDS_MEASURED:-10}
warmup=${WARMUP:-3}
rounds=${ROUNDS:-3}
conns=${CONNECTIONS:-40}
port=${PORT:-38643}
out=${OUT:-bench/results/efficiency-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf"; exit 1; }
dir=$(mktemp -d /tmp/xksproxy-efficiency.XXXXXX)
go build -o "$dir/xksproxy" ./cmd/xksproxy
go build -o "$dir/baseline" ./bench/baseline
go build -o "$dir/xksbench" ./cmd/xksbench
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done; sleep 1; rm -rf "$dir"; }
trap cleanup EXIT

setsid "$dir/xksproxy" dev --data "$dir/data" --listen "127.0.0.1:$port" >"$out/dev.out" 2>"$dir/proxy.log" &
pids+=($!)
for _ in $(seq 1 120); do [ -f "$dir/data/client.json" ] && break; sleep 0.5; done
[ -f "$dir/data/client.json" ] || { echo "xksproxy dev did not come up"; tail -20 "$dir/proxy.log"; exit 1; }
proxy_pid=$(cat "$dir/data/node1/pid")
SOFTHSM2_CONF="$dir/data/node1/softhsm2.conf" setsid "$dir/baseline" -listen "127.0.0.1:$((port + 20))" \
  -cert "$dir/data/tls/server.pem" -key "$dir/data/tls/server-key.pem" \
  -token xksproxy-dev-node1 -pin-file "$dir/data/secrets/hsm-pin" -pool 2 >"$dir/baseline.log" 2>&1 &
baseline_pid=$!
pids+=("$baseline_pid")
sleep 2

measure() { # name endpoint pid: prints the server's µs of CPU per request
  "$dir/xksbench" run --client "$dir/data/client.json" --endpoint "$2" --rate "$rate" \
    --duration "$((seconds + 2))s" --warmup "${warmup}s" --connections "$conns" --mix encrypt=100 \
    --quiet --out "$out/$1" >/dev/null 2>&1 &
  local gen=$!
  sleep "$((warmup + 1))"
  perf stat -x, -e task-clock -p "$3" -o "$out/$1.perf" -- sleep "$seconds"
  wait "$gen" || true
  python3 - "$out/$1" "$rate" "$seconds" <<'EOF'
import json, sys
out, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ms = next(float(l.split(",")[0]) for l in open(out + ".perf") if "task-clock" in l)
t = json.load(open(out + "/result.json"))["totals"]
ok = t["errors"] == 0 and t["achievedRate"] >= 0.99 * rate
print("%.1f %s %.0f %d %.2f" % (ms * 1000 / (rate * seconds), "ok" if ok else "NOT-SUSTAINED", t["achievedRate"], t["errors"], t["latencyMs"]["p99"]))
EOF
}

# Warm both (TLS sessions, key copies, caches) before measuring.
for ep in "https://127.0.0.1:$port" "https://127.0.0.1:$((port + 20))"; do
  "$dir/xksbench" run --client "$dir/data/client.json" --endpoint "$ep" --rate "$rate" --duration 2s --warmup 1s \
    --connections "$conns" --mix encrypt=100 --quiet --out "$out/warm" >/dev/null 2>&1 || true
done

ratios=()
for r in $(seq 1 "$rounds"); do
  read -r proxy proxy_ok proxy_rate proxy_errors proxy_p99 < <(measure "proxy-$r" "https://127.0.0.1:$port" "$proxy_pid")
  read -r base base_ok base_rate base_errors base_p99 < <(measure "baseline-$r" "https://127.0.0.1:$((port + 20))" "$baseline_pid")
  ratio=$(awk -v p="$proxy" -v b="$base" 'BEGIN {printf "%.2f", p / b}')
  ratios+=("$ratio")
  echo "round $r: proxy $proxy µs/request ($proxy_ok: $proxy_rate/s, $proxy_errors errors, p99 $proxy_p99 ms), baseline $base µs/request ($base_ok: $base_rate/s, $base_errors errors, p99 $base_p99 ms), ratio $ratio" | tee -a "$out/efficiency.txt"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
verdict=$(awk -v m="$median" 'BEGIN {print (m <= 1.35) ? "PASS" : "FAIL"}')
{
  echo "efficiency: median ratio $median over $rounds rounds (target <= 1.35): $verdict"
  echo "xksbench run --rate $rate --connections $conns --mix encrypt=100, server CPU by perf stat -e task-clock over ${seconds}s; $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out/efficiency.txt"
