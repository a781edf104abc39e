/**
 * Cross-entropy (log-softmax) backward for next-token training. The caller folds the loss's mean and
 * its label mask into `rowWeights`: loss = −Σ_t rowWeights[t]·logprob_t(target_t), e.g. 1/N for scored
 * positions and 0 for ignored ones (HF's −100 labels).
 */
import { logsumexpRows } from "./logprobs.ts"
import { strideGroups } from "./add.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape, shapeString } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./cross-entropy-backward.wgsl", import.meta.url)

const prelude = (vec: boolean): string =>
  vec
    ? "alias VT = vec4f;\nconst LANE_OFFSETS = vec4f(0.0, 1.0, 2.0, 3.0);\n"
    : "alias VT = f32;\nconst LANE_OFFSETS = 0.0;\n"

/** logits [Tc, V], targets u32 [Tc], rowWeights f32 [Tc] → dLogits [Tc, V]. */
export function crossEntropyBackward(rt: GpuRuntime, logits: Tensor, targets: Tensor, rowWeights: Tensor): Tensor {
  const [rows, V] = logits.shape
  if (logits.shape.length !== 2 || rows === undefined || V === undefined || V < 1) {
    throw new Error(`crossEntropyBackward: logits has shape ${shapeString(logits.shape)}, expected [Tc, V]`)
  }
  expectShape("crossEntropyBackward", "targets", targets, [rows])
  expectShape("crossEntropyBackward", "rowWeights", rowWeights, [rows])
  if (targets.dtype !== "u32") throw new Error(`crossEntropyBackward: targets must be u32, got ${targets.dtype}`)
  // Lane indices are compared as f32: exact below 2^24.
  if (V >= 2 ** 24) throw new Error(`crossEntropyBackward: vocabulary ${V} ≥ 2^24`)
  const out = rt.tensor([rows, V])
  if (rows === 0) return out
  const lse = logsumexpRows(rt, logits)
  const vec = V % 4 === 0
  const cols = vec ? V / 4 : V
  const n = rows * cols
  const params = uniforms([
    ["u32", n],
    ["u32", cols],
    ["u32", vec ? 4 : 1],
  ])
  const pipe = rt.pipeline(`cross-entropy-backward-${vec ? 4 : 1}`, prelude(vec) + src)
  rt.dispatch(pipe, [logits, lse, targets, rowWeights, out], [strideGroups(rt, n, 64)], params)
  rt.release(lse)
  return out
}
