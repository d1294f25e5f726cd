#!/usr/bin/env bash
# Issue 6, target 2: the proxy's highest encrypt rate (one node, one process,
# HTTPS + SigV4, 32-byte plaintext + 64-byte AAD, no CDIV) against a bare
# fasthttp server doing only the same SoftHSMv2 AES-GCM call per request (same
# TLS certificate, same token, same pool size, same kind of key object: a
# session copy of a token key), both driven by wrk replaying a pre-signed
# request. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-15s}
conns=${CONNECTIONS:-64}
port=${PORT:-38443}
out=${OUT:-bench/results/ratio-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
dir=$(mktemp -d /tmp/xksproxy-ratio.XXXXXX)
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk"; exit 1; }
go build -o "$dir/xksproxy" ./cmd/xksproxy
go build -o "$dir/baseline" ./bench/baseline
go build -o "$dir/wrkreplay" ./bench/wrkreplay
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done; }
trap cleanup EXIT

setsid "$dir/xksproxy" dev --data "$dir/data" --listen "127.0.0.1:$port" >"$out/dev.out" 2>"$dir/proxy.log" &
pids+=($!)
for _ in $(seq 1 120); do [ -f "$dir/data/client.json" ] && break; sleep 0.5; done
"$dir/wrkreplay" --client "$dir/data/client.json" >"$dir/replay.lua"

measure() { # name url
  wrk -t2 -c"$conns" -d3s -s "$dir/replay.lua" "$2" >/dev/null 2>&1 || true
  wrk -t2 -c"$conns" -d"$duration" --latency -s "$dir/replay.lua" "$2" | tee "$out/$1.wrk.txt"
}
measure proxy "https://127.0.0.1:$port"
proxy=$(awk '/^Requests\/sec/ {print $2}' "$out/proxy.wrk.txt")
grep -q '"status":200' "$dir/proxy.log" || { echo "the proxy answered no request with 200"; exit 1; }
kill -- -"${pids[0]}"; sleep 2

SOFTHSM2_CONF="$dir/data/node1/softhsm2.conf" setsid "$dir/baseline" -listen "127.0.0.1:$((port + 20))" \
  -cert "$dir/data/tls/server.pem" -key "$dir/data/tls/server-key.pem" \
  -token xksproxy-dev-node1 -pin-file "$dir/data/secrets/hsm-pin" -pool 2 >"$dir/baseline.log" 2>&1 &
pids+=($!)
sleep 2
measure baseline "https://127.0.0.1:$((port + 20))"
baseline=$(awk '/^Requests\/sec/ {print $2}' "$out/baseline.wrk.txt")

ratio=$(awk -v p="$proxy" -v b="$baseline" 'BEGIN {printf "%.2f", p / b}')
{
  echo "proxy    $proxy req/s"
  echo "baseline $baseline req/s"
  echo "ratio    $ratio (target >= 0.80)"
  echo "wrk -t2 -c$conns -d$duration, $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee "$out/ratio.txt"
