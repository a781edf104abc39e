/**
 * A small seeded PRNG (xoshiro128**, seeded through splitmix32) for everything that must be repeatable:
 * shuffling, synthetic data, prompt sampling. Only 32-bit integer ops and exact power-of-two divisions,
 * so the same seed gives the same stream on every machine and JS engine (Math.random cannot be seeded).
 */

/** The full generator state: four unsigned 32-bit words. Plain data, so it can go into a checkpoint. */
export type RngState = readonly [number, number, number, number]

/** splitmix32 step: a well-mixed 32-bit hash of a counter, used to expand seeds into state. */
const splitmix32 = (x: number): number => {
  let z = (x + 0x9e3779b9) | 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return (z ^ (z >>> 16)) >>> 0
}

/**
 * Mix a seed and any number of stream indices (e.g. epoch, document index) into one 32-bit value, so
 * independent streams can be derived without drawing from a shared generator (random access, resume).
 */
export const mixSeed = (seed: number, ...stream: readonly number[]): number => {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`)
  // Both halves of a 53-bit seed take part, so seeds 1 and 2**32 + 1 differ.
  let h = splitmix32((seed >>> 0) ^ 0x2545f491)
  h = splitmix32(h ^ Math.floor(Math.abs(seed) / 2 ** 32) ^ (seed < 0 ? 0x5bd1e995 : 0))
  for (const s of stream) {
    if (!Number.isSafeInteger(s)) throw new RangeError(`stream index must be a safe integer, got ${s}`)
    h = splitmix32(h ^ (s >>> 0))
    h = splitmix32(h ^ Math.floor(Math.abs(s) / 2 ** 32))
  }
  return h
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k))

export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number

  private constructor(state: RngState) {
    ;[this.a, this.b, this.c, this.d] = state
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1 // the all-zero state is a fixed point
  }

  /** A generator for `seed`, optionally on an independent sub-stream (e.g. `Rng.seeded(seed, epoch)`). */
  static seeded(seed: number, ...stream: readonly number[]): Rng {
    let h = mixSeed(seed, ...stream)
    const next = (): number => (h = splitmix32(h))
    return new Rng([next(), next(), next(), next()])
  }

  static fromState(state: RngState): Rng {
    if (state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff))
      throw new RangeError(`RNG state must be four unsigned 32-bit integers, got ${JSON.stringify(state)}`)
    return new Rng(state)
  }

  state(): RngState {
    return [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0]
  }

  /** Next unsigned 32-bit integer (xoshiro128**). */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0
    const t = this.b << 9
    this.c ^= this.a
    this.d ^= this.b
    this.b ^= this.c
    this.a ^= this.d
    this.c ^= t
    this.d = rotl(this.d, 11)
    return result
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  float(): number {
    const hi = this.u32() >>> 5 // 27 bits
    const lo = this.u32() >>> 6 // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992
  }

  /** Uniform integer in [min, max], both inclusive; unbiased (rejection sampling). Range up to 2^32. */
  int(min: number, max: number): number {
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max < min)
      throw new RangeError(`bad integer range [${min}, ${max}]`)
    const span = max - min + 1
    if (span > 2 ** 32) throw new RangeError(`integer range [${min}, ${max}] wider than 2^32`)
    if (span === 2 ** 32) return min + this.u32()
    const limit = 2 ** 32 - (2 ** 32 % span) // largest multiple of span that fits
    for (;;) {
      const x = this.u32()
      if (x < limit) return min + (x % span)
    }
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError("pick from an empty list")
    return items[this.int(0, items.length - 1)] as T
  }

  /** Fisher–Yates shuffle in place; returns the same array. */
  shuffle<T, A extends { length: number; [i: number]: T }>(items: A): A {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i)
      const t = items[i] as T
      items[i] = items[j] as T
      items[j] = t
    }
    return items
  }

  /** A uniformly random permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n)
    for (let i = 0; i < n; i++) p[i] = i
    return this.shuffle<number, Uint32Array>(p)
  }
}
