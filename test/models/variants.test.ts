/**
 * Kernel variants change speed, never results: a scoring call and a training step with every tunable
 * op's every candidate forced in turn give bit-identical outputs (log-probabilities, loss and every
 * gradient), so metrics are the same whichever variants a machine's tuning picks (kernels/tuning.ts).
 * The real-GPU matmul (workgroup-memory tiling) is held to the same: it sums in the same order.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { cpuRowCandidates } from "../../kernels/attention.ts"
import { tilingName, trainCandidates } from "../../kernels/attention-backward.ts"
import { matmulCandidates, setMatmulVariant } from "../../kernels/matmul.ts"
import { defaultInvFreq } from "../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { fill } from "../../kernels/scale.ts"
import type { Tensor } from "../../kernels/tensor.ts"
import { forceVariant } from "../../kernels/tuning.ts"
import { readLlamaConfig } from "../../plugins/models/llama/config.ts"
import { loadLlama } from "../../plugins/models/llama/model.ts"
import { createTrainableLlama } from "../../plugins/models/llama/train.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "./random-model.ts"
import { randomTokens } from "../../plugins/models/llama/model.ref.ts"

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})

// GQA, head dim 16; 100-token training steps and 100-token scoring chunks reach the big-block matmul
// candidates (M > 64), the weight gradients (M = 16..64) the small ones.
const MODEL = { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 64, seed: 11 }
const HEAD_DIM = 16
const T = 100

interface Outputs {
  readonly logprobs: Float64Array
  readonly loss: number
  readonly grads: ReadonlyMap<string, Uint32Array>
}

async function run(rt: GpuRuntime, dir: string): Promise<Outputs> {
  const scorer = await loadLlama(rt, dir)
  const logprobs = await scorer.logprobs(randomTokens(2 * T + 1, MODEL.vocab, 3), { chunk: T })
  scorer.dispose()
  const config = readLlamaConfig(dir)
  // keepActivationBytes 0: the first layer is recomputed in the backward, as long sequences do.
  const model = createTrainableLlama(rt, config, dir, { keepActivationBytes: 0 })
  const grads = new Map<string, Tensor>()
  for (const p of model.params) {
    const g = rt.tensor(p.value.shape)
    fill(rt, g, 0)
    grads.set(p.name, g)
  }
  const base = defaultInvFreq(10000, HEAD_DIM)
  const rope = { rotaryDim: HEAD_DIM, invFreq: base.map((f) => f / 2), originalInvFreq: base, startTokens: 0, attentionScale: 1 }
  // Two packed documents: the segmented attention paths too.
  const positions = Array.from({ length: T }, (_, i) => (i < 37 ? i : i - 37))
  const { loss } = await model.lossAndGrad({ tokens: randomTokens(T + 1, MODEL.vocab, 5), positions, segments: positions.map((_, i) => (i < 37 ? 0 : 1)), rope }, { grads: (n) => grads.get(n) })
  const bits = new Map<string, Uint32Array>()
  for (const [name, g] of grads) bits.set(name, new Uint32Array((await rt.read(g)).buffer))
  rt.release(...grads.values())
  model.dispose()
  return { logprobs, loss, grads: bits }
}

function expectSame(got: Outputs, want: Outputs, what: string): void {
  const lpGot = new Uint32Array(got.logprobs.buffer), lpWant = new Uint32Array(want.logprobs.buffer)
  expect(lpGot.length).toBe(lpWant.length)
  const firstDiff = (a: Uint32Array, b: Uint32Array): number => a.findIndex((v, i) => v !== b[i])
  if (firstDiff(lpGot, lpWant) >= 0) throw new Error(`${what}: log-probabilities differ at ${Math.floor(firstDiff(lpGot, lpWant) / 2)}`)
  expect(Object.is(got.loss, want.loss)).toBe(true)
  for (const [name, g] of want.grads) {
    const at = firstDiff(got.grads.get(name)!, g)
    if (at >= 0) throw new Error(`${what}: gradient ${name} differs at ${at}`)
  }
}

describe("kernel variants give bit-identical results", () => {
  const ops: readonly (readonly [string, readonly string[]])[] = [
    ["matmul-cpu", [...new Set([...matmulCandidates(T), ...matmulCandidates(64), ...matmulCandidates(16)])]],
    ["attention-cpu", cpuRowCandidates(HEAD_DIM).map((r) => `r${r}`)],
    ["attention-train-forward", trainCandidates("forward", HEAD_DIM).map(tilingName)],
    ["attention-train-dq", trainCandidates("dq", HEAD_DIM).map(tilingName)],
    ["attention-train-dkdv", trainCandidates("dkdv", HEAD_DIM).map(tilingName)],
  ]
  let dir = ""
  let baseline: Outputs | undefined
  const reference = async (rt: GpuRuntime): Promise<Outputs> => {
    if (baseline === undefined) {
      dir = tempDir("ropeway-variants-")
      dirs.push(dir)
      writeRandomModel(dir, MODEL)
      baseline = await run(rt, dir)
    }
    return baseline
  }
  for (const [op, candidates] of ops) {
    test(`${op}: ${candidates.join(", ")}`, async () => {
      const rt = await gpu()
      const want = await reference(rt)
      try {
        for (const c of candidates) {
          forceVariant(rt, op, c)
          expectSame(await run(rt, dir), want, `${op} ${c}`)
        }
      } finally {
        forceVariant(rt, op, undefined)
      }
    }, 600_000)
  }
  test("the real-GPU matmul kernel (tiled) too", async () => {
    const rt = await gpu()
    const want = await reference(rt)
    try {
      setMatmulVariant("gpu")
      expectSame(await run(rt, dir), want, "gpu matmul")
    } finally {
      setMatmulVariant(undefined)
    }
  }, 600_000)
})

describe("with 16-bit weights and a paged bf16 KV cache", () => {
  test("scoring gives the same bits under every matmul and attention candidate, and the real-GPU matmul", async () => {
    const rt = await gpu()
    const dir16 = tempDir("ropeway-variants-bf16-")
    dirs.push(dir16)
    writeRandomModel(dir16, { ...MODEL, dtype: "BF16" })
    const model = await loadLlama(rt, dir16)
    const tokens = randomTokens(2 * T + 1, MODEL.vocab, 3)
    // pages of 64 rows inside chunks of 100: page and chunk boundaries fall apart
    const score = async (m = model): Promise<Uint32Array> => new Uint32Array((await m.logprobs(tokens, { chunk: T, pageRows: 64 })).buffer)
    try {
      expect(model.kvDtype).toBe("bf16")
      const want = await score()
      const runs: [string, string | undefined][] = [
        ...[...new Set([...matmulCandidates(T), ...matmulCandidates(64), ...matmulCandidates(16)])].map((c): [string, string] => ["matmul-cpu", c]),
        ...cpuRowCandidates(HEAD_DIM).map((r): [string, string] => ["attention-cpu", `r${r}`]),
        ["gpu matmul", undefined],
      ]
      for (const [op, c] of runs) {
        if (c === undefined) setMatmulVariant("gpu")
        else forceVariant(rt, op, c)
        try {
          // the real-GPU kernel reads weights prepared for it (storage): a model loaded under it
          const gpuModel = c === undefined ? await loadLlama(rt, dir16) : undefined
          const got = await score(gpuModel)
          gpuModel?.dispose()
          const at = got.findIndex((v, i) => v !== want[i])
          if (at >= 0) throw new Error(`${op} ${c ?? ""}: log-probabilities differ at ${Math.floor(at / 2)}`)
        } finally {
          if (c === undefined) setMatmulVariant(undefined)
          else forceVariant(rt, op, undefined)
        }
      }
    } finally {
      model.dispose()
    }
  }, 600_000)
})
