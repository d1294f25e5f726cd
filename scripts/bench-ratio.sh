#!/usr/bin/env bash
# Issue 6, target 2: the proxy's highest encrypt rate (one node, one process,
# HTTPS + SigV4, 32-byte plaintext + 64-byte AAD, no CDIV) against a bare
# fasthttp server doing only the same SoftHSMv2 AES-GCM call per request (same
# TLS certificate, same token, same pool size, same kind of key object: a
# session copy of a token key), both driven by wrk replaying a pre-signed
# request. Loopback only; bounded in time.
#
# PIN=1 runs each server on core 0 and wrk (one thread) on core 1, so that
# each server's rate is what one core of its own sustains, and the CPU per
# request is not shared with the generator's (needs 2 cores and taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-15s}
rounds=${ROUNDS:-3}
conns=${CONNECTIONS:-64}
port=${PORT:-38443}
out=${OUT:-bench/results/ratio-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
dir=$(mktemp -d /tmp/xksproxy-ratio.XXXXXX)
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk"; exit 1; }
server_cpu=() wrk_cmd=(wrk -t2)
if [ "${PIN:-0}" = 1 ]; then
  [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null || { echo "PIN=1 needs 2 cores and taskset"; exit 1; }
  server_cpu=(taskset -c 0) wrk_cmd=(taskset -c 1 wrk -t1)
fi
go build -o "$dir/xksproxy" ./cmd/xksproxy
go build -o "$dir/baseline" ./bench/baseline
go build -o "$dir/wrkreplay" ./bench/wrkreplay
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done; sleep 1; rm -rf "$dir"; }
trap cleanup EXIT

setsid "${server_cpu[@]}" "$dir/xksproxy" dev --data "$dir/data" --listen "127.0.0.1:$port" >"$out/dev.out" 2>"$dir/proxy.log" &
pids+=($!)
for _ in $(seq 1 120); do [ -f "$dir/data/client.json" ] && break; sleep 0.5; done
"$dir/wrkreplay" --client "$dir/data/client.json" >"$dir/replay.lua"

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
measure() { # name url pid: prints "requests/s µs-of-CPU-per-request" of that process
  local before after
  before=$(cpu_ticks "$3")
  "${wrk_cmd[@]}" -c"$conns" -d"$duration" --latency -s "$dir/replay.lua" "$2" | tee "$out/$1.wrk.txt" >/dev/null
  after=$(cpu_ticks "$3")
  awk -v b="$before" -v a="$after" -v hz="$(getconf CLK_TCK)" -v d="${duration%s}" '/^Requests\/sec/ {
    printf "%s %.1f\n", $2, (a - b) / hz * 1e6 / ($2 * d) }' "$out/$1.wrk.txt"
}
SOFTHSM2_CONF="$dir/data/node1/softhsm2.conf" setsid "${server_cpu[@]}" "$dir/baseline" -listen "127.0.0.1:$((port + 20))" \
  -cert "$dir/data/tls/server.pem" -key "$dir/data/tls/server-key.pem" \
  -token xksproxy-dev-node1 -pin-file "$dir/data/secrets/hsm-pin" -pool 2 >"$dir/baseline.log" 2>&1 &
baseline_pid=$!
pids+=("$baseline_pid")
sleep 2
proxy_url="https://127.0.0.1:$port" baseline_url="https://127.0.0.1:$((port + 20))"
# Warm both up (TLS sessions, HSM copies, caches).
for u in "$proxy_url" "$baseline_url"; do "${wrk_cmd[@]}" -c"$conns" -d3s -s "$dir/replay.lua" "$u" >/dev/null 2>&1 || true; done
grep -q '"status":200' "$dir/proxy.log" || sleep 1
grep -q '"status":200' "$dir/proxy.log" || { echo "the proxy answered no request with 200"; exit 1; }

# The machine is shared and noisy: measure in alternating rounds, each
# round's ratio from a proxy run and the baseline run right after it, and
# report the median round.
ratios=()
for r in $(seq 1 "$rounds"); do
  read -r proxy proxy_cpu < <(measure "proxy-$r" "$proxy_url" "$(cat "$dir/data/node1/pid")")
  read -r baseline baseline_cpu < <(measure "baseline-$r" "$baseline_url" "$baseline_pid")
  ratio=$(awk -v p="$proxy" -v b="$baseline" 'BEGIN {printf "%.2f", p / b}')
  ratios+=("$ratio")
  echo "round $r: proxy $proxy req/s ($proxy_cpu µs CPU/request), baseline $baseline req/s ($baseline_cpu µs CPU/request), ratio $ratio" | tee -a "$out/ratio.txt"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
{
  echo "median ratio $median over $rounds rounds (target >= 0.80)"
  echo "${wrk_cmd[*]} -c$conns -d$duration${server_cpu:+, servers pinned to core 0}, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee -a "$out/ratio.txt"
