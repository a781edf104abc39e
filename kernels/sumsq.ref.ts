/** Float64 reference for the sum of squares over several tensors. */
export function sumSquaresRef(tensors: readonly ArrayLike<number>[]): number {
  let s = 0
  for (const t of tensors) for (let i = 0; i < t.length; i++) s += t[i]! * t[i]!
  return s
}

/** torch.nn.utils.clip_grad_norm_'s coefficient: min(1, maxNorm / (norm + 1e-6)). */
export function clipCoefRef(norm: number, maxNorm: number): number {
  return Math.min(1, maxNorm / (norm + 1e-6))
}
