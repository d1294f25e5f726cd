#!/usr/bin/env bash
# Issue 16, item 2: latency hiding on a network HSM. One node on the simulated
# network HSM (hsm/netsim: SoftHSMv2 behind a per-operation latency and a cap
# of MAX_IN_FLIGHT operations in flight), wrk with CONNECTIONS connections
# replaying one pre-signed encrypt. Two curves of served encrypts/s (200s
# only) and p99:
#   1. against pool_size (POOLS) at LATENCY;
#   2. against the added latency (LATENCIES) at pool_size = CURVE_POOL,
#      after the node's own ceiling at 0 ms.
# Then the issue's target: at LATENCY and CURVE_POOL, served >= 0.9 x
# min(MAX_IN_FLIGHT / LATENCY, the 0 ms ceiling) with p99 <= 10 ms, judged
# twice:
#   - on wrk's saturated closed loop (its p99 is each connection's wait for
#     the CONNECTIONS - 1 requests ahead of it, not the node's latency);
#   - open loop: the highest rate whose p99 stays within 10 ms (xksbench
#     find-max), at 0 ms and at LATENCY. xksbench signs every request and
#     shares the two cores with the node, so both rates are the machine's
#     (node and generator), and the generator's CPU per request, the same in
#     both, pulls their ratio towards 1. Under a CPU cgroup instead (tried:
#     0.5 CPU) the node's CPU-wait shedding turned requests away well below
#     its capacity (bench/RESULTS.md), which measured the shedder, not the
#     pool.
# Loopback only; every run is bounded (DURATION each, plus a 2 s warm-up;
# find-max at most 14 steps of 7 s).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${DURATION:-10s}
conns=${CONNECTIONS:-256}
pools=${POOLS:-2 8 16 32 64 128}
latencies=${LATENCIES:-0.5 1 2 5}
latency=${LATENCY:-2}
curve_pool=${CURVE_POOL:-64}
max_in_flight=${MAX_IN_FLIGHT:-64}
port=${PORT:-38543}
out=${OUT:-bench/results/hsm-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
dir=$(mktemp -d /tmp/xksproxy-benchhsm.XXXXXX)
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk"; exit 1; }
command -v curl >/dev/null || { echo "curl is missing: apt-get install -y curl"; exit 1; }
make --no-print-directory netsim >/dev/null
netsim_lib=$(pwd)/bin/libnetsimhsm.so
go build -o "$dir/xksproxy" ./cmd/xksproxy
go build -o "$dir/wrkreplay" ./bench/wrkreplay
go build -o "$dir/xksbench" ./cmd/xksbench
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done; sleep 1; rm -rf "$dir"; }
trap cleanup EXIT

# `xksproxy dev` prepares the node (token, keys, credential, TLS, config);
# the node then runs from its config with the module swapped for the
# simulated network HSM.
. scripts/dev-node.sh
prepare_dev_node "$dir" "$port"
"$dir/wrkreplay" --client "$dir/data/client.json" >"$dir/replay.lua"

node_dir=$dir/data/node1
conf=$dir/netsim.conf
health=$(awk -F'"' '/^ *health_listen/ {print $2}' "$node_dir/node.toml")

netsim_latency() { # ms: switches the running module's latency (re-read within 10 ms)
  local us
  us=$(awk -v ms="$1" 'BEGIN {printf "%d", ms * 1000}')
  printf 'latency_us = %s\nmax_in_flight = %s\n' "$us" "$max_in_flight" >"$conf.new"
  mv "$conf.new" "$conf"
  sleep 0.1
}

node_pid=
start_node() { # pool_size
  # dev leaves settings at their defaults out of node.toml (pool_size among
  # them), so pool_size is written after the module line, replacing any.
  sed -e '/^ *pool_size = /d' -e "s|^\( *\)module = .*|\1module = \"$netsim_lib\"\n\1pool_size = $1|" \
    -e "s|^\( *\)SOFTHSM2_CONF = \(.*\)|&\n\1NETSIM_HSM_CONF = \"$conf\"|" \
    "$node_dir/node.toml" >"$dir/node.toml"
  setsid "$dir/xksproxy" serve --config "$dir/node.toml" >>"$dir/node.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 1 120); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$health/ready")" = 200 ]; then
      sessions=$(curl -s "http://$health/metrics" | awk '$1 ~ /^xksproxy_hsm_sessions([{]|$)/ {s += $2} END {print s}')
      [ "$sessions" = "$1" ] || { echo "the node runs $sessions HSM sessions, not pool_size $1"; exit 1; }
      return
    fi
    sleep 0.5
  done
  echo "the node did not become ready; its log:"; tail -20 "$dir/node.log"; exit 1
}
stop_node() {
  kill -- -"$node_pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.25; done
}

