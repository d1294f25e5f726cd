#!/usr/bin/env bash
# Issue 16, item 4: failover between two HSMs of one node. One node on two
# SoftHSMv2 tokens ([[hsm]], A and B) behind the simulated network HSM
# (hsm/netsim: LATENCY ms per operation, MAX_IN_FLIGHT operations in flight
# in the module, POOL sessions per HSM); xksbench offers RATE requests/s
# (encrypt=70,decrypt=30) for DURATION seconds. At FAULT_AT s HSM A hangs
# (then, in a second run on a fresh node, fails with CKR_DEVICE_ERROR); at
# HEAL_AT s it heals. The node's /metrics is polled every 100 ms to time when
# A leaves and rejoins the rotation (xksproxy_hsm_in_rotation{hsm="A"}).
# One verdict line per fault:
#   PASS = no failed request (the node retries the calls in flight on A on B,
#   so none should fail; the calls in flight on A at the fault are printed
#   beside), every answer within BUDGET, and A back in rotation within
#   3 x HEALTH_INTERVAL of the heal.
# FAULT_TOKEN=nobody is a control run: the fault is switched on for a token
# that does not exist, so nothing fails and only the module's own cost of a
# token-limited fault remains (it reads each call's session info).
# Loopback only; bounded (each run: warm-up + DURATION + xksbench's own
# bounds); processes and the temporary directory are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${RATE:-1800}
duration=${DURATION:-30}
duration=${duration%s}
fault_at=${FAULT_AT:-10}
heal_at=${HEAL_AT:-20}
latency_ms=${LATENCY:-2}
pool=${POOL:-16}
max_in_flight=${MAX_IN_FLIGHT:-64}
health_interval=${HEALTH_INTERVAL:-2}
budget=${BUDGET:-250ms}
faults=${FAULTS:-hang error}
port=${PORT:-39543}
out=${OUT:-bench/results/failover-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
dir=$(mktemp -d /tmp/xksproxy-benchfailover.XXXXXX)
for tool in curl python3 softhsm2-util; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (make deps)"; exit 1; }
done
make --no-print-directory netsim >/dev/null
netsim_lib=$(pwd)/bin/libnetsimhsm.so
go build -o "$dir/xksproxy" ./cmd/xksproxy
go build -o "$dir/xksbench" ./cmd/xksbench
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || true; done
  sleep 1
  rm -rf "$dir"
}
trap cleanup EXIT

# `xksproxy dev` prepares the node (token A, keys, credential, TLS, config);
# B is a second token in the same token directory, which the node fills with
# the cluster keys (import_keys_file) and the replicated demo key as it
# starts.
. scripts/dev-node.sh
prepare_dev_node "$dir" "$port"

node_dir=$dir/data/node1
health=$(awk -F'"' '/^ *health_listen/ {print $2}' "$node_dir/node.toml")
token_a=$(awk -F'"' '/^ *token_label/ {print $2; exit}' "$node_dir/node.toml")
token_b=$token_a-b
fault_token=${FAULT_TOKEN:-$token_a}
softhsm_conf=$node_dir/softhsm2.conf
SOFTHSM2_CONF=$softhsm_conf softhsm2-util --init-token --free --label "$token_b" \
  --so-pin "$(cat "$dir/data/secrets/hsm-so-pin")" --pin "$(cat "$dir/data/secrets/hsm-pin")" >/dev/null

conf=$dir/netsim.conf
netsim_conf() { # fault ("" for none): the module's settings file contents
  printf 'latency_us = %d\nmax_in_flight = %d\n' "$((latency_ms * 1000))" "$max_in_flight"
  [ -z "$1" ] || printf 'fault = %s\nfault_token = %s\n' "$1" "$fault_token"
}
netsim_conf "" >"$dir/netsim.healthy"
cp "$dir/netsim.healthy" "$conf"

# node.toml with dev's [hsm] table replaced by two [[hsm]] entries on the
# simulated network HSM.
awk '/^ *\[/ {skip = ($1 == "[hsm]" || $1 == "[hsm.env]")} !skip' "$node_dir/node.toml" >"$dir/node.toml"
for token in "$token_a" "$token_b"; do
  cat >>"$dir/node.toml" <<EOF

