# Sourced by the bench scripts that run a node from a configuration of their
# own. prepare_dev_node DIR PORT runs DIR/xksproxy dev until it has written
# DIR/data (token, keys, credential, TLS, node.toml, client.json), then stops
# it, so that the script can start `xksproxy serve` from that node.toml with
# its changes. dev's pid goes into the caller's pids array, which its exit
# trap kills. Loopback only.
prepare_dev_node() {
  setsid "$1/xksproxy" dev --data "$1/data" --listen "127.0.0.1:$2" >"$1/dev.out" 2>"$1/dev.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 120); do [ -f "$1/data/client.json" ] && break; sleep 0.5; done
  if [ ! -f "$1/data/client.json" ]; then
    kill -- -"$pid" 2>/dev/null || true
    echo "xksproxy dev did not come up; see its log:"
    tail -20 "$1/dev.log"
    return 1
  fi
  kill -- -"$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
}