url="https://127.0.0.1:$port"
measure() { # name: prints "served/s p99 shed%" from one wrk run
  wrk -t2 -c"$conns" -d2s -s "$dir/replay.lua" "$url" >/dev/null 2>&1 || true
  wrk -t2 -c"$conns" -d"$duration" --latency -s "$dir/replay.lua" "$url" >"$out/$1.wrk.txt"
  awk -v d="${duration%s}" '
    /requests in/ {total = $1}
    /Non-2xx or 3xx responses/ {bad = $NF}
    /^ +99%/ {p99 = $2}
    END {printf "%.0f %s %.1f\n", (total - bad) / d, p99, total ? 100 * bad / total : 0}' "$out/$1.wrk.txt"
}

report=$out/hsm.txt
{
  echo "# simulated network HSM: max_in_flight $max_in_flight; wrk -t2 -c$conns -d$duration replaying one pre-signed encrypt"
  echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
  echo "# curve, pool_size, latency_ms, served/s, p99, non-2xx %"
} | tee "$report"

netsim_latency "$latency"
for pool in $pools; do
  start_node "$pool"
  read -r served p99 shed < <(measure "pool-$pool")
  echo "pool $pool $latency $served $p99 $shed" | tee -a "$report"
  stop_node
done

netsim_latency 0
start_node "$curve_pool"
read -r ceiling ceiling_p99 ceiling_shed < <(measure "latency-0")
echo "latency $curve_pool 0 $ceiling $ceiling_p99 $ceiling_shed" | tee -a "$report"
target_served= target_p99=
for l in $latencies; do
  netsim_latency "$l"
  read -r served p99 shed < <(measure "latency-$l")
  echo "latency $curve_pool $l $served $p99 $shed" | tee -a "$report"
  if [ "$l" = "$latency" ]; then target_served=$served target_p99=$p99; fi
done
stop_node

if [ -n "$target_served" ]; then
  awk -v s="$target_served" -v p99="$target_p99" -v c="$ceiling" -v m="$max_in_flight" -v l="$latency" -v pool="$curve_pool" 'BEGIN {
    hsm = m / (l / 1000); want = 0.9 * (hsm < c ? hsm : c)
    ms = p99 + 0; if (p99 ~ /us$/) ms /= 1000; else if (p99 ~ /[^m]s$/) ms *= 1000
    verdict = (s >= want && ms <= 10) ? "PASS" : "FAIL"
    printf "target (%s ms, pool %s): served %d/s, want >= %.0f (0.9 x min(%d HSM, %d ceiling at 0 ms)), p99 %s (want <= 10ms): %s\n",
      l, pool, s, want, hsm, c, p99, verdict }' | tee -a "$report"
fi

# Open loop: find-max with a 10 ms p99 budget; a step passes with at most
# 0.1% errors (429s included).
findmax() { # name: prints the highest rate with p99 <= 10 ms, that step's p99, and why find-max stopped
  "$dir/xksbench" find-max --client "$dir/data/client.json" --mix encrypt=100 \
    --budget 10ms --max-error-rate 0.001 --connections 128 --start-rate 1000 --factor 1.3 \
    --step-duration 5s --warmup 2s --max-steps 14 --refine 2 --quiet --out "$out/$1" >/dev/null 2>&1 || true
  python3 -c "
import json, sys
f = json.load(open(sys.argv[1] + '/result.json'))['findMax']
best = f['steps'][f['bestStep']] if f['maxSustainableRatePerKey'] > 0 else None
print('%.0f %s %s' % (f['maxSustainableRatePerKey'], '%.2fms' % best['latencyMs']['p99'] if best else '-', f['stopReason'].replace(' ', '_')))" "$out/$1"
}
echo "# open loop: xksbench find-max on the same cores, budget p99 10 ms, at most 0.1% errors" | tee -a "$report"
echo "# curve, pool_size, latency_ms, sustained/s, p99 at that rate, find-max stopped by" | tee -a "$report"
netsim_latency 0
start_node "$curve_pool"
read -r open_ceiling open_ceiling_p99 stop < <(findmax "open-0")
echo "open-loop $curve_pool 0 $open_ceiling $open_ceiling_p99 $stop" | tee -a "$report"
netsim_latency "$latency"
read -r open_served open_p99 stop < <(findmax "open-$latency")
echo "open-loop $curve_pool $latency $open_served $open_p99 $stop" | tee -a "$report"
stop_node
awk -v s="$open_served" -v c="$open_ceiling" -v m="$max_in_flight" -v l="$latency" -v pool="$curve_pool" 'BEGIN {
  hsm = m / (l / 1000); want = 0.9 * (hsm < c ? hsm : c)
  printf "open-loop target (%s ms, pool %s): %d/s with p99 <= 10 ms, want >= %.0f (0.9 x min(%d HSM, %d at 0 ms)): %s\n",
    l, pool, s, want, hsm, c, (c > 0 && s >= want) ? "PASS" : "FAIL" }' | tee -a "$report"
echo "report: $report"
