/**
 * Search spaces and their genetic operators (LongRoPE §2.2–2.4, LongRoPE2 §7 of the method notes).
 *
 * - dim_mono: λ non-decreasing, λ_0 ≥ lower (1), λ_last ≤ upper, mutated genes on the step grid.
 * - dim_piece_mono: integer breakpoints 0 ≤ α < β < d/2; genes ≤ α are 1, genes > β are s; the genes
 *   between are a non-decreasing search in [1, s]. All genes (α, β and every λ) can mutate: the public
 *   code's index offset that never mutates the last two genes is not copied.
 * - longrope2: a critical dim cd; dims < cd are λ_cd^(i/cd) (recomputed after every operator); dims ≥ cd
 *   strictly increasing in [sMin, sMax] on the grid, the last at most previous + lastGap.
 *
 * Extra genes: n̂ (start tokens) is never mutated, only tried (see evolutionary.ts) and inherited in
 * crossover; m (attention scale) mutates like a gene, with probability p, by a normal step snapped to
 * its own grid and clamped to [min, max], and is a crossover slot.
 */
import { drawGrid, normal, snap } from "./grid.ts"
import type { Rng } from "../../common/rng.ts"
import type { Genome } from "./types.ts"

export interface DimMonoSpace {
  readonly kind: "dim_mono"
  readonly dims: number
  readonly step: number
  readonly lower: number
  readonly upper: number
}

export interface DimPieceMonoSpace {
  readonly kind: "dim_piece_mono"
  readonly dims: number
  readonly step: number
  /** s: the forced value above β and the upper bound of the free genes. */
  readonly scale: number
  /** σ of the breakpoint mutation int(N(old, σ)). */
  readonly sigma: number
}

export interface LongRope2Space {
  readonly kind: "longrope2"
  readonly dims: number
  readonly step: number
  readonly criticalDim: number
  readonly sMin: number
  readonly sMax: number
  readonly lastGap: number
}

export type SpaceConfig = DimMonoSpace | DimPieceMonoSpace | LongRope2Space

export interface StartTokenGene {
  /** Allowed n̂ values (the paper's set by default). */
  readonly values: readonly number[]
  /** Each generation, the top-k parents are tried with every value not yet evaluated. */
  readonly topParents: number
  /** Each new mutant is also tried with this many random values from the set. */
  readonly mutantTries: number
}

export interface AttentionScaleGene {
  readonly min: number
  readonly max: number
  readonly step: number
  /** σ of the normal mutation step. */
  readonly sigma: number
}

export interface Genes {
  readonly space: SpaceConfig
  readonly startToken: StartTokenGene | undefined
  readonly attentionScale: AttentionScaleGene | undefined
  /** Per-gene mutation / crossover-visit probability (0.3). */
  readonly p: number
  /**
   * "gene": every pass starts from the parent and redraws each gene with probability p (the method
   * notes' reading, the default). "sweep": what the released dim_mono.py does: each pass, with
   * probability p, redraws every gene (left to right), and passes accumulate. Both draw on the global
   * step grid (numpy's arange there is anchored at the lower neighbour, which is off-grid for off-grid
   * init vectors).
   */
  readonly mutation: "gene" | "sweep"
}

export const PAPER_START_TOKENS: readonly number[] = [0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256]

type Seen = (g: Genome) => boolean

const clamp = (x: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, x))

function withFactors(g: Genome, factors: readonly number[], extra: Partial<Genome> = {}): Genome {
  return { ...g, ...extra, factors }
}

// ---------- validity ----------

function validFactors(space: SpaceConfig, g: Genome): boolean {
  const f = g.factors
  const d = space.dims
  if (f.length !== d || f.some((x) => !Number.isFinite(x))) return false
  switch (space.kind) {
    case "dim_mono": {
      if ((f[0] as number) < space.lower || (f[d - 1] as number) > space.upper) return false
      for (let i = 1; i < d; i++) if ((f[i] as number) < (f[i - 1] as number)) return false
      return true
    }
    case "dim_piece_mono": {
      const { alpha, beta } = g
      if (alpha === undefined || beta === undefined) return false
      if (!Number.isInteger(alpha) || !Number.isInteger(beta) || alpha < 0 || alpha >= beta || beta >= d) return false
      for (let i = 0; i < d; i++) {
        const x = f[i] as number
        if (i <= alpha && x !== 1) return false
        if (i > beta && x !== space.scale) return false
        if (x < 1 || x > space.scale) return false
        if (i > 0 && x < (f[i - 1] as number)) return false
      }
      return true
    }
    case "longrope2": {
      const cd = space.criticalDim
      for (let i = cd; i < d; i++) {
        const x = f[i] as number
        if (x < space.sMin - 1e-12 || x > space.sMax + 1e-12) return false
        if (i > cd && !(x > (f[i - 1] as number))) return false
      }
      if (d - 1 > cd && (f[d - 1] as number) > (f[d - 2] as number) + space.lastGap + 1e-12) return false
      const ramp = rampBelow(f, cd)
      for (let i = 0; i < cd; i++) if (Math.abs((f[i] as number) - (ramp[i] as number)) > 1e-9 * (ramp[i] as number)) return false
      return true
    }
  }
}

