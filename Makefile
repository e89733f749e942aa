# kiln — `make demo` runs the main job on the built-in example, `make test` proves it.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build deps test-deps test unit e2e demo bench fuzz fuzz-short vet clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/kiln ./cmd/kiln

# deps installs the system packages kiln needs (as root), or says which to install.
deps:
	@sh scripts/deps.sh

vet:
	gofmt -l . | (! grep .) || (echo "gofmt needed on the files above"; exit 1)
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/ ./libvirthost/

# unit and e2e print every skipped test with its reason at the end
# (scripts/gotest.sh), so a skip is never read as a pass.
unit:
	GO=$(GO) sh scripts/gotest.sh -count=1 ./...

# e2e boots real VMs (TCG where there is no KVM; its files build with -tags
# e2e only); the base image is cached
# in $$KILN_HOME or the XDG cache between runs.
e2e: build
	GO=$(GO) sh scripts/gotest.sh -v -count=1 -tags e2e -timeout 75m ./e2e/
	GO=$(GO) sh scripts/gotest.sh -v -count=1 -tags e2e -timeout 30m -run TestDebianInstanceOnLibvirt ./libvirthost/

# test-deps installs the servers the tests run (docker-registry, libvirt).
test-deps:
	@sh scripts/test-deps.sh

test: deps test-deps vet build unit fuzz-short e2e

demo: deps build
	sh scripts/demo.sh

# fuzz runs every fuzz target for FUZZTIME; make test runs them briefly
# (their seeds in testdata/fuzz, then 10000 new inputs each: a count, not
# a duration, so a slow machine takes longer instead of failing).
FUZZTIME ?= 10s
fuzz:
	sh scripts/fuzz.sh $(FUZZTIME)

fuzz-short:
	sh scripts/fuzz.sh 10000x

# bench measures builds, readiness, sizes and fleets with real VMs and
# writes docs/benchmarks.md (see bench/method.md; BENCH_* variables tune it).
bench: deps build
	KILN_BENCH=1 $(GO) test -count=1 -v -timeout 90m -run '^TestBench$$' ./bench/

clean:
	rm -rf bin
