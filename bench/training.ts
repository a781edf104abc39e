/**
 * Training step (lossAndGrad: forward, head, backward with per-layer recomputation) on a small random
 * llama (4 layers, D 128, 4 heads, byte vocabulary): peak GPU buffer bytes at T and 4T and their ratio
 * (the target: ≤ 5× at 4× the length, i.e. linear, not T²), and tokens/s of a training step
 * against the forward-only loss of the same model measured in the same run.
 *
 * Peak bytes include the parameters and their gradients (the optimizer's moments are not allocated
 * here); "activations" is the peak above what was live before the step. Sizes: `--T=<n>` (default 256),
 * `--D=<n>`, `--layers=<n>`.
 */
import { acquireRuntime } from "../kernels/device.ts"
import { defaultInvFreq } from "../kernels/rope-table.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { fill } from "../kernels/scale.ts"
import type { Tensor } from "../kernels/tensor.ts"
import { parseLlamaConfig } from "../plugins/models/llama/config.ts"
import { randomLlamaConfig, randomLlamaTensors } from "../plugins/models/llama/random.ts"
import { createTrainableLlama } from "../plugins/models/llama/train.ts"
import { bestOf, report } from "./harness.ts"

const arg = (name: string, fallback: number): number => {
  const a = process.argv.find((s) => s.startsWith(`--${name}=`))
  return a === undefined ? fallback : Number(a.slice(name.length + 3))
}

export async function run(rt: GpuRuntime): Promise<void> {
  const T0 = arg("T", 256)
  const D = arg("D", 128)
  const layers = arg("layers", 4)
  const heads = Math.max(1, D / 32)
  const opts = { vocab: 256, hidden: D, layers, heads, intermediate: Math.round((D * 8) / 3 / 16) * 16, maxPositions: 4 * T0, seed: 1 }
  const config = parseLlamaConfig(randomLlamaConfig(opts), "bench/config.json", "bench")
  const host = new Map(randomLlamaTensors(opts).map((t) => [t.name, Float32Array.from(t.data)]))
  const model = createTrainableLlama(rt, config, host)
  const grads = new Map<string, Tensor>()
  for (const p of model.params) {
    const g = rt.tensor(p.value.shape)
    fill(rt, g, 0)
    grads.set(p.name, g)
  }
  const nParams = model.params.reduce((a, p) => a + p.value.shape.reduce((x, y) => x * y, 1), 0)
  const hd = D / heads
  const base = defaultInvFreq(10000, hd)
  const rope = { rotaryDim: hd, invFreq: base.map((f) => f / 4), originalInvFreq: base, startTokens: 0, attentionScale: 1 }
  const sink = { grads: (n: string) => grads.get(n)! }
  const what = `${layers}L D${D} ${(nParams / 1e6).toFixed(2)}M params`

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
