# sbps-marshal — build, test and run the agent.
#
# The first two targets a newcomer needs: `make demo` and `make test`.

GO        ?= go
BIN       := bin
TOOLS     := $(CURDIR)/.tools/bin
VERSITYGW_VERSION ?= v1.8.0
# nfpm v2.46+ needs go.digitalxero.dev modules the Go proxy does not serve here.
NFPM_VERSION ?= v2.45.2
# The binary's version: `git describe` of the newest v* tag (v2.0.0, v2.0.0-3-gabc1234).
# The packages' version derives from the same tag: PKG_VERSION below.
VERSION   ?= $(shell git describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X github.com/sbps-marshal/sbps-marshal/internal/version.Version=$(VERSION) \
             -X github.com/sbps-marshal/sbps-marshal/internal/version.Commit=$(COMMIT)

export PATH := $(TOOLS):$(PATH)

.PHONY: all build test test-kernel test-deps test-short bench bench-kernel bench-kernel-doc demo lint tools fuzz clean rpm deb package share

all: build

## build: static binaries (CGO_ENABLED=0: SLES 15 SP4/SP5 have glibc 2.31), without build paths.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## test: unit and integration tests (race detector on) against real servers, then the
## real-kernel tests (test-kernel). Installs missing Debian packages first (test-deps).
test: test-deps tools
	$(GO) test -race -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory test-kernel

## test-deps: install the Debian packages the tests need (as root), or say what to install.
test-deps:
	@scripts/test-deps

## test-kernel: the tests that run on the real kernel LIO, in User-Mode Linux (package uml):
## real targetcli-fb, rtslib-fb and open-iscsi. No race detector: its shadow memory
## does not fit a UML process.
## The packages: uml itself and every package whose tests use it.
KERNEL_PKGS = $(shell $(GO) list -tags kernel -f '{{.ImportPath}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./... | awk '$$1 ~ /\/uml$$/ || / github.com\/sbps-marshal\/sbps-marshal\/uml( |$$)/ {print $$1}')
test-kernel: test-deps tools
	$(GO) test -tags kernel -count=1 -timeout 40m $(KERNEL_PKGS)

## test-short: unit tests only, no external servers.
test-short:
	$(GO) test -short -count=1 ./...

## bench: fleet-scale benchmarks (issue 10): the Go benchmarks of ./bench (in-process
## resync, event pass, saveconfig.json parse), then cmd/sbps-marshal-bench on the rig;
## writes docs/BENCHMARKS.md. BENCH_SCALE lists the image counts (BENCH_SCALE=100,1000
## shrinks it); BENCH_FLAGS passes more driver flags (see sbps-marshal-bench -h).
BENCH_SCALE ?= 100,1000,10000
BENCH_FLAGS ?=
bench: build tools
	@mkdir -p $(BIN)/bench
	$(GO) test -run '^$$' -bench . -benchtime 2x -timeout 15m ./bench/ | tee $(BIN)/bench/go-bench.txt
	$(BIN)/sbps-marshal-bench -scale $(BENCH_SCALE) -profile-dir $(BIN)/bench -go-bench $(BIN)/bench/go-bench.txt -out docs/BENCHMARKS.md $(BENCH_FLAGS)
	@echo "bench: the same modes on the real kernel LIO (User-Mode Linux): make bench-kernel (docs/BENCHMARKS-KERNEL.md)"

## bench-kernel: per-mode costs on the real kernel LIO in User-Mode Linux (issue 18): one apply
## of 1 and 50 changes in oneshot, batch and targetclid modes with KERNEL_LUNS LUNs present,
## the agent's read of the real saveconfig.json (e2e/lio BenchmarkModes), and upload -> LUN
## in saveconfig.json / readable by a logged-in initiator (e2e/initiator TestComputeNodeView);
## writes that output to docs/bench-kernel/kernel.txt and docs/BENCHMARKS-KERNEL.md from it.
## KERNEL_SKIP lists rows not run (LUNS/MODE/CHANGES): at 1,000 LUNs in UML one apply of one
## change takes over a minute, a batch of 50 ran past 2 minutes, and one-shot x 50 is estimated
## at over an hour (docs/BENCHMARKS-KERNEL.md). About 25 minutes as set.
## bench-kernel-doc regenerates the doc from KERNEL_BENCH_FILES (the committed runs).
KERNEL_LUNS ?= 100,1000
KERNEL_SKIP ?= 1000/oneshot/50,1000/batch/50,1000/daemon/50
KERNEL_BENCH_OUT ?= docs/bench-kernel/kernel.txt
KERNEL_BENCH_FILES ?= docs/bench-kernel/kernel-100.txt,docs/bench-kernel/kernel-1000-timeout.txt,docs/bench-kernel/kernel-1000.txt,docs/bench-kernel/kernel-initiator.txt
bench-kernel: test-deps build
	@mkdir -p $(dir $(KERNEL_BENCH_OUT))
	@{ echo "kernel-bench: command make bench-kernel KERNEL_LUNS=$(KERNEL_LUNS) KERNEL_SKIP=$(KERNEL_SKIP)"; \
	  echo "kernel-bench: machine $$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $$(awk '/MemTotal/ {printf "%.0f GB", $$2/1048576}' /proc/meminfo), host kernel $$(uname -r)"; \
	  uptime | sed 's/^/kernel-bench: host-load-before /'; \
	  SBPS_UML_TIMEOUT=80m $(GO) test -tags kernel -count=1 -run '^$$' -bench Modes -benchtime 1x -timeout 85m ./e2e/lio/ -modes.luns=$(KERNEL_LUNS) -modes.skip=$(KERNEL_SKIP); \
	  $(GO) test -tags kernel -count=1 -run '^TestComputeNodeView$$' -v -timeout 20m ./e2e/initiator/; \
	  uptime | sed 's/^/kernel-bench: host-load-after /'; } 2>&1 | tee $(KERNEL_BENCH_OUT)
	@if grep -q '^FAIL' $(KERNEL_BENCH_OUT); then echo "bench-kernel: a run failed (see $(KERNEL_BENCH_OUT)); docs/BENCHMARKS-KERNEL.md not rewritten"; exit 1; fi
	$(BIN)/sbps-marshal-bench -kernel-bench $(KERNEL_BENCH_OUT) -kernel-out docs/BENCHMARKS-KERNEL.md

bench-kernel-doc:
	$(GO) run ./cmd/sbps-marshal-bench -kernel-bench $(KERNEL_BENCH_FILES) -kernel-out docs/BENCHMARKS-KERNEL.md

## demo: run the agent's main job against the embedded rig.
demo: build tools
	$(GO) run ./cmd/sbps-marshal-demo

lint:
	$(GO) vet ./...
	$(GO) vet -tags kernel ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## tools: project-local tools used by the integration tests (versitygw, a real S3 server).
tools: $(TOOLS)/versitygw $(TOOLS)/nfpm

$(TOOLS)/versitygw:
	GOBIN=$(TOOLS) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(TOOLS)/nfpm:
	GOBIN=$(TOOLS) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

## rpm, deb, package: packages into dist/ with nfpm (deploy/nfpm.yaml): binary, unit, env file,
## bash completion, man page, docs.
# The package version (deploy/scripts/pkg-version): v2.0.0 -> 2.0.0; 3 commits
# later -> 2.0.0+git.3.gabc1234 (after 2.0.0, before 2.0.1 for rpm and dpkg);
# no tag (a shallow clone) -> 0.0.0~git.gabc1234, below every release, with a
# warning. Deferred (=) so that only the package targets run it.
PKG_VERSION ?= $(shell deploy/scripts/pkg-version)
DIST      := dist
SHARE     := $(BIN)/share

## share: the bash completion and the man page, generated by the built binary, for the packages.
share: build
	@mkdir -p $(SHARE)/bash-completion $(SHARE)/man
	$(BIN)/sbps-marshal completion bash > $(SHARE)/bash-completion/sbps-marshal
	$(BIN)/sbps-marshal man > $(SHARE)/man/sbps-marshal.8
	gzip -n -9 -f $(SHARE)/man/sbps-marshal.8

rpm: share $(TOOLS)/nfpm
	@mkdir -p $(DIST)
	VERSION='$(PKG_VERSION)' $(TOOLS)/nfpm package --config deploy/nfpm.yaml --packager rpm --target $(DIST)/

deb: share $(TOOLS)/nfpm
	@mkdir -p $(DIST)
	VERSION='$(PKG_VERSION)' $(TOOLS)/nfpm package --config deploy/nfpm.yaml --packager deb --target $(DIST)/

package: rpm deb

## fuzz: run each fuzz target for FUZZTIME (default 60s).
FUZZTIME ?= 60s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN) dist

## soak: the agent on the rig under uploads, tags, untags and deletes with random faults (NATS, IMS, targetcli, S3 via rig.FaultProxy), for SOAK_DURATION (default 3m); fails if a LUN was wrongly removed or the state does not converge.
SOAK_DURATION ?= 3m
.PHONY: soak
soak: tools
	SOAK_DURATION=$(SOAK_DURATION) $(GO) run ./cmd/sbps-marshal-soak
