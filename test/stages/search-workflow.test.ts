/**
 * The search stages inside a workflow: first → second → readjust wired through artifacts, with the
 * engine's own cache and the default candidate cache (<store>/_search-cache). A second run reuses every
 * step; a run with a changed step key (a new seed for the step) still evaluates nothing it has seen.
 */
import { afterAll, expect, test } from "bun:test"
import { Effect } from "effect"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { layerSilent, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { parseFactorSetFile } from "../../plugins/rope/formats.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "../models/random-model.ts"

/** Generous: llvmpipe on shared cores can be slow when other suites run at the same time. */
// generous: the first training step compiles its kernels, minutes on a cold shader cache of a loaded 2-core machine
const TIMEOUT = 180_000
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-search-wf-")
  dirs.push(d)
  return d
}

const modelDir = tmp()
writeRandomModel(modelDir, { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: 64, seed: 12 })

const yaml = (stepSeed: number) => `
name: search-recipe
seed: 3
model: ${modelDir}
steps:
  first:
    stage: search
    params: { mode: first, length: 256, samples: 1, data: { tasks: { filler: 1 } }, strategyParams: { populationSize: 6, iterations: 1, parents: 3, mutants: 2, crossovers: 1 } }
    inputs: { model: model }
  second:
    stage: search-factors
    params: { mode: second, length: 512, samples: 1, data: { tasks: { filler: 1 } }, strategyParams: { populationSize: 6, iterations: 1, parents: 3, mutants: 2, crossovers: 1 } }
    inputs: { model: model, factors: first.factors }
  readjust:
    stage: search-factors
    seed: ${stepSeed}
    params: { mode: readjust, lengths: [128], samples: 1, data: { tasks: { filler: 1 }, seed: 3 }, strategyParams: { populationSize: 6, iterations: 1, parents: 3, mutants: 2, crossovers: 1, seed: 3 } }
    inputs: { model: model, factors: second.factors }
`

test("first → second → readjust in a workflow; a rerun reuses every step; a changed step key evaluates nothing seen", async () => {
  const dir = tmp()
  const store = join(dir, "runs")
  const file = join(dir, "workflow.yaml")
  writeFileSync(file, yaml(3))
  const rt = await gpu()
  const runIt = () =>
    Effect.runPromise(
      loadWorkflow(file).pipe(
        Effect.flatMap((wf) => runWorkflow(wf, { store, printRunDir: false })),
        Effect.provide(layerSilent),
        Effect.provideService(Gpu, rt),
      ),
    )
  const r1 = await runIt()
  expect(r1.manifest.steps.map((s) => s.status)).toEqual(["done", "done", "done"])
  const results = r1.manifest.steps.map((s) => s.result as { evaluated: number; cached: number })
  expect(results.map((r) => r.evaluated)).toEqual([9, 9, 9])
  expect(existsSync(join(store, "_search-cache"))).toBe(true)
  const out = (step: number, name: string) => r1.manifest.steps[step]!.outputs[name]!.path
  const table = parseFactorSetFile(readFileSync(out(2, "factors"), "utf8"))
  expect(table.sets.map((s) => s.max_length)).toEqual([128, 256, 512])
  expect(readdirSync(join(out(2, "log"), "128")).sort()).toContain("result_final.csv")

  const r2 = await runIt()
  expect(r2.manifest.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached"])

  // A new step seed changes the engine's key but not the strategy's or the data's seed: all cache hits.
  writeFileSync(file, yaml(4))
  const r3 = await runIt()
  expect(r3.manifest.steps.map((s) => s.status)).toEqual(["cached", "cached", "done"])
  expect(r3.manifest.steps[2]!.result).toMatchObject({ evaluated: 0, cached: 9 })
}, TIMEOUT)

const countFiles = (dir: string): number =>
  existsSync(dir) ? readdirSync(dir).reduce((n, sub) => n + readdirSync(join(dir, sub)).filter((f) => f.endsWith(".json")).length, 0) : 0

test("SIGKILL of `bun run workflow` mid-search, then a re-run: resumes and ends as an uninterrupted run", async () => {
  const dir = tmp()
  const file = join(dir, "workflow.yaml")
  // 6 + 10·3 = 36 evaluations, long enough to be killed in the middle.
  writeFileSync(
    file,
    `name: killed\nseed: 5\nmodel: ${modelDir}\nsteps:\n  search:\n    stage: search\n    params: { mode: first, length: 512, samples: 2, data: { tasks: { filler: 1 } }, strategyParams: { populationSize: 6, iterations: 10, parents: 3, mutants: 2, crossovers: 1 } }\n    inputs: { model: model }\n`,
  )
  const rt = await gpu()
  const runIn = (store: string) =>
    Effect.runPromise(
      loadWorkflow(file).pipe(Effect.flatMap((wf) => runWorkflow(wf, { store, printRunDir: false })), Effect.provide(layerSilent), Effect.provideService(Gpu, rt)),
    )

  const store = join(dir, "runs")
  const child = Bun.spawn([process.execPath, "cli/workflow-main.ts", file, "--store", store, "--quiet"], {
    cwd: join(import.meta.dirname, "../.."),
    env: { ...process.env, EGL_PLATFORM: "surfaceless" },
    stdout: "pipe",
    stderr: "pipe",
  })
  const cache = join(store, "_search-cache")
  const t0 = Date.now()
  while (countFiles(cache) < 10) {
    if (Date.now() - t0 > 45_000) throw new Error(`the child made ${countFiles(cache)} evaluations in 45 s: ${await new Response(child.stderr).text()}`)
    await Bun.sleep(10)
  }
  child.kill("SIGKILL")
  expect(await child.exited).not.toBe(0)
  const atKill = countFiles(cache)
  expect(atKill).toBeLessThan(36) // killed mid-search, not after it
  const checkpoints = readdirSync(join(store, "_checkpoints"))
  expect(checkpoints.length).toBe(1)

  const resumed = await runIn(store)
  expect(resumed.manifest.steps[0]!.status).toBe("done")
  const result = resumed.manifest.steps[0]!.result as { evaluated: number; cached: number }
  expect(result.evaluated + result.cached).toBeLessThanOrEqual(36)
  expect(countFiles(cache)).toBe(36)
  expect(result.evaluated).toBe(36 - atKill)

  const reference = await runIn(join(dir, "reference"))
  const read = (m: typeof resumed.manifest, out: string, name?: string) => readFileSync(name === undefined ? m.steps[0]!.outputs[out]!.path : join(m.steps[0]!.outputs[out]!.path, name), "utf8")
  expect(parseFactorSetFile(read(resumed.manifest, "factors")).sets).toEqual(parseFactorSetFile(read(reference.manifest, "factors")).sets)
  expect(read(resumed.manifest, "log", "longrope-log.json")).toBe(read(reference.manifest, "log", "longrope-log.json"))
  expect(read(resumed.manifest, "log", "result_final.csv")).toBe(read(reference.manifest, "log", "result_final.csv"))
}, TIMEOUT)
