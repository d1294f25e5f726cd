#!/bin/sh
# Enforces DESIGN.md's import rules between the top-level packages, in the
# code and in its tests: `go list -test` counts the imports of _test.go
# files, which a plain `go list -deps` does not see.
set -eu
mod=$(go list -m)
fail=0
deps() { # [-test] package: sets imports to the module's packages it depends on
  out=$(go list -deps -f '{{.ImportPath}}' "$@") || { echo "go list $* failed"; exit 1; }
  # -test names a package built for a test "p [q.test]": p is what counts.
  imports=$(echo "$out" | sed 's/ \[.*//' | grep "^$mod/" | sort -u || true)
}
check() { # what, package, forbidden import prefix...: tests $imports
  what=$1 pkg=$2; shift 2
  for bad in "$@"; do
    if echo "$imports" | grep -q "^$mod/$bad\(/\|$\)"; then
      echo "import rule broken: $pkg's $what must not import $bad"; fail=1
    fi
  done
}
deny() { # package, forbidden import prefix...: neither its code nor its tests
  deps "./$1/..."
  check code "$@"
  deps -test "./$1/..."
  check tests "$@"
}
deny_code() { # package, forbidden import prefix...: its code; its tests may
  deps "./$1/..."
  check code "$@"
}
deny_only() { # package alone (not its subpackages), forbidden import prefix...
  deps "./$1"
  check code "$@"
  deps -test "./$1"
  check tests "$@"
}
deny fsm hsm xksapi cluster admin bench xksclient
deny hsm fsm xksapi cluster admin bench xksclient
deny xksapi cluster admin bench
# The test client is an independent client (its own SigV4 signer, apart
# from xksapi/sigv4's verifier) so that a bug cannot hide by being shared;
# bench may use it (client.json and the signer), and nothing of the server.
deny xksclient fsm hsm xksapi cluster admin bench cmd
deny bench fsm hsm xksapi cluster admin cmd
if [ -d cluster ]; then
  deny cluster bench
  # cluster's tests run every node's real data plane, and call the admin API
  # through its client, to prove end to end that a committed disable is
  # refused and every ciphertext decrypts on every node (DESIGN.md,
  # invariants 1 and 2); its code never serves the one nor imports the other.
  deny_code cluster xksapi admin
fi
# The operator API's server builds on cluster and fsm; the package with the
# routes, types and client imports none of ours, so that cluster's own
# tests (and any tool) can call the API without the server.
deny admin xksapi bench
deny_only admin cluster fsm hsm xksapi bench
# The node-to-node protocol (routes, messages, the call) is cluster's to
# serve and call; it knows nothing of a node, nor of the operator API.
deny internal/noderpc fsm hsm xksapi cluster admin bench xksclient cmd
# The log bridge sits below everything that logs: no server package.
deny internal/logbridge fsm hsm xksapi cluster admin bench cmd
# The build identity is read by the data plane and the CLI alike: a leaf.
deny internal/buildinfo fsm hsm xksapi cluster admin bench cmd
# The fault suite is a black-box user: the binary, its files, the CLI, SigV4.
deny faults fsm hsm xksapi cluster admin cmd
exit $fail
