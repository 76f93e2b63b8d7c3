# The two commands of the README:
#   make demo   set up (if needed) and run `zo-hpc train inputs/demo.toml`
#   make test   set up (if needed) and run the whole test suite
# Everything they need is installed by scripts/setup.sh (apt packages, .venv with torch).

SHELL := /bin/bash
# scripts/cargo.sh points tch at the libtorch of the torch wheel in .venv.
CARGO := scripts/cargo.sh
BIN := target/release/zo-hpc

.PHONY: setup build demo test test-rust lint bench moses clean-runs

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

# The JT-VAE pretrained on MOSES (issue 8): fetches MOSES' training set (PyPI molsets
# 0.3.1) the first time, prepares and trains on NP ranks. Stops cleanly after
# TIME_LIMIT (exit 75); run it again to continue (see README, "Pretraining on MOSES").
MOSES_CONFIG ?= inputs/table1/zinc_moses250k.toml
NP ?= 2
TIME_LIMIT ?= 24h
moses: build
	bash scripts/fetch_moses.sh
	@out=$$(sed -n 's/^out_dir *= *"\(.*\)"/\1/p' $(MOSES_CONFIG) | head -1); \
	case "$$out" in /*) ;; *) out=$$(dirname $(MOSES_CONFIG))/$$out ;; esac; \
	resume=$$(ls $$out/*/checkpoint.h5 >/dev/null 2>&1 && echo --resume); \
	echo "jobs/mpirun.sh $(MOSES_CONFIG) --time-limit $(TIME_LIMIT) $$resume (NP=$(NP))"; \
	NP=$(NP) jobs/mpirun.sh $(MOSES_CONFIG) --time-limit $(TIME_LIMIT) $$resume || { rc=$$?; \
	  [ $$rc = 75 ] && echo "stopped at the time limit (checkpoint written): make moses continues it"; exit $$rc; }

clean-runs:
	rm -rf runs
