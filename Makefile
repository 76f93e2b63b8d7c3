# The two commands of the README:
#   make demo   set up (if needed) and run `zo-hpc train inputs/demo.toml`
#   make test   set up (if needed) and run the whole test suite
# Everything they need is installed by scripts/setup.sh (apt packages, .venv with torch).

SHELL := /bin/bash
# scripts/cargo.sh points tch at the libtorch of the torch wheel in .venv.
CARGO := scripts/cargo.sh
BIN := target/release/zo-hpc

.PHONY: setup build demo test test-rust lint bench clean-runs

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --bins

demo: build
	$(BIN) train inputs/demo.toml

# Passive OpenMP waits: test binaries that call libtorch directly would otherwise
# spin next to the MPI ranks other tests start (zo-hpc itself sets this).
test: build
	@ZO_SETUP_SLURM=1 bash scripts/setup.sh
	OMP_WAIT_POLICY=PASSIVE $(CARGO) test --release -- --test-threads=1

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

bench: build
	target/release/zo-bench

clean-runs:
	rm -rf runs
