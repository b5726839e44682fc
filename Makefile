# The two set-up commands of the README are `make demo` and `make test`; both
# install missing Debian packages, configure and build first.
PRESET ?= release
BUILD_DIR := build/$(PRESET)
TIDEMAP := $(BUILD_DIR)/tools/tidemap
CTEST_ARGS ?=

.PHONY: all deps configure build test demo bench asan-test tsan-test format check-format clean

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

# Every test under AddressSanitizer + UndefinedBehaviorSanitizer (the simulator
# runs 30 seeds in sanitizer builds).
asan-test: deps
	@cmake --preset asan >/dev/null
	@cmake --build build/asan
	ctest --test-dir build/asan --output-on-failure -j2

tsan-test: deps
	@cmake --preset tsan >/dev/null
	@cmake --build build/tsan
	TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp" ctest --test-dir build/tsan --output-on-failure -j2 -L unit

FORMAT_FILES = $(shell git ls-files '*.cc' '*.h')

format:
	clang-format -i $(FORMAT_FILES)

check-format:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build
