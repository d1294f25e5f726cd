#!/bin/sh
# Enforces DESIGN.md's import rules between the top-level packages.
set -eu
mod=$(go list -m)
fail=0
deny() { # package (with its subpackages; "pkg/." for pkg alone), forbidden import prefix...
  pkg=$1; shift
  pattern="./$pkg/..."
  case $pkg in */.) pattern="./$pkg" ;; esac
  imports=$(go list -deps -f '{{.ImportPath}}' "$pattern" 2>/dev/null | grep "^$mod/" || true)
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
[ ! -d cluster ] || deny cluster xksapi bench admin
# The operator API's server builds on cluster and fsm; the package with the
# routes, types and client imports none of ours, so that cluster's own
# tests (and any tool) can call the API without the server.
deny admin xksapi bench
deny admin/. cluster fsm hsm xksapi bench
# The fault suite is a black-box user: the binary, its files, the CLI, SigV4.
deny faults fsm hsm xksapi cluster cmd
exit $fail