[[hsm]]
module = "$netsim_lib"
token_label = "$token"
pin_file = "$dir/data/secrets/hsm-pin"
pool_size = $pool
health_interval = "${health_interval}s"
[hsm.env]
SOFTHSM2_CONF = "$softhsm_conf"
NETSIM_HSM_CONF = "$conf"
EOF
done

node_pid=
start_node() {
  cp "$dir/data/secrets/cluster-keys" "$node_dir/cluster-keys.import"
  setsid "$dir/xksproxy" serve --config "$dir/node.toml" >>"$dir/node.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 1 120); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$health/ready")" = 200 ]; then return; fi
    sleep 0.5
  done
  echo "the node did not become ready; its log:"; tail -20 "$dir/node.log"; exit 1
}
stop_node() {
  kill -- -"$node_pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.25; done
}

# poll FILE: every 100 ms, one line "epoch in_rotation_A in_rotation_B
# sessions_in_use_A served_A served_B sessions_in_use_B call_average_B" from
# the node's metrics. One python3
# process: a curl, awk and date every 100 ms cost this 2-vCPU VM about 0.8 of
# a core in process start-ups, which the node then lacked.
poll() {
  exec python3 - "$1" "http://$health/metrics" "$token_a" "$token_b" <<'PY'
import sys, time, urllib.request
out, url, a, b = sys.argv[1:]
names = ['xksproxy_hsm_in_rotation{hsm="%s"}' % a, 'xksproxy_hsm_in_rotation{hsm="%s"}' % b,
         'xksproxy_hsm_sessions_in_use{hsm="%s"}' % a, 'xksproxy_hsm_served_total{hsm="%s"}' % a,
         'xksproxy_hsm_served_total{hsm="%s"}' % b, 'xksproxy_hsm_sessions_in_use{hsm="%s"}' % b,
         'xksproxy_hsm_call_average_seconds{hsm="%s"}' % b]
with open(out, "a", buffering=1) as f:
    next_at = time.time()
    while True:
        t = time.time()
        try:
            values = {}
            for line in urllib.request.urlopen(url, timeout=1).read().decode().splitlines():
                name, _, value = line.rpartition(" ")
                values[name] = value
            if all(n in values for n in names):
                f.write("%.3f %s\n" % (t, " ".join(values[n] for n in names)))
        except OSError:
            pass
        next_at += 0.1
        time.sleep(max(0, next_at - time.time()))
PY
}

report=$out/failover.txt
{
  echo "# failover between two HSMs of one node (issue 16 item 4): two SoftHSMv2 tokens behind the simulated network HSM"
  echo "# latency ${latency_ms} ms, pool_size $pool per HSM, max_in_flight $max_in_flight (one module: shared), health_interval ${health_interval}s, call_timeout default (150 ms)"
  echo "# xksbench run --rate $rate --duration ${duration}s --warmup 3s --mix encrypt=70,decrypt=30 --budget $budget; A ($fault_token) faulted at ${fault_at} s, healed at ${heal_at} s"
  echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ), load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
} | tee "$report"

for fault in $faults; do
  netsim_conf "$fault" >"$dir/netsim.$fault"
  cp "$dir/netsim.healthy" "$conf"
  touch "$dir/node.log"
  log_from=$(($(wc -l <"$dir/node.log") + 1))
  start_node
  rotation=$out/$fault.rotation.txt
  : >"$rotation"
  poll "$rotation" &
  poll_pid=$!
  # The hooks switch the module's settings file (a rename: the module sees
  # a new inode) and write the time they did.
  "$dir/xksbench" run --client "$dir/data/client.json" --rate "$rate" --duration "${duration}s" --warmup 3s \
    --mix encrypt=70,decrypt=30 --budget "$budget" --quiet --out "$out/$fault" \
    --at "${fault_at}s=cp $dir/netsim.$fault $conf.new && mv $conf.new $conf && date +%s.%N >$dir/fault.time" \
    --at "${heal_at}s=cp $dir/netsim.healthy $conf.new && mv $conf.new $conf && date +%s.%N >$dir/heal.time" \
    >/dev/null || true
  sleep 1
  kill "$poll_pid" 2>/dev/null || true
  wait "$poll_pid" 2>/dev/null || true
  stop_node
  tail -n +"$log_from" "$dir/node.log" >"$out/$fault.node.log"
  if [ ! -f "$out/$fault/result.json" ] || [ ! -f "$dir/fault.time" ] || [ ! -f "$dir/heal.time" ]; then
    echo "failover ($fault): FAIL (the run or its hooks did not complete; node log:)" | tee -a "$report"
    tail -20 "$dir/node.log"
    continue
  fi
  python3 - "$out/$fault/result.json" "$rotation" "$(cat "$dir/fault.time")" "$(cat "$dir/heal.time")" "$fault" "$health_interval" "$out/$fault.node.log" <<'EOF' | tee -a "$report"
