# The two set-up commands of the README are `make demo` and `make test`; both
# install missing Debian packages, configure and build first.
PRESET ?= release
BUILD_DIR := build/$(PRESET)
TIDEMAP := $(BUILD_DIR)/tools/tidemap
CTEST_ARGS ?=
# ccache (used when installed, see CMakeLists.txt) hashes paths relative to
# the checkout, so every clone shares one cache.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all deps configure build test demo bench bench-http-batch bench-cluster asan-test tsan-test thread-safety fuzz format check-format clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	@cmake --preset $(PRESET) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j2 $(CTEST_ARGS)

demo: build
	$(TIDEMAP) demo

# The benchmark suite. BENCH_ARGS passes flags to the binary (e.g.
# BENCH_ARGS=--benchmark_filter=Hlc); the JSON results go under build/ unless
# BENCH_OUT=FILE names another file (see scripts/run-bench.sh).
bench: build
	@scripts/run-bench.sh $(BUILD_DIR)

# A batch of 1,000 puts over HTTP (POST /v1/batch) against the same batch in
# process, in one run; prints the ratio http_batch_put_vs_in_process_batch.
bench-http-batch: build
	@BENCH_ARGS="--benchmark_filter=BM_(Replica|Http)BatchPut1000 $(BENCH_ARGS)" \
	  scripts/run-bench.sh $(BUILD_DIR)

# Real daemons on 127.0.0.1 (a pair and a chain of three) under HTTP PUT load
# from wrk, alternating with a Redis primary + replica when redis-server is
# installed; see docs/benchmarks.md. BENCH_CLUSTER_ARGS passes flags to
# scripts/bench-cluster.py (e.g. "--runs 1 --duration 3 --no-redis").
bench-cluster: build
	@command -v wrk >/dev/null && command -v python3 >/dev/null || { sudo=""; \
	  [ "$$(id -u)" -eq 0 ] || sudo=sudo; DEBIAN_FRONTEND=noninteractive \
	  $$sudo apt-get install -y --no-install-recommends wrk python3; }
	@python3 scripts/bench-cluster.py --tidemap $(TIDEMAP) $(BENCH_CLUSTER_ARGS)

# Every test under AddressSanitizer + UndefinedBehaviorSanitizer (the simulator
# runs 30 seeds in sanitizer builds).
asan-test: deps
	@cmake --preset asan >/dev/null
	@cmake --build build/asan
	ctest --test-dir build/asan --output-on-failure -j2

# The unit and cluster tests under ThreadSanitizer (the cluster's daemons are
# the TSan build too; the kill loop runs 3 kills per durability mode there).
tsan-test: deps
	@cmake --preset tsan >/dev/null
	@cmake --build build/tsan
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp" TIDEMAP_KILL_ITERATIONS=3 \
	  ctest --test-dir build/tsan --output-on-failure -j2 -L 'unit|cluster'

# Each libFuzzer target for FUZZ_SECONDS (clang, ASan+UBSan), over its seeds in
# tests/fuzz/corpus/NAME; new inputs go to build/fuzz/new/NAME and crashes to
# build/fuzz/ (a crash fails the run). To grow a checked-in corpus by what a
# run found: NAME_fuzz -merge=1 tests/fuzz/corpus/NAME build/fuzz/new/NAME.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = codec frame handshake
fuzz: deps
	@cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DTIDEMAP_BUILD_FUZZ=ON >/dev/null
	@cmake --build build/fuzz --target $(addsuffix _fuzz,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/new/$$t; \
	  echo "fuzz: $${t}_fuzz for $(FUZZ_SECONDS) s"; \
	  build/fuzz/tests/fuzz/$${t}_fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	    -artifact_prefix=build/fuzz/$${t}- -print_final_stats=1 \
	    build/fuzz/new/$$t tests/fuzz/corpus/$$t 2>build/fuzz/$$t.log \
	    || { tail -n 40 build/fuzz/$$t.log; exit 1; }; \
	  grep -E "stat::number_of_executed_units|stat::new_units_added" build/fuzz/$$t.log; \
	done

# Every target built with clang and -Wthread-safety (errors, as every warning
# on our code): checks the GUARDED_BY/REQUIRES annotations (base/mutex.h).
# Nothing runs. Boost 1.74's Asio only detects coroutines on clang with
# libc++, hence the two BOOST_ASIO_HAS_* defines in the preset.
thread-safety: deps
	@cmake --preset clang-tsa >/dev/null
	@cmake --build build/clang-tsa

FORMAT_FILES = $(shell git ls-files '*.cc' '*.h')

format:
	clang-format -i $(FORMAT_FILES)

check-format:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build
