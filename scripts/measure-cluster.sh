#!/usr/bin/env bash
# Measures, on a local 3-node dev cluster, how long the kill switch takes to
# reach every node and how long a leader loss leaves the cluster without a
# leader: five runs each, medians printed. Loopback only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
dir=$(mktemp -d /tmp/xksproxy-measure.XXXXXX)
port=${PORT:-39443}
go build -o "$dir/xksproxy" ./cmd/xksproxy
bin="$dir/xksproxy"
setsid "$bin" dev --nodes 3 --data "$dir/data" --listen "127.0.0.1:$port" >"$dir/dev.out" 2>"$dir/dev.err" &
devpid=$!
cleanup() { kill -- -"$devpid" 2>/dev/null || true; pkill -f "serve --config $dir/data" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 240); do [ -f "$dir/data/client.json" ] && break; sleep 0.5; done
[ -f "$dir/data/client.json" ] || { echo "cluster did not start"; tail -20 "$dir/dev.err"; exit 1; }

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
admin() { (set -a; . "$dir/data/node$1/admin.env"; shift; "$bin" "$@"); }

echo "kill switch: key disable through node 2, time until the last node confirmed (ms)"
for i in $(seq 1 "$runs"); do
  ms=$(admin 2 key disable demo demo-key --json | json 'max(a["afterNanos"] for a in d["acks"])/1e6 if d["confirmed"]==d["nodes"]==3 else "unconfirmed"')
  admin 3 key enable demo demo-key --json >/dev/null
  echo "  run $i: $ms"; echo "$ms" >>"$dir/disable.txt"
done
echo "  median: $(median <"$dir/disable.txt") ms"

echo "leader failover: SIGKILL the leader, time until another node reports a new leader (ms)"
for i in $(seq 1 "$runs"); do
  leader=$(admin 1 cluster status --json 2>/dev/null | json 'd["leader"]["id"]' || admin 2 cluster status --json | json 'd["leader"]["id"]')
  n=${leader#node}; other=$(( n % 3 + 1 ))
  start=$(date +%s%N)
  kill -9 "$(cat "$dir/data/node$n/pid")"
  for _ in $(seq 1 600); do
    new=$(admin "$other" cluster status --json 2>/dev/null | json 'd["leader"]["id"] if d["leader"] else ""' || true)
    [ -n "$new" ] && [ "$new" != "$leader" ] && break
    sleep 0.02
  done
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "  run $i: $ms (old $leader, new $new)"; echo "$ms" >>"$dir/failover.txt"
  setsid "$bin" serve --config "$dir/data/node$n/node.toml" >>"$dir/restarted.err" 2>&1 &
  echo $! >"$dir/data/node$n/pid"
  for _ in $(seq 1 300); do
    ready=$(admin "$other" cluster status --json 2>/dev/null | json 'all(x["ready"] for x in d["nodes"])' || echo False)
    [ "$ready" = True ] && break
    sleep 0.1
  done
done
echo "  median: $(median <"$dir/failover.txt") ms"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%Y-%m-%d)"