export function isValid(genes: Genes, g: Genome): boolean {
  if (!validFactors(genes.space, g)) return false
  const st = genes.startToken
  if (st !== undefined ? g.startToken === undefined || !st.values.includes(g.startToken) : g.startToken !== undefined) return false
  const m = genes.attentionScale
  if (m !== undefined) {
    const v = g.attentionScale
    if (v === undefined || v < m.min - 1e-12 || v > m.max + 1e-12) return false
  } else if (g.attentionScale !== undefined) return false
  if (genes.space.kind !== "dim_piece_mono" && (g.alpha !== undefined || g.beta !== undefined)) return false
  return true
}

// ---------- longrope2 ramp ----------

/** λ_i = λ_cd^(i/cd) for i < cd (an NTK-style geometric ramp from 1 to λ_cd); dims ≥ cd unchanged. */
function rampBelow(f: readonly number[], cd: number): number[] {
  const out = [...f]
  const top = f[cd]
  if (top === undefined) return out
  for (let i = 0; i < cd; i++) out[i] = top ** (i / cd)
  return out
}

export const longrope2Ramp = (factors: readonly number[], criticalDim: number): number[] => rampBelow(factors, criticalDim)

/** dim_piece_mono's forced genes: 1 up to α, s above β. */
function forcePiece(f: number[], alpha: number, beta: number, s: number): number[] {
  for (let i = 0; i < f.length; i++) {
    if (i <= alpha) f[i] = 1
    else if (i > beta) f[i] = s
  }
  return f
}

// ---------- normalise (project an init vector into the space) ----------

/**
 * Projects an initial vector (PI / NTK / YaRN / a CSV) into the space: clamps to the bounds, makes it
 * monotone (running max; real factor files such as Mistral's have small decreases), derives α/β from
 * the shape for dim_piece_mono, rebuilds the ramp for longrope2, and adds the extra genes' defaults.
 * Values are not snapped to the grid (a baseline is evaluated as given); mutated genes land on it.
 */
export function normalise(genes: Genes, g: Genome, defaults: { startToken: number; attentionScale: number }): Genome {
  const space = genes.space
  const d = space.dims
  if (g.factors.length !== d) throw new Error(`init vector has ${g.factors.length} factors, expected ${d}`)
  let f = [...g.factors]
  let extra: Partial<Genome> = {}
  switch (space.kind) {
    case "dim_mono": {
      let prev = space.lower
      f = f.map((x) => (prev = clamp(Math.max(x, prev), space.lower, space.upper)))
      break
    }
    case "dim_piece_mono": {
      const s = space.scale
      let prev = 1
      f = f.map((x) => (prev = clamp(Math.max(x, prev), 1, s)))
      let alpha = g.alpha ?? Math.max(0, lastIndex(f, (x) => x <= 1))
      let beta = g.beta ?? (f.findIndex((x) => x >= s) === -1 ? d - 1 : f.findIndex((x) => x >= s) - 1)
      alpha = clamp(Math.trunc(alpha), 0, d - 2)
      beta = clamp(Math.trunc(beta), alpha + 1, d - 1)
      f = forcePiece(f, alpha, beta, s)
      extra = { alpha, beta }
      break
    }
    case "longrope2": {
      f = repairLongRope2(space, f)
      break
    }
  }
  const { alpha: _a, beta: _b, startToken: _n, attentionScale: _m, ...rest } = g
  let out: Genome = { ...rest, ...extra, factors: f }
  if (genes.startToken !== undefined) {
    const n = g.startToken ?? defaults.startToken
    out = { ...out, startToken: nearest(genes.startToken.values, n) }
  }
  if (genes.attentionScale !== undefined) {
    const m = genes.attentionScale
    out = { ...out, attentionScale: clamp(g.attentionScale ?? defaults.attentionScale, m.min, m.max) }
  }
  return out
}

function lastIndex(f: readonly number[], pred: (x: number) => boolean): number {
  for (let i = f.length - 1; i >= 0; i--) if (pred(f[i] as number)) return i
  return -1
}

