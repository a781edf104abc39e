/**
 * Next-token log-probabilities from a chunk of logits rows, so the caller never needs all T×V logits
 * at once: produce logits for a few rows, reduce them here to one number per row, reuse the buffer.
 */
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, shapeString } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./logprobs.wgsl", import.meta.url)

function rowsOf(op: string, logits: Tensor): [number, number] {
  const [rows, V] = logits.shape
  if (logits.shape.length !== 2 || rows === undefined || V === undefined || V < 1) throw new Error(`${op}: logits has shape ${shapeString(logits.shape)}, expected [Tc, V]`)
  return [rows, V]
}

function run(rt: GpuRuntime, entry: "lse" | "logprob", logits: Tensor, targets: Tensor | undefined): Tensor {
  const [rows, V] = rowsOf(entry === "lse" ? "logsumexpRows" : "logprobsFromLogits", logits)
  const vec = V % 4 === 0
  const out = rt.tensor([rows])
  const params = uniforms([
    ["u32", rows],
    ["u32", vec ? V / 4 : V],
    ["u32", V],
  ])
  const groups = Math.max(1, Math.min(rows, rt.limits.maxComputeWorkgroupsPerDimension))
  const bindings = targets === undefined ? [logits, out] : [logits, out, targets]
  rt.dispatch(rt.pipeline("logprobs", src, `${entry}${vec ? 4 : 1}`), bindings, [groups], params)
  return out
}

/** logsumexp over each row of logits [Tc, V] → [Tc]. */
export function logsumexpRows(rt: GpuRuntime, logits: Tensor): Tensor {
  return run(rt, "lse", logits, undefined)
}

/** logits[t, target_t] − logsumexp_v logits[t, v] → [Tc]. Targets (u32 [Tc]) must be < V. */
export function logprobsFromLogits(rt: GpuRuntime, logits: Tensor, targets: Tensor): Tensor {
  const [rows] = rowsOf("logprobsFromLogits", logits)
  expectShape("logprobsFromLogits", "targets", targets, [rows])
  if (targets.dtype !== "u32") throw new Error(`logprobsFromLogits: targets must be u32, got ${targets.dtype}`)
  return run(rt, "logprob", logits, targets)
}
