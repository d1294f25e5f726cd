# Sourced by the bench scripts that need a node limited to part of a CPU, as
# it would be in a container with a CPU limit. Needs root and a writable cpu
# cgroup controller (v1 or v2).

# cpu_cgroup NAME CPU PERIOD_US: creates the cgroup NAME limited to CPU
# cores (e.g. 0.25) over periods of PERIOD_US, and prints its directory;
# prints nothing and fails when no cpu controller is writable. A short
# period keeps each throttled stall short next to the latency budget.
cpu_cgroup() {
  local quota
  quota=$(awk -v c="$2" -v p="$3" 'BEGIN {printf "%d", c * p}')
  if [ -w /sys/fs/cgroup/cpu/cgroup.procs ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    mkdir "/sys/fs/cgroup/cpu/$1" || return 1
    echo "$3" >"/sys/fs/cgroup/cpu/$1/cpu.cfs_period_us"
    echo "$quota" >"/sys/fs/cgroup/cpu/$1/cpu.cfs_quota_us"
    echo "/sys/fs/cgroup/cpu/$1"
  elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null && [ -w /sys/fs/cgroup/cgroup.procs ]; then
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    mkdir "/sys/fs/cgroup/$1" || return 1
    echo "$quota $3" >"/sys/fs/cgroup/$1/cpu.max"
    echo "/sys/fs/cgroup/$1"
  else
    return 1
  fi
}

# in_cpu_cgroup CGROUP CORE COMMAND... &: runs COMMAND in CGROUP, pinned to
# CORE, in a new session (so that kill -- -PID stops it and its children).
# Start it in the background: it replaces the background subshell, so $! is
# COMMAND's pid. The shell joins the cgroup first, so that everything it
# starts is born in it.
in_cpu_cgroup() {
  exec setsid sh -c 'echo $$ >"$1/cgroup.procs"; core=$2; shift 2; exec taskset -c "$core" "$@"' sh "$@"
}
