/**
 * Bun against Deno on the same commands, as a user runs them (`bun run ropeway …` / `deno task ropeway …`),
 * in child processes taken in turn so that load from other processes falls on both alike:
 * - start-up: wall time of `ropeway --version` (loads the whole command line) and of scoring 16 tokens
 *   (adds the GPU device and a model load), best of a few runs;
 * - scoring: tokens/s that `ropeway score --json` reports for the scoring bench's model at 2048 tokens.
 * Ratios are Deno's figure over Bun's (the baseline).
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { writeRandomLlama } from "../plugins/models/llama/random.ts"
import { report } from "./harness.ts"
import { MODEL, tokensOf } from "./scoring.ts"

const ROOT = resolve(import.meta.dirname, "..")
const RUNTIMES = {
  bun: [join(ROOT, "node_modules/.bin/bun"), "run", "--silent", "ropeway"],
  deno: [join(ROOT, "node_modules/.bin/deno"), "task", "--quiet", "ropeway"],
} as const
type Runtime = keyof typeof RUNTIMES
const ROUNDS = 3

function ropeway(runtime: Runtime, args: readonly string[]): { ms: number; stdout: string } {
  const [cmd, ...pre] = RUNTIMES[runtime]
  const t0 = performance.now()
  const r = spawnSync(cmd, [...pre, ...args], { cwd: ROOT, encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } })
  const ms = performance.now() - t0
  if (r.status !== 0) throw new Error(`${runtime} ropeway ${args.join(" ")}: exit ${r.status}\n${r.stderr}`)
  return { ms, stdout: r.stdout }
}

export async function run(_rt: GpuRuntime): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ropeway-bench-runtimes-"))
  try {
    const model = join(dir, "model")
    writeRandomLlama(model, MODEL)
    const short = join(dir, "short.json")
    const long = join(dir, "long.json")
    writeFileSync(short, JSON.stringify(tokensOf(16)))
    writeFileSync(long, JSON.stringify(tokensOf(2048)))
    const cases: readonly (readonly [string, string, "lower" | "higher", (r: Runtime) => number])[] = [
      ["start-up: ropeway --version", "ms", "lower", (r) => ropeway(r, ["--version"]).ms],
      ["start-up: score 16 tokens", "ms", "lower", (r) => ropeway(r, ["score", "--model", model, "--tokens", short, "--json"]).ms],
      ["score 2048 tokens", "tok/s", "higher", (r) =>
        (JSON.parse(ropeway(r, ["score", "--model", model, "--tokens", long, "--json"]).stdout) as { tokensPerSecond: number }).tokensPerSecond],
    ]
    for (const [name, unit, better, measure] of cases) {
      const best: Record<Runtime, number> = { bun: better === "lower" ? Infinity : 0, deno: better === "lower" ? Infinity : 0 }
      for (let round = 0; round < ROUNDS; round++) {
        for (const r of ["bun", "deno"] as const) {
          const v = measure(r)
          best[r] = better === "lower" ? Math.min(best[r], v) : Math.max(best[r], v)
        }
      }
      report({ bench: "runtimes", case: `bun: ${name}`, value: best.bun, unit })
      report({ bench: "runtimes", case: `deno: ${name}`, value: best.deno, unit, baseline: best.bun, ratio: best.deno / best.bun, note: `deno / bun, best of ${ROUNDS} taken in turn` })
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
