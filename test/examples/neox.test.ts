// examples/plugin's GPT-NeoX family: its GPU forward against its float64 reference (parallel and
// sequential residuals, plain and scaled RoPE), decoding against prefill, and the family through
// ropeway's stages and `score` with no change outside the example.
import { afterAll, describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { layerSilent, loadWorkflow, removeTree, runWorkflow } from "../../cli/workflow.ts"
import { Gpu } from "../../kernels/device.ts"
import { type InspectedNeox, inspectNeox, neoxFamily } from "../../examples/plugin/neox/family.ts"
import { writeRandomNeox } from "../../examples/plugin/neox/random.ts"
import { neoxLogprobsRef } from "../../examples/plugin/neox/ref.ts"
import { readMetrics } from "../../plugins/eval/metrics.ts"
import { parseFactorSetFile } from "../../plugins/rope/formats.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { gpu } from "../gpu-shared.ts"
import { runCli } from "../models/cli-helpers.ts"

const EXAMPLE = resolve(import.meta.dirname, "../../examples/plugin")
const root = mkdtempSync(join(tmpdir(), "ropeway-neox-"))
afterAll(() => removeTree(root)) // the store in it has read-only entries

const SMALL = { vocab: 61, hidden: 32, layers: 2, heads: 2, intermediate: 48, maxPositions: 32, seed: 4 }
const tokens = Array.from({ length: 24 }, (_, i) => (i * 37 + 11) % SMALL.vocab)

const load = async (m: InspectedNeox) => neoxFamily.load(await gpu(), m)

describe("GPT-NeoX family (examples/plugin)", () => {
  for (const parallelResidual of [true, false]) {
    test(`log-probs equal the float64 reference (parallel residual ${parallelResidual}; plain RoPE and YaRN at 4x)`, async () => {
      const dir = join(root, `ref-${parallelResidual}`)
      writeRandomNeox(dir, { ...SMALL, parallelResidual })
      for (const scaling of [null, { rope_type: "yarn", factor: 4, original_max_position_embeddings: 8 }]) {
        const m = inspectNeox(dir, { ropeScaling: scaling })
        expect(m.config.rope.rotaryDim).toBe(4) // 25% of head_dim 16
        const table = m.rope(tokens.length)
        const model = await load(m)
        try {
          const got = await model.logprobs(tokens, { rope: table, chunk: 7 }) // chunks cross the KV cache
          const want = neoxLogprobsRef(m.config, m.checkpoint, tokens, table)
          let err = 0
          for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i]! - want[i]!))
          // f32 on the device against float64: log-probs of O(1) agree to a few 1e-6.
          expect(err).toBeLessThan(2e-5)
        } finally {
          model.dispose()
        }
      }
    }, 60_000)
  }

  test("decoding with the KV cache gives prefill's next-token log-probs", async () => {
    const dir = join(root, "decode")
    writeRandomNeox(dir, SMALL)
    const m = inspectNeox(dir)
    const model = await load(m)
    const table = resolveRope(m.config.rope)(tokens.length)
    try {
      const full = await model.logprobs(tokens, { rope: table })
      const s = model.session!(tokens.length)
      const first = await s.feed(tokens.slice(0, 10), table)
      expect(first[tokens[10]!]!).toBeCloseTo(full[9]!, 5)
      for (let t = 10; t < tokens.length - 1; t++) {
        const lp = await s.feed([tokens[t]!], table)
        expect(lp[tokens[t + 1]!]!).toBeCloseTo(full[t]!, 5)
      }
      s.dispose()
    } finally {
      model.dispose()
    }
  }, 60_000)

  test("a folder that is not NeoX is not recognised; a wrong tensor shape names the file and the tensor", async () => {
    expect(neoxFamily.recognizes({ architectures: ["LlamaForCausalLM"] })).toBe(false)
    const dir = join(root, "bad")
    writeRandomNeox(dir, SMALL)
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"))
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, intermediate_size: 50 }))
    expect(() => inspectNeox(dir)).toThrow(/model\.safetensors: tensor "gpt_neox\.layers\.0\.mlp\.dense_h_to_4h\.weight" has shape \[48, 32\]; expected \[50, 32\]/)
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, rotary_pct: 2 }))
    expect(() => inspectNeox(dir)).toThrow(/config\.json: rotary_pct must be/)
  })

  test("the example workflow: evaluate and a search generation on neox-tiny, through the plugin alone", async () => {
    const wf = await Effect.runPromise(loadWorkflow(join(EXAMPLE, "neox.yaml")))
    const rt = await gpu()
    const { manifest } = await Effect.runPromise(runWorkflow(wf, { store: join(root, "store"), printRunDir: false }).pipe(Effect.provide(layerSilent), Effect.provideService(Gpu, rt)))
    expect(manifest.status).toBe("done")
    const metrics = readMetrics(manifest.steps.find((s) => s.name === "evaluate")!.outputs["metrics"]!.path)
    expect(metrics.perplexity.map((e) => `${e.method}@${e.length}`).sort()).toEqual(["none@256", "none@512", "pi@256", "pi@512", "yarn@256", "yarn@512"])
    // an untrained byte model: perplexity near the vocabulary size, and finite
    for (const e of metrics.perplexity) expect(e.value).toBeGreaterThan(10)
    expect(metrics.passkey.map((e) => e.trials)).toEqual([2, 2, 2])
    const search = manifest.steps.find((s) => s.name === "search")!
    const factors = parseFactorSetFile(readFileSync(search.outputs["factors"]!.path, "utf8"))
    expect(factors.model.rotary_dim).toBe(8) // 25% of head_dim 32
    expect(factors.sets.map((s) => s.max_length)).toEqual([256, 512])
    expect((search.result as { evaluations: number[] }).evaluations[0]).toBeGreaterThanOrEqual(4)
  }, 600_000)

  test("`ropeway score --plugin` reads a NeoX folder; without the plugin it is an unsupported architecture", async () => {
    const dir = join(root, "score")
    writeRandomNeox(dir, SMALL)
    const file = join(root, "tokens.json")
    writeFileSync(file, JSON.stringify(tokens))
    const r = await runCli(["score", "--plugin", join(EXAMPLE, "plugin.ts"), "--model", dir, "--tokens", file, "--json"])
    expect(r.code).toBe(0)
    const out = JSON.parse(r.stdout) as { logprobs: number[]; perplexity: number }
    const m = inspectNeox(dir)
    const want = neoxLogprobsRef(m.config, m.checkpoint, tokens, m.rope(tokens.length))
    out.logprobs.forEach((x, i) => expect(Math.abs(x - want[i]!)).toBeLessThan(2e-5))
    const bare = await runCli(["score", "--model", dir, "--tokens", file])
    expect(bare.code).not.toBe(0)
    expect(bare.stderr).toContain("unsupported architecture GPTNeoXForCausalLM")
  }, 120_000)
})
