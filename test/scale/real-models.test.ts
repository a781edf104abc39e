/**
 * Real model shapes at real sizes, opt-in (ROPEWAY_SLOW_TESTS=1: minutes and gigabytes; CI runs the
 * 135M shape's short check in test/models/published-shapes.test.ts instead):
 *
 * - a Llama-3.2-1B-shaped bf16 model (1.24B parameters, 2.47 GB in 3 shards) scores 512 tokens in a child
 *   process whose peak resident memory stays ≤ 1.5× the weight files, and its log-probs (f32 KV cache: a
 *   16-bit one rounds K and V, ~3e-2 in log p) agree with the float64 reference (llama3 RoPE from the
 *   config, computed by the reference itself) to 1e-3;
 * - a LoRA fine-tune of the SmolLM2-135M shape runs from a workflow file, is SIGKILL'd, resumes, and
 *   ends with the uninterrupted run's adapter bytes; its merged export scores like the adapters at run time.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { spawnSync } from "node:child_process"
import { readdirSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { randomTokens, referenceLogprobs, referenceModelFromFolder } from "../../plugins/models/llama/model.ref.ts"
import { PUBLISHED_SHAPES, writePublishedShape } from "../../plugins/models/llama/random.ts"
import { removeDir, tempDir } from "../models/random-model.ts"
import { killAtCheckpoint, ROOT, runWorkflowIn } from "../stages/training-kit.ts"

const slow = process.env.ROPEWAY_SLOW_TESTS === "1"
const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})

describe.skipIf(!slow)("Llama-3.2-1B shape (opt-in)", () => {
  test("512 tokens: peak process memory ≤ 1.5× the weight files; log-probs within 1e-3 of float64", () => {
    const dir = tempDir("ropeway-1b-")
    dirs.push(dir)
    const shape = PUBLISHED_SHAPES["llama-3.2-1b"]
    writePublishedShape(dir, "llama-3.2-1b", 5)
    const files = readdirSync(dir).filter((f) => f.endsWith(".safetensors"))
    const fileBytes = files.reduce((a, f) => a + statSync(join(dir, f)).size, 0)
    expect(fileBytes).toBeGreaterThan(2.4e9)
    const tokens = randomTokens(512, shape.vocab, 9)
    const tokensFile = join(dir, "tokens.json")
    writeFileSync(tokensFile, JSON.stringify(tokens))
    const r = spawnSync(join(ROOT, "node_modules", ".bin", "bun"), [join(import.meta.dirname, "score-child.ts"), dir, tokensFile, "f32"], {
      cwd: ROOT, env: { ...process.env, EGL_PLATFORM: "surfaceless" }, encoding: "utf8", maxBuffer: 1 << 26,
    })
    if (r.status !== 0) throw new Error(`score child failed: ${r.stderr}`)
    const got = JSON.parse(r.stdout.split("\n").filter((l) => l.startsWith("{")).at(-1)!) as { logprobs: number[]; rss: number; weightBytes: number }
    console.log(`1B shape: files ${(fileBytes / 1e9).toFixed(3)} GB, peak RSS ${(got.rss / 1e9).toFixed(3)} GB (${(got.rss / fileBytes).toFixed(2)}×), device bytes after load ${(got.weightBytes / 1e9).toFixed(3)} GB`)
    expect(got.rss).toBeLessThanOrEqual(1.5 * fileBytes)

    const t0 = performance.now()
    const want = referenceLogprobs(referenceModelFromFolder(dir), tokens)
    let worst = 0
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got.logprobs[i]! - want[i]!))
    console.log(`1B shape: max |Δ log p| ${worst.toExponential(2)} over ${want.length} positions (reference ${((performance.now() - t0) / 1000).toFixed(0)} s)`)
    expect(worst).toBeLessThan(1e-3)
  }, 3_600_000)
})

describe.skipIf(!slow)("SmolLM2-135M shape: LoRA from a workflow file (opt-in)", () => {
  test("SIGKILL'd, re-run: the uninterrupted run's adapter bytes; its merged export scores like the adapters at run time (1e-4)", async () => {
    const { createHash } = await import("node:crypto")
    const { readFileSync } = await import("node:fs")
    const { gpu } = await import("../gpu-shared.ts")
    const { runExport } = await import("../../plugins/export/run.ts")
    const { llamaFamily } = await import("../../plugins/models/llama/family.ts")
    const { loadLlama } = await import("../../plugins/models/llama/model.ts")
    const { SafetensorsFile } = await import("../../common/safetensors.ts")
    const { ADAPTER_WEIGHTS } = await import("../../training/peft.ts")
    const { resolveRope } = await import("../../plugins/rope/index.ts")

    const dir = tempDir("ropeway-135m-lora-")
    dirs.push(dir)
    const model = join(dir, "model")
    writePublishedShape(model, "smollm2-135m", 3)
    const file = join(dir, "lora.yaml")
    writeFileSync(file, `
name: lora-135m
seed: 4
model: ${model}
steps:
  tune:
    stage: finetune
    inputs: { model: model }
    params:
      seqLen: 256
      steps: 5
      lr: 0.001
      warmup: 1
      checkpointEvery: 1
      keepCheckpoints: 10
      data: { tasks: { filler: 1 } }
      lora: { rank: 8, alpha: 16, dropout: 0.05, targets: [q_proj, k_proj, v_proj, o_proj], trainNorms: true, trainEmbeddings: true }
`)
    const killedStore = join(dir, "killed")
    const killedAt = await killAtCheckpoint(file, killedStore, 2, 1_200_000)
    expect(killedAt).toContain("step-00000002")
    expect(killedAt).not.toContain("step-00000005")

    const rt = await gpu()
    const resumed = await runWorkflowIn(file, killedStore, rt)
    const fresh = await runWorkflowIn(file, join(dir, "fresh"), rt)
    const out = (r: typeof resumed) => r.manifest.steps[0]!.outputs["model"]!.path
    const sha = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex")
    expect((resumed.manifest.steps[0]!.result as { resumedAt: number }).resumedAt).toBeGreaterThanOrEqual(2)
    expect(sha(join(out(resumed), ADAPTER_WEIGHTS))).toBe(sha(join(out(fresh), ADAPTER_WEIGHTS)))

    // merged export vs the adapters applied at run time
    const exp = join(dir, "export")
    expect((await runExport(rt, { model: out(fresh), out: exp, formats: ["hf", "peft"], llamacpp: false })).ok).toBe(true)
    const config = llamaFamily.inspect(model).config
    const lora = { rank: 8, alpha: 16, dropout: 0.05, targets: ["q_proj", "k_proj", "v_proj", "o_proj"], trainNorms: true, trainEmbeddings: true, seed: 0 }
    const unmerged = llamaFamily.trainable!(rt, config, model, { lora })
    const adapter = SafetensorsFile.open(join(out(fresh), ADAPTER_WEIGHTS))
    for (const p of unmerged.params) rt.write(p.value, adapter.read(`base_model.model.${p.name}`))
    const merged = await loadLlama(rt, join(exp, "hf"))
    try {
      const tokens = randomTokens(257, PUBLISHED_SHAPES["smollm2-135m"].vocab, 2)
      const table = resolveRope(config.rope)(tokens.length)
      const a = (await unmerged.lossAndGrad({ tokens, rope: table })).logprobs!
      const m = await merged.logprobs(tokens, { rope: table, kvCache: "f32" }) // training attends in f32
      let worst = 0
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - m[i]!))
      console.log(`135M LoRA: merged export vs adapters at run time: max |Δ log p| ${worst.toExponential(2)}`)
      expect(worst).toBeLessThan(1e-4)
    } finally {
      unmerged.dispose()
      merged.dispose()
    }
  }, 3_600_000)
})
