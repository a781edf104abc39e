/** Seeded inputs for the kernel table: the same seed gives the same values, so a failure reproduces. */

/** n values uniform in [offset − scale, offset + scale), from an LCG. */
export function rand(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = ((s / 2 ** 32) * 2 - 1) * scale + offset
  }
  return out
}

/** A stream of uniform values in [0, 1) from the same LCG. */
export function uniform(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}
