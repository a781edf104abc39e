#!/usr/bin/env bash
# `bun run test [FILES…]`: the tests under Bun on the Dawn device, then one closing line
# `tests: N passed, N failed, N skipped`. `scripts/test.sh --deno [FILES…]` runs them under Deno
# (`deno test`, through deno.json's test task) with the same closing line.
set -u
cd "$(dirname "$0")/.."
export EGL_PLATFORM=surfaceless XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
log=$(mktemp)
if [ "${1:-}" = --deno ]; then
  shift
  NO_COLOR=1 node_modules/.bin/deno task test "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  # Deno's summary: "ok | 80 passed | 0 failed | 2 ignored (1m18s)"
  summary=$(grep -aE '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -1)
  count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '[0-9]+' || echo 0; }
  pass=$(count passed); fail=$(count failed); skip=$(count ignored)
else
  node_modules/.bin/bun test --timeout 300000 "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  count() { grep -E "^ *[0-9]+ $1\$" "$log" | tail -1 | grep -oE '[0-9]+' || echo 0; }
  pass=$(count pass); fail=$(count fail); skip=$(( $(count skip) + $(count todo) ))
fi
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "tests: ${pass} passed, ${fail} failed, ${skip} skipped"
rm -f "$log"
exit "$rc"
