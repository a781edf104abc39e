// "Every number in metrics.json can be reproduced from the manifest alone": a small workflow (tiny model
// -> evaluate with perplexity, passkey, needle and short context), then a fresh process that reads only
// the run's manifest.json (the step's params and seed, the model folder and its hash) recomputes a
// perplexity and a passkey accuracy with its own loops, and gets the same values.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { layerCollect, loadWorkflow, runWorkflow } from "../../cli/workflow.ts"
import { readMetrics } from "../../plugins/eval/metrics.ts"
import { gpu } from "../gpu-shared.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-reproduce-"))
afterAll(() => removeTree(dir))
const ROOT = resolve(import.meta.dirname, "../..")

const WORKFLOW = `
name: reproduce
seed: 9
model: tiny
steps:
  evaluate:
    stage: evaluate
    inputs: { model: model }
    params:
      lengths: [256, 512]
      methods: [none, pi, yarn]
      samples: 2
      passkey: { lengths: [256, 512], trials: 3, maxNew: 8, seed: 42 }
      needle: { lengths: [512], depths: [0.5] }
      short: {}
`

/** Runs in a fresh bun process; its only input is the manifest's path. Prints one JSON line. */
const SCRIPT = `
import { readFileSync } from "node:fs"
import { acquireRuntime } from "${ROOT}/kernels/device.ts"
import { hashPath } from "${ROOT}/common/hash.ts"
import { syntheticDocument } from "${ROOT}/plugins/data/synthetic.ts"
import { byteTokenizer } from "${ROOT}/plugins/data/tokenizer.ts"
import { loadLlama } from "${ROOT}/plugins/models/llama/model.ts"
import { generate } from "${ROOT}/plugins/models/generate.ts"
import { resolveRope } from "${ROOT}/plugins/rope/index.ts"
import { firstInteger, passkeyTrialPrompt } from "${ROOT}/plugins/eval/passkey.ts"

const manifest = JSON.parse(readFileSync(process.env.MANIFEST, "utf8"))
const step = manifest.steps.find((s) => s.stage === "evaluate")
const [maker, output] = step.inputs.model.from.split(".")
const modelDir = manifest.steps.find((s) => s.name === maker).outputs[output].path
if (hashPath(modelDir) !== step.inputs.model.hash) throw new Error("the model folder is not the one the manifest hashed")
const p = step.params
const seed = p.seed ?? step.seed
const tok = byteTokenizer()
const rt = await acquireRuntime()
const model = await loadLlama(rt, modelDir)
const L0 = p.originalLength ?? model.config.rope.originalMaxPositions ?? model.config.rope.maxPositions
const L = 512
const pi = (n) => resolveRope({ ...model.config.rope, originalMaxPositions: L0, scaling: { rope_type: "linear", factor: L / L0 } })(n)

// perplexity, truncate: one window (BOS + the first L-1 tokens) per synthetic document, mean of window means
const tokens = p.tokens ?? Math.max(...p.lengths)
let mean = 0
for (let i = 0; i < p.samples; i++) {
  const doc = syntheticDocument({ tokenizer: tok, seed, length: tokens }, i).ids
  const lp = await model.logprobs([tok.bos, ...doc.slice(0, L - 1)], { rope: pi(L) })
  mean += -lp.reduce((a, b) => a + b, 0) / lp.length / p.samples
}

// passkey: the trials' prompts, greedy generation under PI's table for prompt + maxNew, first integer
const pk = p.passkey
const answers = []
let correct = 0
for (let t = 0; t < pk.trials; t++) {
  const prompt = passkeyTrialPrompt(tok, pk.seed ?? seed, L, t, undefined)
  const r = await generate(model, prompt.ids, { maxNew: pk.maxNew, policy: "fixed", stop: [tok.eos], rope: () => pi(prompt.ids.length + pk.maxNew) })
  const a = firstInteger(tok.decode(r.tokens.filter((x) => x < 256)))
  answers.push(a ?? null)
  if (a === prompt.key) correct++
}
model.dispose()
rt.destroy()
console.log(JSON.stringify({ perplexity: Math.exp(mean), accuracy: correct / pk.trials, answers }))
`

describe("reproducible from the manifest alone", () => {
  test("a fresh process recomputes a perplexity and a passkey accuracy from manifest.json", async () => {
    const rt = await gpu()
    const file = join(dir, "wf.yaml")
    writeFileSync(file, WORKFLOW)
    const r = await Effect.runPromise(
      Effect.flatMap(loadWorkflow(file), (wf) => runWorkflow(wf, { store: join(dir, "runs"), printRunDir: false })).pipe(
        Effect.provide(layerCollect([])),
        Effect.provideService(Gpu, rt),
      ),
    )
    expect(r.manifest.status).toBe("done")
    const metrics = readMetrics(r.manifest.steps[1]!.outputs["metrics"]!.path)
    expect(metrics.perplexity.some((e) => e.protocol === "needle")).toBe(true)
    expect(metrics.short.length).toBe(3)
    expect(metrics.passkey.length).toBe(3 * 2)

    const script = join(dir, "reproduce.ts")
    writeFileSync(script, SCRIPT)
    const child = Bun.spawnSync([process.execPath, script], {
      env: { ...process.env, MANIFEST: join(r.runDir, "manifest.json"), EGL_PLATFORM: "surfaceless" },
      stdout: "pipe",
      stderr: "pipe",
    })
    const out = child.stdout.toString().trim().split("\n").pop()!
    if (child.exitCode !== 0) throw new Error(`reproduce script failed: ${child.stderr.toString()}`)
    const got = JSON.parse(out) as { perplexity: number; accuracy: number; answers: Array<number | null> }

    const ppl = metrics.perplexity.find((e) => e.method === "pi" && e.length === 512 && e.protocol === "truncate")!
    expect(got.perplexity).toBeCloseTo(ppl.value, 9)
    const pk = metrics.passkey.find((e) => e.method === "pi" && e.length === 512)!
    expect(got.accuracy).toBe(pk.accuracy)
    expect(got.answers).toEqual([...pk.answers!])
    // the manifest is all it read: the step's params as written there
    expect(JSON.parse(readFileSync(join(r.runDir, "manifest.json"), "utf8")).steps[1].params.passkey).toEqual({ lengths: [256, 512], trials: 3, maxNew: 8, seed: 42 })
  })
})
