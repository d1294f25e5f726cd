#!/usr/bin/env bash
# Issue 6, target 4: overload at 3x the sustainable rate. Loopback only;
# every run bounded in time.
#
# The generator spends more CPU per request than the node (TLS, SigV4 and
# checking every answer), so on a machine whose cores it shares it cannot
# offer three times what the node sustains there. The node therefore runs
# as it would in a container with a CPU limit: in its own cgroup, limited to
# NODE_CPU cores (default 0.25) and pinned to core 0; the generator runs on
# the other cores. Sharing core 0 with the generator added stalls of its own
# to the node (at 500/s: p99 18 ms shared, 2 ms apart), which are the rig's,
# not the node's. The sustainable rate is measured under that same limit.
# OVERLOAD sets the multiple of it offered (default 3; issue 16 asks 2, and
# that at least half the sustainable rate is still served).
#
# Needs root and a writable cpu cgroup controller (v1 or v2).
set -euo pipefail
cd "$(dirname "$0")/.."
node_cpu=${NODE_CPU:-0.25}
factor=${OVERLOAD:-3} # the offered rate, as a multiple of the sustainable one
overload_conns=${OVERLOAD_CONNECTIONS:-256}
port=${PORT:-49443}
out=${OUT:-bench/results/overload-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
[ "$(nproc)" -ge 2 ] || { echo "target 4 needs two cores: one for the node, pinned, and room for the generator"; exit 1; }
taskset -c "0" true && taskset -c "1-$(($(nproc) - 1))" true ||
  { echo "the node goes on CPU 0 and the generator on CPUs 1-$(($(nproc) - 1)): this process may not use them"; exit 1; }
work=$(mktemp -d /tmp/xksproxy-overload.XXXXXX)
dev= cg=
cleanup() {
  [ -n "$dev" ] && { kill -- -"$dev" 2>/dev/null || true; sleep 1; }
  [ -n "$cg" ] && { rmdir "$cg" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
group=xksproxy-bench-$$
# A 10 ms period keeps each throttled stall short next to the 250 ms budget.
period=10000
quota=$(awk -v c="$node_cpu" -v p="$period" 'BEGIN {printf "%d", c * p}')
if [ -w /sys/fs/cgroup/cpu/cgroup.procs ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
  cg=/sys/fs/cgroup/cpu/$group
  mkdir "$cg"
  echo "$period" >"$cg/cpu.cfs_period_us"
  echo "$quota" >"$cg/cpu.cfs_quota_us"
elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null && [ -w /sys/fs/cgroup/cgroup.procs ]; then
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
  cg=/sys/fs/cgroup/$group
  mkdir "$cg"
  echo "$quota $period" >"$cg/cpu.max"
else
  echo "no writable cpu cgroup controller (run as root on a machine with cgroup v1 or v2 cpu): target 4 cannot be measured here"
  exit 1
fi
go build -o "$work/xksproxy" ./cmd/xksproxy
go build -o "$work/xksbench" ./cmd/xksbench

# The shell joins the cgroup first so that dev and its node are born in it.
setsid sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec taskset -c 0 "$@"' sh "$cg" \
  "$work/xksproxy" dev --data "$work/dev" --listen "127.0.0.1:$port" >"$work/dev.out" 2>"$work/dev.log" &
dev=$!
for _ in $(seq 1 240); do [ -f "$work/dev/client.json" ] && break; sleep 0.5; done
[ -f "$work/dev/client.json" ] || { echo "dev did not start"; tail -20 "$work/dev.log"; exit 1; }

bench() { taskset -c "1-$(($(nproc) - 1))" "$work/xksbench" "$@" --client "$work/dev/client.json" --mix encrypt=100 --quiet >/dev/null 2>&1 || true; }
field() { python3 -c "
import json,sys
d=json.load(open(sys.argv[1]+'/result.json'))
print(eval(sys.argv[2], {'d': d, 't': d['totals']}))" "$@"; }
summary() { field "$1" "'%-4s offered %.0f/s of %.0f/s requested, answered %.0f/s OK, errors %d, p50 %.2f p99 %.2f max %.2f ms' % (d['verdict']['result'], t['offeredRate'], t['requestedRate'], t['achievedRate'], t['errors'], t['latencyMs']['p50'], t['latencyMs']['p99'], t['latencyMs']['max'])"; }

echo "node: one process limited to $node_cpu CPU (cgroup $cg, ${period}us period), pinned to core 0; generator on cores 1-$(($(nproc) - 1))"
echo "== sustainable rate of the limited node (find-max, budget 250ms, no errors allowed)"
# 10 s steps: on a noisy host a 5 s step can pass well above what the node
# sustains for longer.
bench find-max --start-rate 500 --factor 1.25 --step-duration 10s --warmup 2s --max-steps 12 --out "$out/findmax"
max=$(field "$out/findmax" "int(d['findMax']['maxSustainableRatePerKey'])" 2>/dev/null || echo 0)
[ "$max" -gt 0 ] || { echo "find-max found no sustainable rate"; exit 1; }
echo "highest sustainable rate: $max/s"
field "$out/findmax" "'  steps that failed: ' + ('; '.join('%.0f/s: %s' % (s['ratePerKey'], ', '.join('%d %s %s' % (e['count'], e.get('status', ''), e.get('sample') or e.get('name') or e.get('kind')) for e in s.get('errorKinds', [])) or ', '.join(s['reasons'])) for s in d['findMax']['steps'] if s['verdict'] != 'PASS') or 'none')"

echo "== not overload: 64 busy connections at 80% of it ($((max * 8 / 10))/s) for 15s, no 429 allowed"
bench run --rate $((max * 8 / 10)) --duration 15s --warmup 2s --connections 64 --out "$out/busy-64"
summary "$out/busy-64"

echo "== overload: ${factor}x ($((max * factor))/s) for 15s over $overload_conns connections; every answer within 250ms, excess 429"
# Enough connections that the excess queues at the node, where it can be
# shed, rather than in the generator.
bench run --rate $((max * factor)) --duration 15s --warmup 3s --connections "$overload_conns" --max-in-flight 16384 --max-error-rate 1 --out "$out/overload"
summary "$out/overload"
field "$out/overload" "'  errors: ' + ', '.join('%d %s %s' % (e['count'], e.get('status', ''), e.get('name') or e.get('kind')) for e in d['errors'])"
field "$out/overload" "'  valid: offered %.1f%% of ${factor}x' % (100 * t['offeredRate'] / $((max * factor)))"

echo "== recovery: half the sustainable rate ($((max / 2))/s) at once, 10s, no warm-up, no error allowed"
bench run --rate $((max / 2)) --duration 10s --warmup 0s --out "$out/recovery"
summary "$out/recovery"
python3 - "$out" "$factor" "$max" <<'VERDICT'
import json, sys
out, factor, sustainable = sys.argv[1], sys.argv[2], float(sys.argv[3])
load = lambda name: json.load(open(f"{out}/{name}/result.json"))
busy, over, rec = load("busy-64"), load("overload"), load("recovery")
problems = []
if busy["totals"]["errors"]:
    problems.append(f"{busy['totals']['errors']} errors with 64 busy connections below the sustainable rate")
if over["verdict"]["result"] == "INVALID" or over["totals"]["offeredRate"] < 0.99 * over["totals"]["requestedRate"]:
    print(f"target 4: INVALID (the {factor}x load could not be offered in full)")
    sys.exit(0)
if over["totals"]["latencyMs"]["max"] > 250:
    problems.append(f"an answer under overload took {over['totals']['latencyMs']['max']:.0f} ms")
others = sum(e["count"] for e in over["errors"] if e.get("name") != "ThrottlingException")
if others:
    problems.append(f"{others} errors under overload other than 429 ThrottlingException")
# Issue 16: at least half the sustainable rate still served under overload.
served = over["totals"]["achievedRate"]
print(f"served under overload: {served:.0f}/s = {served / sustainable:.2f} of the sustainable {sustainable:.0f}/s (want >= 0.50)")
if served < 0.5 * sustainable:
    problems.append(f"only {served:.0f}/s served under overload, under half of {sustainable:.0f}/s")
# Back to full service within 1 s: the recovery run starts as the overload
# ends, with no warm-up, so its first second is the second after the drop.
if rec["totals"]["errors"] or rec["verdict"]["result"] != "PASS":
    problems.append("recovery was not clean")
print("target 4: " + ("FAIL: " + "; ".join(problems) if problems else "PASS"))
VERDICT
echo "reports: $out   ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%dT%H:%MZ))"
