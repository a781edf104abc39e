#!/usr/bin/env bash
# `bun run test`: bun test on the Dawn device, then one closing line `tests: N passed, N failed, N skipped`.
set -u
cd "$(dirname "$0")/.."
export EGL_PLATFORM=surfaceless XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
log=$(mktemp)
node_modules/.bin/bun test --timeout 300000 "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
count() { grep -E "^ *[0-9]+ $1\$" "$log" | tail -1 | grep -oE '[0-9]+' || echo 0; }
pass=$(count pass); fail=$(count fail); skip=$(( $(count skip) + $(count todo) ))
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
echo "tests: ${pass} passed, ${fail} failed, ${skip} skipped"
rm -f "$log"
exit "$rc"