import collections, json, sys
result, rotation, t_fault, t_heal, fault, interval, node_log = sys.argv[1:]
t_fault, t_heal, interval = float(t_fault), float(t_heal), float(interval)
d = json.load(open(result))
tot, lat = d["totals"], d["totals"]["latencyMs"]
budget = d["config"]["budgetMs"]
rows = [list(map(float, l.split())) for l in open(rotation) if len(l.split()) == 8]
before = [r for r in rows if r[0] < t_fault]
in_flight = int(before[-1][3]) if before else -1
out = next((r[0] - t_fault for r in rows if r[0] >= t_fault and r[1] == 0), None)
back = next((r for r in rows if r[0] >= t_heal and r[1] == 1), None)
rejoin = back[0] - t_heal if back else None
served_after = rows[-1][4] - back[4] if back else 0
b_out = sum(1 for r in rows if r[2] != 1)
errors = ", ".join("%s %s %s%s: %d" % (e["op"], e["kind"], e.get("status", ""), " " + e["name"], e["count"]) for e in d["errors"]) or "none"
fmt = lambda s: "%.2f s" % s if s is not None else "never"
print("%s: requests %d, sent %d (%.0f/s), ok %d, errors %d [%s]" % (fault, tot["requested"], tot["offered"], tot["offeredRate"], tot["ok"], tot["errors"], errors))
print("%s: latency p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms (budget %.0f ms); xksbench verdict %s" % (fault, lat["p50"], lat["p99"], lat["p99_9"], lat["max"], budget, d["verdict"]["result"]))
sick = [r for r in rows if t_fault <= r[0] < t_heal]
if sick:
    print("%s: while A was sick, B served %.0f operations/s with %.1f of its sessions in use on average and a mean call of %.1f ms (its pool's capacity: sessions / call)" % (
        fault, (sick[-1][5] - sick[0][5]) / max(sick[-1][0] - sick[0][0], 0.001), sum(r[6] for r in sick) / len(sick), 1000 * sum(r[7] for r in sick) / len(sick)))
print("%s: A out of rotation %s after the fault, back %s after the heal, then served %d operations; B out of rotation in %d of %d polls; %s sessions of A in use at the last poll before the fault (<= 100 ms before: the calls in flight on it, sampled)" % (fault, fmt(out), fmt(rejoin), served_after, b_out, len(rows), in_flight))
# What the node logged for the requests it failed (level error: the 500s),
# by cause, so that a failure can be traced without reading the log.
causes = collections.Counter()
for line in open(node_log, errors="replace"):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("level") == "error" and "kmsRequestId" in entry:
        causes[entry.get("detail") or entry.get("reason") or "?"] += 1
if causes:
    print("%s: the node's failed requests by cause: %s" % (fault, "; ".join("%d x %s" % (n, c) for c, n in causes.most_common(5))))
reasons = []
if tot["errors"] != 0:
    reasons.append("%d failed requests (A had %d calls in flight at the fault)" % (tot["errors"], in_flight))
if lat["max"] > budget:
    reasons.append("max %.1f ms over the %.0f ms budget" % (lat["max"], budget))
if out is None:
    reasons.append("A never left the rotation")
if rejoin is None or rejoin > 3 * interval:
    reasons.append("A rejoined %s after the heal, want within %.0f s (3 x health_interval)" % (fmt(rejoin), 3 * interval))
if d["verdict"]["result"] == "INVALID":
    reasons.append("xksbench could not offer the load: " + "; ".join(d["verdict"]["reasons"]))
detail = "; ".join(reasons) if reasons else "0 failed of %d, max %.1f ms <= %.0f ms, out in %s, rejoined in %s <= %.0f s" % (tot["requested"], lat["max"], budget, fmt(out), fmt(rejoin), 3 * interval)
print("failover (%s): %s (%s)" % (fault, "FAIL" if reasons else "PASS", detail))
EOF
  rm -f "$dir/fault.time" "$dir/heal.time"
done
echo "report: $report"
