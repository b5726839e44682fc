#!/usr/bin/env bash
# Runs the benchmark binary of BUILD_DIR and writes its results as JSON:
#
#   scripts/run-bench.sh BUILD_DIR [OUT.json]
#
# The console output streams as the benchmarks run and ends with the ratio
# lines. The JSON goes to OUT.json when given, else to $BENCH_OUT when set,
# else to build/bench-results/<UTC date and time>-<short sha>.json under the
# repository root (the sha gets "-dirty" when tracked files differ from it).
# Results are not tracked by git. Extra arguments for the binary come from
# BENCH_ARGS, e.g. BENCH_ARGS=--benchmark_filter=Hlc.
#
# Repetitions of different benchmarks run in random interleaved order, so a
# slow spell of a shared machine or disk falls on both sides of a ratio rather
# than on one benchmark; BENCH_ARGS=--benchmark_enable_random_interleaving=false
# turns that off.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 BUILD_DIR [OUT.json]" >&2
  exit 2
fi

build_dir=$(cd "$1" && pwd)
binary="$build_dir/bench/tidemap_bench"
if [ ! -x "$binary" ]; then
  echo "run-bench: $binary not found; build first (cmake --build $1)" >&2
  exit 1
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_dir/CMakeCache.txt" 2>/dev/null || true)
if [ "$build_type" != "Release" ]; then
  echo "run-bench: warning: $build_dir is a '${build_type:-unknown}' build; only Release numbers count" >&2
fi

commit=$(git -C "$repo_root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git -C "$repo_root" diff --quiet HEAD --; then
  commit="$commit-dirty"
fi

out="${2:-${BENCH_OUT:-}}"
if [ -z "$out" ]; then
  out="$repo_root/build/bench-results/$(date -u +%Y-%m-%dT%H%M%SZ)-$commit.json"
fi
mkdir -p "$(dirname "$out")"

extra_args=()
if [ -n "${BENCH_ARGS:-}" ]; then read -r -a extra_args <<<"$BENCH_ARGS"; fi

# Written under a temporary name and renamed once complete, so an interrupted
# run leaves no truncated result behind.
"$binary" \
  --benchmark_out="$out.tmp" \
  --benchmark_out_format=json \
  --benchmark_context="tidemap_commit=$commit,build_type=${build_type:-unknown}" \
  --benchmark_enable_random_interleaving=true \
  "${extra_args[@]}"
mv "$out.tmp" "$out"
echo "run-bench: results in $out"
