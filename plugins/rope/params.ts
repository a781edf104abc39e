/**
 * Parameter readers for rope methods. Each failure is an InputError that names the field
 * (e.g. `rope_scaling.factor`) and the expected value, so a malformed config fails on one clear line.
 */
import { inputError } from "../../common/errors.ts"
import type { RopeSpec } from "./types.ts"

/** Reads fields of one rope_scaling object, prefixing errors with its name. */
export class Params {
  readonly where: string
  constructor(
    readonly spec: RopeSpec,
    readonly obj: Readonly<Record<string, unknown>> = spec.scaling ?? {},
    where?: string,
  ) {
    this.where = where ?? spec.scalingKey ?? "rope_scaling"
  }

  field(name: string): string {
    return `${this.where}.${name}`
  }

  fail(name: string, expected: string, got: unknown): never {
    throw inputError(this.field(name), `expected ${expected}, got ${show(got)}`)
  }

  has(name: string): boolean {
    const v = this.obj[name]
    return v !== undefined && v !== null
  }

  /** A finite number; `positive` requires > 0. Absent (or null, as HF treats it) gives `fallback`. */
  num(name: string, opts: { positive?: boolean; min?: number; integer?: boolean } = {}): number | undefined {
    const v = this.obj[name]
    if (v === undefined || v === null) return undefined
    const what = describe(opts)
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(name, what, v)
    if (opts.positive === true && !(v > 0)) this.fail(name, what, v)
    if (opts.min !== undefined && v < opts.min) this.fail(name, what, v)
    if (opts.integer === true && !Number.isInteger(v)) this.fail(name, what, v)
    return v
  }

  requireNum(name: string, opts: { positive?: boolean; min?: number; integer?: boolean } = {}): number {
    const v = this.num(name, opts)
    if (v === undefined) this.fail(name, describe(opts), undefined)
    return v
  }

  bool(name: string): boolean | undefined {
    const v = this.obj[name]
    if (v === undefined || v === null) return undefined
    if (typeof v !== "boolean") this.fail(name, "true or false", v)
    return v
  }

  /** A list of exactly `length` finite numbers > 0 (per-dimension divisors). */
  factorList(name: string, length: number): Float64Array {
    return factorVector(this.obj[name], length, this.field(name))
  }

  /**
   * original_max_position_embeddings: the top-level config value wins when both are present, as current
   * transformers' standardize_rope_params does; otherwise the one inside rope_scaling.
   */
  originalMax(required: boolean): number | undefined {
    const inner = this.num("original_max_position_embeddings", { positive: true, integer: true })
    const v = this.spec.originalMaxPositions ?? inner
    if (v === undefined && required) {
      throw inputError(
        this.field("original_max_position_embeddings"),
        "expected the pretrained context length (an integer > 0, here or at the top level of config.json), got nothing",
      )
    }
    return v
  }
}

/** Validates a per-dimension factor vector: exactly `length` finite numbers > 0. */
export function factorVector(v: unknown, length: number, field: string): Float64Array {
  if (!Array.isArray(v)) throw inputError(field, `expected a list of ${length} numbers > 0 (rotary_dim/2), got ${show(v)}`)
  if (v.length !== length) {
    throw inputError(field, `expected a list of ${length} numbers (rotary_dim/2), got ${v.length}`)
  }
  const out = new Float64Array(length)
  for (let i = 0; i < length; i++) {
    const x: unknown = v[i]
    if (typeof x !== "number" || !Number.isFinite(x) || !(x > 0)) {
      throw inputError(`${field}[${i}]`, `expected a number > 0, got ${show(x)}`)
    }
    out[i] = x
  }
  return out
}

function describe(opts: { positive?: boolean; min?: number; integer?: boolean }): string {
  const kind = opts.integer === true ? "an integer" : "a number"
  if (opts.positive === true) return `${kind} > 0`
  if (opts.min !== undefined) return `${kind} ≥ ${opts.min}`
  return kind
}

export const show = (v: unknown): string => {
  if (v === undefined) return "nothing"
  const s = JSON.stringify(v)
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s
}