function nearest(values: readonly number[], n: number): number {
  let best = values[0] ?? 0
  for (const v of values) if (Math.abs(v - n) < Math.abs(best - n)) best = v
  return best
}

/** dims ≥ cd: clamp, snap, strictly increasing (pushing up, then down from sMax), last ≤ prev + gap. */
function repairLongRope2(space: LongRope2Space, f0: readonly number[]): number[] {
  const { criticalDim: cd, dims: d, step, sMin, sMax, lastGap } = space
  const n = d - cd
  if ((n - 1) * step > sMax - sMin + 1e-12) throw new Error(`longrope2: ${n} strictly increasing dims do not fit in [${sMin}, ${sMax}] at step ${step}`)
  const f = [...f0]
  const lo = Math.ceil(sMin / step - 1e-9) * step
  const hi = Math.floor(sMax / step + 1e-9) * step
  for (let i = cd; i < d; i++) f[i] = snap(clamp(f[i] as number, lo, hi), step)
  for (let i = cd + 1; i < d; i++) if ((f[i] as number) <= (f[i - 1] as number)) f[i] = snap((f[i - 1] as number) + step, step)
  if (d - 1 > cd && (f[d - 1] as number) > (f[d - 2] as number) + lastGap) f[d - 1] = snap((f[d - 2] as number) + lastGap - 1e-9, step)
  if ((f[d - 1] as number) > hi + 1e-12) f[d - 1] = snap(hi, step)
  for (let i = d - 2; i >= cd; i--) if ((f[i] as number) >= (f[i + 1] as number)) f[i] = snap((f[i + 1] as number) - step, step)
  return rampBelow(f, cd)
}

// ---------- mutation ----------

/**
 * One pass over a copy of the parent; the caller repeats passes until valid and unseen. `all` redraws
 * every gene (a "sweep" pass) instead of each with probability p.
 */
function mutatePass(genes: Genes, parent: Genome, rng: Rng, all: boolean): Genome {
  const space = genes.space
  const p = all ? 1 : genes.p
  const d = space.dims
  const f = [...parent.factors]
  let extra: Partial<Genome> = {}
  switch (space.kind) {
    case "dim_mono": {
      for (let i = 0; i < d; i++) {
        if (rng.float() >= p) continue
        const lo = i === 0 ? space.lower : (f[i - 1] as number)
        const hi = i === d - 1 ? space.upper : (f[i + 1] as number)
        const v = drawGrid(rng, lo, hi, space.step)
        if (v !== undefined) f[i] = v
      }
      break
    }
    case "dim_piece_mono": {
      let alpha = parent.alpha ?? 0
      let beta = parent.beta ?? d - 1
      // Gene order is LongRoPE's: [α, β, λ_0 … λ_{d−1}], every one of them eligible.
      if (all) {
        // The released sweep moves one breakpoint per pass.
        if (rng.float() < 0.5) alpha = Math.trunc(alpha + space.sigma * normal(rng))
        else beta = Math.trunc(beta + space.sigma * normal(rng))
      } else {
        if (rng.float() < p) alpha = Math.trunc(alpha + space.sigma * normal(rng))
        if (rng.float() < p) beta = Math.trunc(beta + space.sigma * normal(rng))
      }
      for (let i = 0; i < d; i++) {
        if (rng.float() >= p) continue
        if (i <= alpha || i > beta) continue // forced gene
        const lo = i === 0 ? 1 : Math.max(1, f[i - 1] as number)
        const hi = i === d - 1 ? space.scale : Math.min(space.scale, f[i + 1] as number)
        const v = drawGrid(rng, lo, hi, space.step)
        if (v !== undefined) f[i] = v
      }
      if (alpha >= 0 && beta < d && alpha < beta) forcePiece(f, alpha, beta, space.scale)
      extra = { alpha, beta }
      break
    }
    case "longrope2": {
      const cd = space.criticalDim
      for (let i = cd; i < d; i++) {
        if (rng.float() >= p) continue
        // Strict monotonicity: open bounds at the neighbours; sMin and the last dim's cap are closed.
        const last = i === d - 1
        const lo = i === cd ? space.sMin : (f[i - 1] as number)
        const hi = !last ? (f[i + 1] as number) : i === cd ? space.sMax : Math.min(space.sMax, (f[i - 1] as number) + space.lastGap)
        const v = drawGrid(rng, lo, hi, space.step, i !== cd, !last)
        if (v !== undefined) f[i] = v
      }
      const ramped = rampBelow(f, cd)
      for (let i = 0; i < d; i++) f[i] = ramped[i] as number
      break
    }
  }
  const out = withFactors(parent, f, extra)
  return mutateAttentionScale(genes, out, rng, p)
}

