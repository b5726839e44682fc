#!/usr/bin/env bash
# Proves that the README's runnable shell blocks run as pasted: every fenced
# ```sh block right after a line `<!-- runnable -->` is run with bash (-e, -u,
# pipefail) against the built `tidemap` (its directory first on PATH), each in
# a fresh temp dir. The 127.0.0.1 ports a block names are replaced by ports
# free a moment ago, the same port by the same new one throughout the block,
# so the test never collides with a node already running here. Each block runs
# under `timeout` in its own process group, and whatever it left running
# (`serve ... &`) is stopped with that group at the end, pass or fail.
#
# Usage: readme_test.sh TOOLS_DIR README.md
set -uo pipefail

tools_dir=$1
readme=$2
block_timeout_s=${TIDEMAP_README_BLOCK_TIMEOUT_S:-60}

work=$(mktemp -d "${TMPDIR:-/tmp}/tidemap-readme-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Splits the runnable blocks into $work/blocks/N.sh, each with its README line.
mkdir -p "$work/blocks"
awk -v out="$work/blocks" -v name="$(basename "$readme")" '
  /^<!-- runnable -->[[:space:]]*$/ { pending = 1; next }
  pending && /^```sh[[:space:]]*$/ { n++; file = sprintf("%s/%03d.sh", out, n);
                                     printf "# %s line %d\n", name, NR + 1 > file;
                                     inside = 1; pending = 0; next }
  pending && !/^[[:space:]]*$/ { printf "%s line %d: <!-- runnable --> must come right before a ```sh block\n", name, NR > "/dev/stderr"; bad = 1; pending = 0 }
  inside && /^```[[:space:]]*$/ { inside = 0; close(file); next }
  inside { print >> file }
  END { exit bad }
' "$readme" || exit 1

blocks=("$work"/blocks/*.sh)
if [ ! -e "${blocks[0]}" ]; then
  echo "no runnable blocks in $readme (mark one with <!-- runnable --> before a \`\`\`sh fence)"
  exit 1
fi

# A port on 127.0.0.1 that nothing listens on right now (and not handed out
# to this run before), below the kernel's range for outgoing connections'
# local ports: a port there may be taken by a connection of another test
# between this check and the daemon's bind.
declare -A used_ports=()
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
port_span=$((ephemeral_low - 10000))
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((10000 + RANDOM % port_span))
    [ -n "${used_ports[$p]:-}" ] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports[$p]=1
      echo "$p"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

failures=0
for block in "${blocks[@]}"; do
  where=$(head -1 "$block")
  dir=$(mktemp -d "$work/run-XXXXXX")
  script="$dir/block.sh"
  cp "$block" "$script"
  for port in $(grep -o '127\.0\.0\.1:[0-9]\+' "$block" | cut -d: -f2 | sort -u); do
    new=$(free_port) || exit 1
    sed -i "s/127\.0\.0\.1:$port\b/127.0.0.1:$new/g" "$script"
  done
  # Job control gives the runner its own process group, whose id is its pid;
  # timeout --foreground stays in it, so the block and every daemon it starts
  # share that group, which is stopped below.
  set -m
  (cd "$dir" && PATH="$tools_dir:$PATH" exec timeout --foreground -k 5 "$block_timeout_s" \
     bash -euo pipefail "$script" >"$dir/out" 2>&1) &
  group=$!
  set +m
  wait "$group"
  code=$?
  kill -TERM -- "-$group" 2>/dev/null
  for _ in $(seq 50); do kill -0 -- "-$group" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$group" 2>/dev/null
  if [ "$code" -eq 0 ]; then
    echo "ok   ${where#\# }"
  else
    failures=$((failures + 1))
    echo "FAIL ${where#\# } (exit status $code$([ "$code" -eq 124 ] && echo ", timed out after ${block_timeout_s} s"))"
    echo "----- the block, as run (ports replaced) -----"
    sed 1d "$script"
    echo "----- its output -----"
    cat "$dir/out"
    echo "-----"
  fi
done
echo "${#blocks[@]} runnable blocks, $failures failed"
[ "$failures" -eq 0 ]
