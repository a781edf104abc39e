/**
 * Hostile files: mutated safetensors (single and sharded, headers with absurd lengths and offsets),
 * config.json, tokenizer.json, workflow YAML, factor-set files, factor CSVs and GGUF files fed to their
 * loaders (hostile-child.ts, a process of its own). Each case must end in acceptance or a clean error
 * (one line naming the file) within the bounds below: no crash, no hang, no giant allocation.
 * ROPEWAY_FUZZ_SEED and ROPEWAY_FUZZ_CASES explore further than CI's fixed seed does.
 */
import { expect, test } from "bun:test"
import { entryCommand, runToEnd } from "../runtime.ts"

const SEED = Number(process.env["ROPEWAY_FUZZ_SEED"] ?? 1)
const CASES_PER_FORMAT = Number(process.env["ROPEWAY_FUZZ_CASES"] ?? 150)
/** Per case: wall time (generous: the machine may be shared) and growth of the process's peak RSS. */
const CASE_MS = 5_000
const CASE_GROWTH_MIB = 256
/** The whole worker process: growth of its peak RSS over all cases, and wall time before it counts as hung. */
const CASES_GROWTH_MIB = 512
const WORKER_MS = 240_000

interface CaseLine {
  readonly format: string
  readonly case: number
  readonly ms: number
  readonly grewKiB: number
  readonly outcome: "ok" | "clean" | "bad"
  readonly message: string
}

test("hostile files: every mutant is accepted or refused cleanly, within time and memory bounds", async () => {
  const { code, signal, stdout: out, stderr: err } = await runToEnd(entryCommand("test/fuzz/hostile-child.ts", String(SEED), String(CASES_PER_FORMAT)), {
    killAfterMs: WORKER_MS,
  })
  const lines = out.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Record<string, unknown>)
  const cases = lines.filter((l) => "outcome" in l) as unknown as CaseLine[]
  const done = lines.find((l) => l["done"] === true) as { baselineKiB: number; maxRssKiB: number } | undefined
  if (code !== 0 || done === undefined) {
    const last = lines.filter((l) => "start" in l).at(-1)
    throw new Error(`the fuzz worker died (exit ${code}${signal === null ? "" : `, ${signal}`}) in case ${JSON.stringify(last)}\n${err.slice(-4000)}`)
  }

  const byFormat = new Map<string, Record<string, number>>()
  for (const c of cases) {
    const row = byFormat.get(c.format) ?? { ok: 0, clean: 0, bad: 0 }
    row[c.outcome]!++
    byFormat.set(c.format, row)
  }
  const slowest = cases.reduce((a, b) => (b.ms > a.ms ? b : a))
  const hungriest = cases.reduce((a, b) => (b.grewKiB > a.grewKiB ? b : a))
  console.log(
    `hostile files: ${cases.length} cases (seed ${SEED}), ${[...byFormat].map(([f, r]) => `${f} ${r["ok"]} ok/${r["clean"]} refused`).join(", ")}; ` +
      `slowest ${slowest.ms.toFixed(0)} ms (bound ${CASE_MS}), largest peak-RSS growth ${(hungriest.grewKiB / 1024).toFixed(1)} MiB (bound ${CASE_GROWTH_MIB}), ` +
      `worker peak RSS ${(done.baselineKiB / 1024).toFixed(0)} MiB before the cases, ${(done.maxRssKiB / 1024).toFixed(0)} MiB after (growth bound ${CASES_GROWTH_MIB})`,
  )

  expect(cases.length).toBe(8 * CASES_PER_FORMAT)
  expect(cases.filter((c) => c.outcome === "bad").map((c) => `${c.format} #${c.case}: ${c.message}`)).toEqual([])
  expect(cases.filter((c) => c.ms > CASE_MS).map((c) => `${c.format} #${c.case}: ${c.ms.toFixed(0)} ms`)).toEqual([])
  expect(cases.filter((c) => c.grewKiB > CASE_GROWTH_MIB * 1024).map((c) => `${c.format} #${c.case}: +${c.grewKiB} KiB`)).toEqual([])
  expect(done.maxRssKiB - done.baselineKiB).toBeLessThan(CASES_GROWTH_MIB * 1024)
  // every format sees mutants its loader must refuse
  for (const [format, r] of byFormat) expect({ format, refused: r["clean"]! > 0 }).toEqual({ format, refused: true })
}, WORKER_MS + 10_000)
