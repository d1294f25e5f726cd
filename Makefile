# xksproxy — run `make help` for the targets.
GO      ?= go
DATA    ?= .xksproxy-dev
LISTEN  ?= 127.0.0.1:8443
BIN     := bin/xksproxy

# The build's identity (xksproxy version, xksproxy_build_info): the release
# in VERSION, the commit, whether the tree had uncommitted changes, and the
# build date (SOURCE_DATE_EPOCH when set, for reproducible builds).
# make dist is reproducible: unless SOURCE_DATE_EPOCH says otherwise, its
# build date is the commit's, as its archives' timestamps are (scripts/dist.sh).
ifneq ($(filter dist,$(MAKECMDGOALS)),)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null)
export SOURCE_DATE_EPOCH
endif
VERSION    := $(shell cat VERSION)
COMMIT     := $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED   := $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true)
BUILD_DATE := $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
BUILDINFO  := github.com/xksproxy/xksproxy/internal/buildinfo
LDFLAGS    := -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) \
              -X $(BUILDINFO).modified=$(MODIFIED) -X $(BUILDINFO).date=$(BUILD_DATE)

.DEFAULT_GOAL := help
.PHONY: help deps deps-wrk build dist test-package netsim run test fuzz faults check clean bench bench-ratio bench-efficiency bench-overload bench-hsm bench-failover

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

deps: ## Install SoftHSMv2, OpenSC and curl when missing (Debian/Ubuntu)
	@scripts/install-deps.sh

build: ## Build bin/xksproxy
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/xksproxy

DIST ?= dist
dist: build ## Build DIST/xksproxy_VERSION_ARCH.deb (dpkg-deb) and DIST/xksproxy-VERSION-linux-ARCH.tar.gz
	@scripts/dist.sh $(BIN) $(VERSION) $(DIST)

test-package: deps ## Install the .deb on this machine, run it as its user on SoftHSMv2, purge it (root; ~1 min)
	XKSPROXY_PACKAGE_TEST=1 $(GO) test -count=1 -v -run '^TestDebianPackage$$' -timeout 10m ./cmd/xksproxy/

NETSIM := bin/libnetsimhsm.so
netsim: $(NETSIM) ## Build the simulated network HSM (a PKCS#11 module over SoftHSMv2; needs gcc)

# The hsm package's tests build the same module themselves (hsm/netsim.Build, same flags).
$(NETSIM): hsm/netsim/csrc/netsim.c hsm/netsim/csrc/pkcs11.h hsm/netsim/csrc/pkcs11t.h hsm/netsim/csrc/pkcs11f.h
	@mkdir -p bin
	$${CC:-gcc} -shared -fPIC -O2 -Wall -fvisibility=hidden -o $@ hsm/netsim/csrc/netsim.c -ldl -lpthread

run: deps build ## Start a single-node development proxy on SoftHSMv2 (DATA=dir LISTEN=addr)
	$(BIN) dev --exit-with-parent --data $(DATA) --listen $(LISTEN)

test: deps ## Run every test (real SoftHSMv2, real TLS and SigV4 on loopback), then fuzz briefly
	$(GO) test -race -count=1 -p 1 -timeout 14m ./...
	@$(MAKE) --no-print-directory fuzz FUZZ_DECODE=50000x FUZZ_RESTORE=2000x FUZZFLAGS=-parallel=1

# make test fuzzes for a count of inputs, not a time: Go 1.26's fuzzing
# coordinator can fail a timed run at its deadline with a bare "context
# deadline exceeded" (golang/go#75804, fixed in Go 1.27), and did once here.
FUZZTIME     ?= 2m
FUZZ_DECODE  ?= $(FUZZTIME)
FUZZ_RESTORE ?= $(FUZZTIME)
FUZZFLAGS    ?=
fuzz: ## Fuzz the FSM's command decoder and snapshot restore, FUZZTIME each (default 2m)
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZ_DECODE) $(FUZZFLAGS) ./fsm
	$(GO) test -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZ_RESTORE) $(FUZZFLAGS) ./fsm

faults: deps ## The fault suite, every scenario, one VERDICT line each (needs root: namespaces, iptables, loop devices; ~13 min)
	XKSPROXY_FAULTS=full $(GO) test -count=1 -v -timeout 45m ./faults/

check: ## gofmt, go vet, go.mod tidiness and the package import rules
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	@cp go.mod /tmp/xksproxy.go.mod && cp go.sum /tmp/xksproxy.go.sum && $(GO) mod tidy && \
	  if ! diff -q go.mod /tmp/xksproxy.go.mod >/dev/null || ! diff -q go.sum /tmp/xksproxy.go.sum >/dev/null; then \
	    echo "go.mod/go.sum were not tidy (now fixed; commit them)"; exit 1; fi
	@scripts/check-imports.sh

bench: deps ## Issue 6's four targets and issue 16's efficiency and failover, short (20 s runs); reports under bench/results/ (needs wrk)
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory deps-wrk
	DURATION=20s scripts/bench-all.sh

bench-ratio: deps ## Proxy vs bare fasthttp+SoftHSMv2 baseline under wrk; prints the ratio (needs wrk)
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory deps-wrk
	scripts/bench-ratio.sh

bench-efficiency: deps ## Server CPU per encrypt, proxy vs bare baseline, at one constant rate from xksbench (RATE=4000; needs perf; ~2 min)
	scripts/bench-efficiency.sh

bench-overload: deps ## Target 4: 3x overload with the node limited to 0.25 CPU by a cgroup (needs root)
	scripts/bench-overload.sh

bench-hsm: deps ## Latency hiding on the simulated network HSM: rate and p99 against pool_size and HSM latency (needs wrk, gcc; ~3 min)
	@command -v wrk >/dev/null || $(MAKE) --no-print-directory deps-wrk
	scripts/bench-hsm.sh

bench-failover: deps ## Failover between two HSMs of one node under xksbench: A hangs, then errors, then heals (needs gcc; ~2 min)
	scripts/bench-failover.sh

deps-wrk:
	@sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; $$sudo apt-get install -y -qq wrk

clean: ## Remove build output and the development data directory
	rm -rf bin $(DIST) $(DATA)
