#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA (or any Vulkan) GPU that has nothing of ours installed (no
# Node, Bun or npm packages, no network), run the kernel tests and the benches on Vulkan and print one
# JSON line per figure on stdout (progress and logs go to stderr, and to $OUT/gpu-check.log where $OUT is set).
#
#   scripts/gpu-check.sh --pack   here, after ./setup: writes .gpu/ (ignored by git, < 64 MiB): the npm
#                                 packages the tests and benches load (Bun and dawn.node among them) as
#                                 one .tar.xz, and the Vulkan loader (libvulkan.so.1) of this machine
#   scripts/gpu-check.sh          there, in a copy of the repository holding .gpu/: unpacks, runs, prints
#
# Copy the repository there with .gpu/ (git-ignored: a tool that sends the work tree must be told to carry
# it), then run `bash scripts/gpu-check.sh`. It needs only bash, tar and xz there. ROPEWAY_KERNELS and
# ROPEWAY_F16 pass through (e.g. to try the cpu kernels there); GPU_CHECK_BENCHES names the benches.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=.gpu

if [ "${1:-}" = --pack ]; then
  [ -x node_modules/.bin/bun ] || { echo "gpu-check --pack: run ./setup first" >&2; exit 1; }
  rm -rf "$PACK" && mkdir -p "$PACK/lib"
  loader=$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ { print $NF; exit }')
  [ -n "$loader" ] || { echo "gpu-check --pack: no Vulkan loader here (apt-get install -y libvulkan1)" >&2; exit 1; }
  cp -L "$loader" "$PACK/lib/libvulkan.so.1"
  # Everything but what the kernel tests and benches never load: the other runtime, llama.cpp (the
  # scoring bench skips it when absent), the type checker, and other platforms' Dawn builds.
  tar -C . --exclude='node_modules/deno' --exclude='node_modules/@deno' \
    --exclude='node_modules/node-llama-cpp' --exclude='node_modules/@node-llama-cpp' \
    --exclude='node_modules/typescript' --exclude='node_modules/@typescript' --exclude='node_modules/@types' \
    --exclude='node_modules/bun-types' --exclude='node_modules/webgpu/dist/darwin-*' \
    --exclude='node_modules/webgpu/dist/win32-*' --exclude='node_modules/webgpu/dist/linux-arm64' \
    --exclude='node_modules/bun/bin/bunx.exe' --exclude='*.d.ts' --exclude='*.d.mts' --exclude='*.d.cts' --exclude='*.map' \
    -cf - node_modules | xz -T0 -9 >"$PACK/node_modules.tar.xz"
  du -sh "$PACK" "$PACK"/* >&2
  exit 0
fi

log() { echo "gpu-check: $*" >&2; }
[ -f "$PACK/node_modules.tar.xz" ] || { log "no $PACK/node_modules.tar.xz: run scripts/gpu-check.sh --pack where ./setup ran, and carry $PACK"; exit 1; }
if [ ! -x node_modules/.bin/bun ]; then
  log "unpacking $PACK/node_modules.tar.xz"
  xz -dc "$PACK/node_modules.tar.xz" | tar -xf -
fi
export LD_LIBRARY_PATH="$PWD/$PACK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVIDIA's container images keep the Vulkan driver's manifest outside the loader's default folders.
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
  ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export ROPEWAY_BACKEND=vulkan XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
logfile=${OUT:+$OUT/gpu-check.log}
logfile=${logfile:-/dev/null}
BUN=node_modules/.bin/bun
json() { printf '%s\n' "$1"; }

$BUN scripts/probe-gpu.ts --json 2>>"$logfile" || { $BUN scripts/probe-gpu.ts; exit 1; }

# Kernel tests: one line per test file (passed, failed, skipped, seconds).
status=0
for f in test/kernels/*.test.ts; do
  start=$SECONDS
  out=$($BUN test --timeout 300000 "$f" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >>"$logfile"
  n() { printf '%s\n' "$out" | grep -E "^ *[0-9]+ $1\$" | tail -1 | grep -oE '[0-9]+' || echo 0; }
  pass=$(n pass) fail=$(n fail) skip=$(n skip)
  [ "$rc" -eq 0 ] || { status=1; [ "$fail" -gt 0 ] || fail=1; printf '%s\n' "$out" | grep -E '^\(fail\)|error' | head -20 >&2; }
  json "{\"check\":\"kernel tests\",\"file\":\"$f\",\"passed\":$pass,\"failed\":$fail,\"skipped\":$skip,\"seconds\":$((SECONDS - start))}"
done

# Benches: their own JSON lines (bench, case, value, unit, baseline, ratio, note).
$BUN bench/main.ts --json ${GPU_CHECK_BENCHES:-matmul attention scoring training} 2>>"$logfile" || status=1
exit "$status"
