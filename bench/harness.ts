/**
 * Benchmark reporting: every figure is a ratio against a baseline measured in the same process, since
 * these machines are noisy. `--json` prints one JSON object per line.
 */
export interface BenchLine {
  readonly bench: string
  readonly case: string
  readonly value: number
  readonly unit: string
  readonly baseline?: number
  readonly ratio?: number
  readonly note?: string
}

export const jsonOutput = (): boolean => process.argv.includes("--json")

export function report(line: BenchLine): void {
  if (jsonOutput()) {
    console.log(JSON.stringify(line))
    return
  }
  const fmt = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3))
  const base = line.baseline !== undefined ? `  baseline ${fmt(line.baseline)} ${line.unit}` : ""
  const ratio = line.ratio !== undefined ? `  ratio ${line.ratio.toFixed(2)}×` : ""
  const note = line.note !== undefined ? `  (${line.note})` : ""
  console.log(`${line.bench.padEnd(10)} ${line.case.padEnd(28)} ${fmt(line.value).padStart(9)} ${line.unit}${base}${ratio}${note}`)
}

/** Runs `fn` until at least `minMs` have passed (and at least `minRuns` times); returns the best ms per run. */
export async function bestOf(fn: () => unknown | Promise<unknown>, minMs = 300, minRuns = 3): Promise<number> {
  let best = Infinity
  const start = performance.now()
  for (let runs = 0; runs < minRuns || performance.now() - start < minMs; runs++) {
    const t0 = performance.now()
    await fn()
    best = Math.min(best, performance.now() - t0)
  }
  return best
}
