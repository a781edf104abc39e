/**
 * Whole-model scoring: tokens/s of `model.logprobs` on a 4-layer d=256 vocab-256 LLaMA at 2k and 8k
 * tokens, against (a) llama.cpp's CPU build on the same weights (GGUF, f16 KV cache, flash attention,
 * probabilities at every position — its fast path) and (b) the plain TypeScript float64 reference on a
 * shorter prefix (it is O(T²) and slow, so its tokens/s is measured at 256 tokens and says so).
 * Also the peak GPU buffer bytes of scoring at 4k and 16k tokens.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { writeGguf } from "../common/gguf.ts"
import { llamaToGguf } from "../plugins/models/llama/gguf-export.ts"
import { inspectLlama, loadLlama } from "../plugins/models/llama/model.ts"
import { writeRandomLlama } from "../plugins/models/llama/random.ts"
import { readLayer } from "../plugins/models/llama/weights.ts"
import { Checkpoint } from "../common/safetensors.ts"
import { referenceLogprobs } from "../plugins/models/llama/model.ref.ts"
import { bestOf, report } from "./harness.ts"
import { scoreWithLlamaCpp } from "./llamacpp.ts"

/** The bench model (also run by bench/profile.ts, adapters.ts and runtimes.ts). */
export const MODEL = { vocab: 256, hidden: 256, layers: 4, heads: 4, kvHeads: 4, intermediate: 768, maxPositions: 32768, seed: 7 }

export function tokensOf(n: number): number[] {
  let s = 12345
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 16) % MODEL.vocab)
}

function hostCheckpoint(dir: string) {
  const { config, checkpoint } = inspectLlama(dir)
  const layers = Array.from({ length: config.numLayers }, (_, i) => readLayer(config, checkpoint, i))
  return {
    config,
    layers,
    embed: checkpoint.read("model.embed_tokens.weight"),
    norm: checkpoint.read("model.norm.weight"),
    lmHead: config.tieWordEmbeddings ? undefined : checkpoint.read("lm_head.weight"),
  }
}

function referenceModel(dir: string) {
  const ckpt = Checkpoint.open(dir)
  const tensors = new Map<string, { shape: readonly number[]; data: Float64Array }>()
  for (const [name, info] of ckpt.tensors) tensors.set(name, { shape: info.shape, data: Float64Array.from(ckpt.read(name)) })
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>
  return { config, tensors }
}

export async function run(rt: GpuRuntime): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ropeway-bench-"))
  try {
    writeRandomLlama(dir, MODEL)
    const model = await loadLlama(rt, dir)
    const gguf = join(dir, "model.gguf")
    await writeGguf(gguf, llamaToGguf(hostCheckpoint(dir), { dtype: "f32" }))

    // The baseline's tokens/s at 256 tokens (the float64 TypeScript reference is quadratic and slow).
    const ref = referenceModel(dir)
    const short = tokensOf(256)
    const refMs = await bestOf(() => referenceLogprobs(ref, short), 0, 1)
    const refTps = short.length / (refMs / 1000)

    for (const n of [2048, 8192]) {
      const tokens = tokensOf(n)
      await model.logprobs(tokens) // warm-up: compiles every kernel variant this length uses
      const ms = await bestOf(() => model.logprobs(tokens), 0, n > 4096 ? 1 : 3)
      const tps = n / (ms / 1000)
      report({ bench: "scoring", case: `ropeway ${n} tokens`, value: tps, unit: "tok/s", baseline: refTps, ratio: tps / refTps, note: "baseline: float64 TS reference at 256 tokens" })
      let best = Infinity
      try {
        for (let i = 0; i < (n > 4096 ? 1 : 3); i++) {
          const r = await scoreWithLlamaCpp(gguf, tokens, { flashAttention: true, kvType: "F16", threads: 2 })
          best = Math.min(best, r.seconds)
        }
      } catch (e) {
        report({ bench: "scoring", case: `vs llama.cpp ${n} tokens`, value: tps, unit: "tok/s", note: `no llama.cpp here: ${String(e).split("\n")[0]}` })
        continue
      }
      const cppTps = n / best
      report({ bench: "scoring", case: `vs llama.cpp ${n} tokens`, value: tps, unit: "tok/s", baseline: cppTps, ratio: tps / cppTps, note: "llama.cpp CPU, f16 KV, flash attention, 2 threads" })
    }

    const peaks: number[] = []
    for (const n of [4096, 16384]) {
      rt.flush()
      rt.trim()
      rt.resetPeak()
      const weights = rt.stats.liveBytes
      await model.logprobs(tokensOf(n))
      const peak = rt.stats.peakBytes - weights
      peaks.push(peak)
      report({ bench: "scoring", case: `peak GPU bytes ${n} tokens`, value: peak / 2 ** 20, unit: "MiB", note: `above the ${(weights / 2 ** 20).toFixed(1)} MiB held before the call (weights)` })
    }
    report({ bench: "scoring", case: "peak 16k / 4k", value: peaks[1]! / peaks[0]!, unit: "×", note: "linear in T would be 4×" })
    model.dispose()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (import.meta.main) {
  const { acquireRuntime } = await import("../kernels/device.ts")
  const rt = await acquireRuntime()
  await run(rt)
  rt.destroy()
}
