/**
 * A seeded PRNG whose whole state is four uint32s, so it can live inside a strategy's JSON state:
 * a run checkpointed between generations and resumed draws exactly the numbers it would have drawn.
 * sfc32 (Chris Doty-Humphrey's small fast counter), seeded through splitmix32.
 */

/** The generator's state: [a, b, c, counter], each a uint32. */
export type RngState = [number, number, number, number]

function splitmix32(x: number): [number, number] {
  const next = (x + 0x9e3779b9) >>> 0
  let z = next
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
  return [next, (z ^ (z >>> 16)) >>> 0]
}

export function seedRng(seed: number): RngState {
  let x = (Math.trunc(seed) ^ 0x5bd1e995) >>> 0
  const out: number[] = []
  for (let i = 0; i < 3; i++) {
    const [nx, v] = splitmix32(x)
    x = nx
    out.push(v)
  }
  const state: RngState = [out[0] ?? 0, out[1] ?? 0, out[2] ?? 0, 1]
  // sfc32 wants a few rounds to mix a weak seed.
  for (let i = 0; i < 12; i++) nextUint32(state)
  return state
}

/** Advances `state` in place and returns a uint32. */
export function nextUint32(s: RngState): number {
  const [a, b, c, d] = s
  const t = (((a + b) >>> 0) + d) >>> 0
  s[3] = (d + 1) >>> 0
  s[0] = (b ^ (b >>> 9)) >>> 0
  s[1] = (c + (c << 3)) >>> 0
  const rot = ((c << 21) | (c >>> 11)) >>> 0
  s[2] = (rot + t) >>> 0
  return t
}

/**
 * A mutable view over an RngState. Strategies copy the state out of their (immutable) State, draw
 * through an Rng, and store `rng.state` back, so the State stays the only source of randomness.
 */
export class Rng {
  readonly state: RngState
  constructor(state: RngState) {
    this.state = [state[0], state[1], state[2], state[3]]
  }
  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = nextUint32(this.state) >>> 5
    const lo = nextUint32(this.state) >>> 6
    return (hi * 67108864 + lo) / 9007199254740992
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!(n >= 1)) throw new Error(`Rng.int: n must be ≥ 1, got ${n}`)
    return Math.min(n - 1, Math.floor(this.uniform() * n))
  }
  /** Standard normal (Box–Muller; one of the pair is discarded so no hidden cache is needed). */
  normal(): number {
    const u = 1 - this.uniform() // (0, 1], keeps log finite
    const v = this.uniform()
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
  }
  /** An element of a non-empty list. */
  pick<T>(xs: readonly T[]): T {
    const x = xs[this.int(xs.length)]
    if (x === undefined) throw new Error("Rng.pick: empty list")
    return x
  }
}
