/**
 * The two paper-shaped tiny workflows measure what their comments say only while their steps line up:
 * second-interpolation.yaml trains no position beyond W and evaluates every series on the same lengths,
 * documents and prompts; finetuned-baselines.yaml runs one fine-tune recipe at three RoPE settings, reuses the
 * default's LongRoPE steps from the store, and evaluates every model alike. Checked on the loaded files (no
 * GPU, well under a second); the stages and methods they use (search, fine-tune, second search, readjust,
 * model+pi / model+yarn, sideBySide) run in smoke.yaml and the stage tests.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { parse } from "yaml"
import { loadWorkflow, planWorkflow, type Workflow } from "../../cli/workflow.ts"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { TINY_CONTEXT } from "../../plugins/models/tiny/tiny.ts"

const DIR = resolve(import.meta.dirname, "../../workflows")
const store = mkdtempSync(join(tmpdir(), "ropeway-paper-shaped-"))
afterAll(() => removeTree(store))

type Params = Record<string, any>
interface Loaded {
  readonly wf: Workflow
  /** Each step's params as the file writes them (no defaults filled in). */
  readonly raw: Record<string, { stage: string; inputs?: Record<string, string>; params?: Params }>
}
const load = async (file: string): Promise<Loaded> => {
  const path = join(DIR, file)
  const wf = await Effect.runPromise(loadWorkflow(path))
  const plan = await Effect.runPromise(planWorkflow(wf, { store }))
  expect(plan.problems).toEqual([])
  return { wf, raw: parse(readFileSync(path, "utf8")).steps }
}
const params = (l: Loaded, step: string): Params => {
  const p = l.raw[step]?.params
  if (p === undefined) throw new Error(`no step ${step}`)
  return p
}
/** What a step's cache key is made of, its inputs named by the steps they come from. */
const definition = (l: Loaded, step: string) => {
  const s = l.wf.steps.find((x) => x.name === step)!
  return { stage: s.stage.name, version: s.stage.version, params: s.paramsJson, seed: s.seed, inputs: s.inputs }
}
const without = (p: Params, ...keys: string[]) => Object.fromEntries(Object.entries(p).filter(([k]) => !keys.includes(k)))
const evaluateSteps = (l: Loaded) => Object.keys(l.raw).filter((s) => l.raw[s]!.stage === "evaluate")

describe("second-interpolation.yaml", async () => {
  const si = await load("second-interpolation.yaml")
  const W = params(si, "search").length as number

  test("the fine-tune keeps every trained position inside W = the first search's length", () => {
    expect(W).toBe(4 * TINY_CONTEXT)
    const ft = params(si, "finetune")
    expect(si.raw["finetune"]!.inputs!["factors"]).toBe("search.factors")
    // PoSE skips place a sequence's last position at most at positionSkip.length − 1
    expect(ft.positionSkip.length).toBe(W)
    expect(ft.seqLen).toBeLessThanOrEqual(W)
  })

  test("the second search targets 8W on the fine-tuned model; the readjusted result is what `evaluate` scores", () => {
    const second = params(si, "second")
    expect([second.mode, second.length]).toEqual(["second", 8 * W])
    expect(si.raw["second"]!.inputs!["model"]).toBe("finetune.model")
    expect(si.raw["readjust"]!.inputs!["factors"]).toBe("second.factors")
    expect(si.raw["apply"]!.inputs).toEqual({ model: "finetune.model", factors: "readjust.factors" })
    expect(si.raw["evaluate"]!.inputs!["model"]).toBe("apply.model")
    expect(si.raw["evaluate-finetuned"]!.inputs!["model"]).toBe("finetune.model")
  })

  test("every series at W, 2W, 4W, 8W on the same documents, side by side; PI and YaRN on top of the fine-tuned set", () => {
    const [final, ft] = [params(si, "evaluate"), params(si, "evaluate-finetuned")]
    const lengths = [W, 2 * W, 4 * W, 8 * W]
    for (const p of [final, ft]) {
      expect(p.lengths).toEqual(lengths)
      expect(p.passkey.lengths).toEqual(lengths)
    }
    expect(ft.methods).toEqual(["model", "model+pi", "model+yarn"])
    expect(final.methods).toEqual(["model"])
    expect(final.sideBySide).toBe(ft.sideBySide)
    expect(final.label).not.toBe(ft.label)
    // documents come from the step's seed, samples and data: the same for both series
    expect([final.samples, final.data]).toEqual([ft.samples, ft.data])
    expect(ft.passkey.trials).toBeLessThanOrEqual(final.passkey.trials)
  })
})

describe("finetuned-baselines.yaml", async () => {
  const [fb, def] = await Promise.all([load("finetuned-baselines.yaml"), load("default.yaml")])
  const s = params(fb, "search").length / TINY_CONTEXT

  test("LongRoPE's steps are the default's: a store that ran default.yaml reuses them", () => {
    // a key hashes the stage, its version, the params, the seed and the inputs' contents: the same
    // definitions from the same model give the same keys, step after step
    expect([fb.wf.model, fb.wf.seed]).toEqual([def.wf.model, def.wf.seed])
    for (const step of ["search", "finetune", "second", "readjust", "apply"]) expect(definition(fb, step)).toEqual(definition(def, step))
  })

  test("one fine-tune recipe at three RoPE settings: the searched factors, PI and YaRN at the same scale", () => {
    const longrope = params(fb, "finetune")
    for (const step of ["finetune-pi", "finetune-yarn"]) {
      const p = params(fb, step)
      expect(without(p, "ropeScaling")).toEqual(longrope)
      expect(fb.raw[step]!.inputs).toEqual({ model: "model" })
    }
    expect(params(fb, "finetune-pi").ropeScaling).toEqual({ rope_type: "linear", factor: s })
    expect(params(fb, "finetune-yarn").ropeScaling).toEqual({ rope_type: "yarn", factor: s, original_max_position_embeddings: TINY_CONTEXT })
  })

  test("every model evaluated alike at 1x–16x, passkeys at 8x, in one side-by-side group", () => {
    const steps = evaluateSteps(fb)
    expect(steps.map((st) => fb.raw[st]!.inputs!["model"]).sort()).toEqual(["apply.model", "finetune-pi.model", "finetune-yarn.model", "finetune.model"])
    const first = params(fb, steps[0]!)
    expect(first.lengths).toEqual([1, 2, 4, 8, 16].map((x) => x * TINY_CONTEXT))
    expect(first.passkey).toEqual({ lengths: [8 * TINY_CONTEXT], trials: 50 })
    for (const st of steps) expect(without(params(fb, st), "label")).toEqual(without(first, "label"))
    expect(new Set(steps.map((st) => params(fb, st).label)).size).toBe(steps.length)
  })
})