function mutateAttentionScale(genes: Genes, g: Genome, rng: Rng, p: number): Genome {
  const m = genes.attentionScale
  if (m === undefined || g.attentionScale === undefined) return g
  if (rng.float() >= p) return g
  const v = snap(clamp(g.attentionScale + m.sigma * normal(rng), m.min, m.max), m.step)
  return { ...g, attentionScale: clamp(v, m.min, m.max) }
}

/**
 * LongRoPE's mutation: passes over a copy of the parent until the result is valid and unseen.
 * Returns undefined after `maxPasses` failures (the neighbourhood is exhausted).
 */
export function mutate(genes: Genes, parent: Genome, rng: Rng, seen: Seen, maxPasses = 1000): Genome | undefined {
  let current = parent
  for (let t = 0; t < maxPasses; t++) {
    let child: Genome
    if (genes.mutation === "sweep") {
      child = rng.float() < genes.p ? mutatePass(genes, current, rng, true) : current
      current = child
    } else child = mutatePass(genes, parent, rng, false)
    if (isValid(genes, child) && !seen(child)) return child
  }
  return undefined
}

// ---------- crossover ----------

type Slot = { kind: "factor"; i: number } | { kind: "breakpoints" } | { kind: "startToken" } | { kind: "attentionScale" }

function slots(genes: Genes): Slot[] {
  const s = genes.space
  const out: Slot[] = []
  if (genes.startToken !== undefined) out.push({ kind: "startToken" })
  // α and β travel together, as in the released crossover (α < β is then kept).
  if (s.kind === "dim_piece_mono") out.push({ kind: "breakpoints" })
  const from = s.kind === "longrope2" ? s.criticalDim : 0
  for (let i = from; i < s.dims; i++) out.push({ kind: "factor", i })
  if (genes.attentionScale !== undefined) out.push({ kind: "attentionScale" })
  return out
}

interface Work {
  f: number[]
  alpha: number | undefined
  beta: number | undefined
  startToken: number | undefined
  attentionScale: number | undefined
}

function copyGene(w: Work, from: Genome, slot: Slot): void {
  switch (slot.kind) {
    case "factor":
      w.f[slot.i] = from.factors[slot.i] as number
      return
    case "breakpoints":
      w.alpha = from.alpha
      w.beta = from.beta
      return
    case "startToken":
      w.startToken = from.startToken
      return
    case "attentionScale":
      w.attentionScale = from.attentionScale
      return
  }
}

/** The genome a crossover work vector stands for (ramp / forced genes re-derived). */
function realise(genes: Genes, base: Genome, w: Work): Genome {
  const s = genes.space
  let f = [...w.f]
  if (s.kind === "longrope2") f = rampBelow(f, s.criticalDim)
  if (s.kind === "dim_piece_mono" && w.alpha !== undefined && w.beta !== undefined && w.alpha < w.beta) f = forcePiece(f, w.alpha, w.beta, s.scale)
  let g: Genome = { ...base, factors: f }
  if (w.alpha !== undefined) g = { ...g, alpha: w.alpha }
  if (w.beta !== undefined) g = { ...g, beta: w.beta }
  if (w.startToken !== undefined) g = { ...g, startToken: w.startToken }
  if (w.attentionScale !== undefined) g = { ...g, attentionScale: w.attentionScale }
  return g
}

/**
 * LongRoPE's crossover (§2.4 step 4), p1 the better parent. Starting from a copy of p1, up to `tries`
 * scans over the genes; each gene is visited with probability p, and a visit copies p2's gene with
 * probability 0.5; the first visit that leaves a valid, unseen vector returns it. As in the released
 * dim_mono.py the copy is made once, so changes carry over from one scan to the next. After `tries`
 * failed scans, or when p1 and p2 are the same genome, it falls back to mutate(p1).
 */
export function crossover(genes: Genes, p1: Genome, p2: Genome, rng: Rng, seen: Seen, tries: number, same: (a: Genome, b: Genome) => boolean): Genome | undefined {
  if (!same(p1, p2)) {
    const order = slots(genes)
    const w: Work = { f: [...p1.factors], alpha: p1.alpha, beta: p1.beta, startToken: p1.startToken, attentionScale: p1.attentionScale }
    for (let t = 0; t < tries; t++) {
      for (const slot of order) {
        if (rng.float() >= genes.p) continue
        if (rng.float() < 0.5) copyGene(w, p2, slot)
        const child = realise(genes, p1, w)
        if (isValid(genes, child) && !seen(child)) return child
      }
    }
  }
  return mutate(genes, p1, rng, seen)
}

