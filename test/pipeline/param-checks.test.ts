// Checks a step's nested params get before anything runs: the stage's `validate` hook (search: strategy and
// fitness params through the plugins, data, lengths) with file:line:col, and corpus paths resolved against the
// workflow file, a missing one a plan problem with its position that stops `run` before any step.
import { describe, expect, test } from "bun:test"
import { Effect, Schema } from "effect"
import { existsSync, mkdirSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { defineStage, definePlugin, formatDiagnostic, layerSilent, planWorkflow, runWorkflow } from "../../pipeline/workflow/index.ts"
import { load, loadError, tempDir, yamlFile } from "./helpers.ts"

const searchStep = (params: string) => `name: checks
seed: 1
model: tiny
steps:
  s:
    stage: search
    inputs: { model: model }
    params:
      mode: first
      length: 512
${params}
`

const one = async (yaml: string) => {
  const file = yamlFile(yaml)
  const err = await loadError(file)
  return { file, diags: err.diagnostics, message: err.message }
}

describe("search params checked at load, with positions", () => {
  test("an unknown strategyParams key, at the key, with a suggestion", async () => {
    const { file, diags } = await one(searchStep("      strategyParams:\n        populatonSize: 8\n        iterations: 2"))
    expect(diags.length).toBe(1)
    expect(diags[0]).toMatchObject({ file, line: 12, column: 9, path: "steps.s.params.strategyParams.populatonSize" })
    expect(diags[0]!.message).toContain('unknown key "populatonSize" for search strategy "evolutionary" (did you mean "populationSize"?)')
  })

  test("a bad value, as the strategy would report it at run time", async () => {
    const { diags } = await one(searchStep("      strategyParams: { step: 0, p: 2 }"))
    expect(diags.map((d) => [d.path, d.message])).toEqual([
      ["steps.s.params.strategyParams.step", "expected a positive number, got 0"],
      ["steps.s.params.strategyParams.p", "expected a probability in (0, 1], got 2"],
    ])
    const t = await one(searchStep('      strategyParams: { populationSize: "64" }'))
    expect(t.diags.map((d) => [d.path, d.message])).toEqual([["steps.s.params.strategyParams.populationSize", 'Expected number, got "64"']])
  })

  test("another strategy's keys: longrope2 and successive-halving have their own", async () => {
    const ok = yamlFile(searchStep("      strategy: longrope2\n      strategyParams: { criticalDim: 3, sMin: 2, sMax: 4 }"))
    await load(ok)
    const { diags } = await one(searchStep("      strategy: successive-halving\n      strategyParams: { populationSize: 8 }"))
    expect(diags[0]!.message).toContain('unknown key "populationSize" for search strategy "successive-halving"')
  })

  test("unknown strategy and fitness; fitnessParams and data fields; a missing length", async () => {
    const s = await one(searchStep("      strategy: evolutionery"))
    expect(s.diags[0]).toMatchObject({ path: "steps.s.params.strategy", line: 11, column: 17 })
    expect(s.diags[0]!.message).toContain('unknown search strategy "evolutionery"')
    const f = await one(searchStep("      fitness: ppl-truncate\n      fitnessParams: { depth: [0.5] }"))
    expect(f.diags.map((d) => d.path)).toEqual(["steps.s.params.fitnessParams.depth"])
    expect(f.diags[0]!.message).toContain('unknown key "depth" for fitness "ppl-truncate"')
    const sp = await one(searchStep("      fitnessParams: { shortPenalty: { weight: -1 } }"))
    expect(sp.diags.map((d) => d.path)).toEqual(["steps.s.params.fitnessParams.shortPenalty.weight"])
    const d = await one(searchStep("      data: { source: corpus, paht: x }"))
    expect(d.diags.map((x) => x.path)).toEqual(["steps.s.params.data.paht"])
    const l = await one(searchStep("").replace("      length: 512\n", ""))
    expect(l.diags[0]!.message).toContain('missing key "length"')
    const b = await one(searchStep("      betaFast: 2\n      betaSlow: 32"))
    expect(b.diags.map((x) => [x.path, x.message])).toEqual([["steps.s.params.betaSlow", "expected β_slow < β_fast (2), got 32"]])
  })

  test("a user's stage validate hook; a hook that throws is reported, not a crash", async () => {
    const checked = defineStage({
      name: "checked",
      version: "1",
      params: Schema.Struct({ n: Schema.Number }),
      outputs: { out: "x" },
      validate: (p) => (p.n % 2 === 0 ? [] : [{ path: ["n"], message: "expected an even number" }]),
      run: () => Effect.void,
    })
    const throws = defineStage({ ...checked, name: "throws", validate: () => { throw new Error("boom") } })
    const plugin = definePlugin({ name: "hooks", version: "1", stages: [checked, throws] })
    const file = yamlFile("name: h\nseed: 1\nsteps:\n  a: { stage: checked, params: { n: 3 } }\n  b: { stage: throws, params: { n: 2 } }\n")
    const err = await loadError(file, { plugins: [plugin] })
    expect(err.diagnostics.map((d) => formatDiagnostic(d))).toEqual([
      `${file}:4:37: steps.a.params.n: expected an even number`,
      `${file}:5:31: steps.b.params: stage "throws" could not check its params: boom`,
    ])
  })

  test("model-config refuses fields that describe the weights", async () => {
    const file = yamlFile("name: m\nseed: 1\nmodel: tiny\nsteps:\n  c: { stage: model-config, inputs: { model: model }, params: { set: { sliding_window: null, hidden_size: 8 } } }\n")
    const err = await loadError(file)
    expect(err.diagnostics.map((d) => [d.path, d.message])).toEqual([["steps.c.params.set.hidden_size", '"hidden_size" describes the weights; model-config does not change it']])
  })
})

describe("corpus paths", () => {
  const wf = (path: string) => `name: corpus
seed: 1
model: tiny
steps:
  e:
    stage: evaluate
    inputs: { model: model }
    params:
      lengths: [64]
      data: { source: corpus, path: ${path} }
`

  test("resolved against the workflow file, in the params the stage and the cache key see", async () => {
    const dir = tempDir()
    mkdirSync(join(dir, "texts"))
    const w = await load(yamlFile(wf("texts"), dir))
    const step = w.steps.find((s) => s.name === "e")!
    expect((step.params as { data: { path: string } }).data.path).toBe(join(dir, "texts"))
    expect((step.paramsJson as { data: { path: string } }).data.path).toBe(join(dir, "texts"))
    expect(w.files).toEqual([expect.objectContaining({ step: "e", path: join(dir, "texts"), exists: true })])
    const plan = await Effect.runPromise(planWorkflow(w, { store: join(dir, "store") }))
    expect(plan.problems).toEqual([])
  })

  test("a missing one: a plan problem at its place in the file; run stops before any step", async () => {
    const dir = tempDir()
    const file = yamlFile(wf("nowhere/texts"), dir)
    const w = await load(file)
    const plan = await Effect.runPromise(planWorkflow(w, { store: join(dir, "store") }))
    expect(plan.problems).toEqual([`${file}:10:37: steps.e.params.data.path: corpus not found: ${join(dir, "nowhere/texts")}`])
    const err = await Effect.runPromise(Effect.flip(runWorkflow(w, { store: join(dir, "store"), printRunDir: false }).pipe(Effect.provide(layerSilent))))
    expect(err.message).toBe(plan.problems[0]!)
    expect(existsSync(join(dir, "store")) ? readdirSync(join(dir, "store")) : []).toEqual([])
  })

  test("an absolute path is kept", async () => {
    const dir = tempDir()
    const w = await load(yamlFile(wf(join(dir, "abs")), dir))
    expect(w.files[0]!.path).toBe(join(dir, "abs"))
    expect(w.files[0]!.exists).toBe(false)
  })
})
