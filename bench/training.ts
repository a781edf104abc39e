/**
 * Training step (lossAndGrad: forward, head, backward) on the built-in `tiny` model (4 layers, D 128,
 * 4 heads / 2 KV, byte vocabulary; the default workflow fine-tunes it at 1024 tokens): tokens/s at T and
 * 4T (default 256 and 1024) against the forward-only loss of the same model measured in the same run,
 * and peak GPU buffer bytes at both lengths and their ratio (≤ 5× at 4× the length: linear, not T²).
 *
 * Peak bytes include the parameters and their gradients (the optimizer's moments are not allocated
 * here); "activations" is the peak above what was live before the step. `--T=<n>` sets T;
 * `--random --D=<n> --layers=<n>` times a random model of that size instead.
 */
import { acquireRuntime } from "../kernels/device.ts"
import { defaultInvFreq } from "../kernels/rope-table.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { fill } from "../kernels/scale.ts"
import type { Tensor } from "../kernels/tensor.ts"
import { type LlamaConfig, parseLlamaConfig, readLlamaConfig } from "../plugins/models/llama/config.ts"
import { randomLlamaConfig, randomLlamaTensors } from "../plugins/models/llama/random.ts"
import { type TrainableLlama, createTrainableLlama } from "../plugins/models/llama/train.ts"
import { TINY_DIR } from "../plugins/models/tiny/tiny.ts"
import { bestOf, report } from "./harness.ts"

const arg = (name: string, fallback: number): number => {
  const a = process.argv.find((s) => s.startsWith(`--${name}=`))
  return a === undefined ? fallback : Number(a.slice(name.length + 3))
}

export async function run(rt: GpuRuntime): Promise<void> {
  const T0 = arg("T", 256)
  let config: LlamaConfig
  let model: TrainableLlama
  if (process.argv.includes("--random")) {
    const D = arg("D", 128)
    const heads = Math.max(1, D / 32)
    const opts = { vocab: 256, hidden: D, layers: arg("layers", 4), heads, intermediate: Math.round((D * 8) / 3 / 16) * 16, maxPositions: 4 * T0, seed: 1 }
    config = parseLlamaConfig(randomLlamaConfig(opts), "bench/config.json", "bench")
    model = createTrainableLlama(rt, config, new Map(randomLlamaTensors(opts).map((t) => [t.name, Float32Array.from(t.data)])))
  } else {
    config = readLlamaConfig(TINY_DIR)
    model = createTrainableLlama(rt, config, TINY_DIR)
  }
  const D = config.hiddenSize
  const layers = config.numLayers
  const grads = new Map<string, Tensor>()
  for (const p of model.params) {
    const g = rt.tensor(p.value.shape)
    fill(rt, g, 0)
    grads.set(p.name, g)
  }
  const nParams = model.params.reduce((a, p) => a + p.value.shape.reduce((x, y) => x * y, 1), 0)
  const hd = config.headDim
  const base = defaultInvFreq(config.rope.base, hd)
  const rope = { rotaryDim: hd, invFreq: base.map((f) => f / 4), originalInvFreq: base, startTokens: 0, attentionScale: 1 }
  const sink = { grads: (n: string) => grads.get(n)! }
  const what = `${process.argv.includes("--random") ? "random" : "tiny"} ${layers}L D${D} ${(nParams / 1e6).toFixed(2)}M params`

  const peaks: number[] = []
  for (const T of [T0, 4 * T0]) {
    const tokens = Uint32Array.from({ length: T + 1 }, (_, i) => (i * 37 + 11) % 256)
    const batch = { tokens, rope }
    await model.lossAndGrad(batch, sink) // compile pipelines outside the timing
    await rt.sync()
    rt.trim()
    rt.resetPeak()
    const live0 = rt.stats.liveBytes
    await model.lossAndGrad(batch, sink)
    await rt.sync()
    const peak = rt.stats.peakBytes
    peaks.push(peak)
    report({ bench: "training", case: `peak bytes T=${T}`, value: peak / 2 ** 20, unit: "MiB", note: `${what}; activations ${((peak - live0) / 2 ** 20).toFixed(2)} MiB` })

    const fwdMs = await bestOf(() => model.lossAndGrad(batch), 300, 2)
    const stepMs = await bestOf(async () => {
      await model.lossAndGrad(batch, sink)
      await rt.sync()
    }, 300, 2)
    report({
      bench: "training", case: `step tokens/s T=${T}`, value: (T / stepMs) * 1000, unit: "tok/s",
      baseline: (T / fwdMs) * 1000, ratio: fwdMs / stepMs, note: "baseline: forward-only loss",
    })
  }
  report({ bench: "training", case: `peak ratio 4T/T (T=${T0})`, value: peaks[1]! / peaks[0]!, unit: "×", note: "target ≤ 5" })

  rt.release(...grads.values())
  model.dispose()
}

if (import.meta.main) {
  const rt = await acquireRuntime()
  await run(rt)
  rt.destroy()
}
