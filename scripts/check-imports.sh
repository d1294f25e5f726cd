#!/bin/sh
# Enforces DESIGN.md's import rules between the top-level packages.
set -eu
mod=$(go list -m)
fail=0
deny() { # package, forbidden import prefix...
  pkg=$1; shift
  imports=$(go list -deps -f '{{.ImportPath}}' "./$pkg/..." 2>/dev/null | grep "^$mod/" || true)
  for bad in "$@"; do
    if echo "$imports" | grep -q "^$mod/$bad\(/\|$\)"; then
      echo "import rule broken: $pkg must not import $bad"; fail=1
    fi
  done
}
deny fsm hsm xksapi cluster bench
deny hsm fsm xksapi cluster bench
deny xksapi cluster bench
deny bench fsm hsm xksapi cluster
[ ! -d cluster ] || deny cluster xksapi bench
# The log bridge sits below everything that logs: no server package.
deny internal/logbridge fsm hsm xksapi cluster admin bench cmd
# The fault suite is a black-box user: the binary, its files, the CLI, SigV4.
deny faults fsm hsm xksapi cluster cmd
exit $fail
