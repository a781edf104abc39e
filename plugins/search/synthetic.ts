/**
 * A synthetic fitness landscape for testing strategies without a model: a smooth "perplexity" of the
 * genome with deterministic per-genome noise (a fixed sample set gives the same perplexity twice), and
 * lower fidelities that correlate with the full one but are noisier and blind to part of it, like a
 * shorter length that cannot see the long-wavelength dims.
 */
import { Rng } from "../../common/rng.ts"
import { normal } from "./grid.ts"
import type { Fidelity, Genome } from "./types.ts"

export interface Landscape {
  readonly dims: number
  readonly scale: number
  /** The optimum λ*. */
  readonly target: readonly number[]
  /** Fitness of `g` at `fidelity` (lower is better). */
  readonly fitness: (g: Genome, fidelity: Fidelity) => number
}

export interface LandscapeOptions {
  readonly dims: number
  readonly scale: number
  readonly full: Fidelity
  /** σ of the noise at full fidelity (grows as 1/fraction at lower fidelity). */
  readonly noise?: number
  readonly seed?: number
}

function fnv1a(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0
  return h
}

/** A reproducible N(0, 1) for a (genome, fidelity, seed) triple. */
function noiseOf(g: Genome, f: Fidelity, seed: number): number {
  const key = JSON.stringify([g.factors.map((x) => Math.round(x * 1e6)), g.startToken ?? -1, g.attentionScale ?? -1, g.alpha ?? -1, g.beta ?? -1, f.samples, f.length, seed])
  return normal(Rng.seeded(fnv1a(key)))
}

export function smoothLandscape(o: LandscapeOptions): Landscape {
  const { dims: d, scale: s, full } = o
  const sigma = o.noise ?? 0.002
  const seed = o.seed ?? 7
  // λ*: 1 for the first fifth, then a smooth (cosine) rise to 1.1·s, then flat: YaRN-like but not YaRN.
  const a = Math.floor(0.2 * d)
  const b = Math.floor(0.75 * d)
  const target = Array.from({ length: d }, (_, i) => {
    if (i <= a) return 1
    if (i >= b) return 1.1 * s
    const t = (i - a) / (b - a)
    return Math.exp(Math.log(1.1 * s) * (0.5 - 0.5 * Math.cos(Math.PI * t)))
  })
  // Middle dims matter most, as in real searches.
  const weight = Array.from({ length: d }, (_, i) => (0.5 + Math.sin((Math.PI * (i + 0.5)) / d)) * (4 / d))
  const fitness = (g: Genome, f: Fidelity): number => {
    const frac = Math.min(1, (f.length / full.length) * Math.sqrt(f.samples / full.samples))
    let loss = 0
    for (let i = 0; i < d; i++) {
      const x = g.factors[i]
      if (x === undefined || !(x > 0)) return Number.POSITIVE_INFINITY
      const e = Math.log(x) - Math.log(target[i] as number)
      // A shorter window sees the long-wavelength (high) dims less.
      const seen = i >= b ? 0.3 + 0.7 * frac : 1
      loss += (weight[i] as number) * seen * e * e
    }
    if (g.startToken !== undefined) loss += 0.002 * Math.abs(Math.log2(1 + g.startToken) - 2)
    if (g.attentionScale !== undefined) loss += 10 * (g.attentionScale - 1.1) ** 2
    return 5 * Math.exp(loss) + (sigma / frac) * noiseOf(g, f, seed)
  }
  return { dims: d, scale: s, target, fitness }
}

/** YaRN-style ramp (1 up to `low`, linear to s at `high`, s above): an init vector for tests. */
export function rampFactors(dims: number, s: number, low: number, high: number): number[] {
  return Array.from({ length: dims }, (_, i) => {
    const t = Math.min(1, Math.max(0, (i - low) / (high - low)))
    return 1 + (s - 1) * t
  })
}
