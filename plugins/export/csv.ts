/**
 * LongRoPE factor CSVs: one file per factor set, d/2 values one per line (numpy savetxt layout; a
 * layers × d/2 matrix as comma-separated rows for per-layer sets), named by the length bucket the set
 * serves, `{max_length/1024}k.csv` (research code convention: 4k, 8k, 128k, ...; fractions for tiny models).
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { writeFileAtomic } from "../../common/files.ts"
import { type FactorSetFile, formatFactorCsv, parseFactorCsv } from "../rope/formats.ts"

export const csvName = (maxLength: number): string => `${String(maxLength / 1024)}k.csv`

export interface CsvCheck {
  readonly file: string
  readonly maxLength: number
  readonly values: number
  /** Largest |written − re-read| over every value (0: exact round trip). */
  readonly maxAbsDiff: number
}

/** Writes one CSV per set into `dir`, then re-reads each with the LongRoPE-compatible parser and compares. */
export function writeFactorCsvs(f: FactorSetFile, dir: string): CsvCheck[] {
  const half = f.model.rotary_dim / 2
  return f.sets.map((s) => {
    const file = join(dir, csvName(s.max_length))
    const rows: number[][] = Array.isArray(s.factors[0]) ? (s.factors as number[][]) : [s.factors as number[]]
    writeFileAtomic(file, formatFactorCsv(rows.length === 1 ? rows[0]! : rows))
    const back = parseFactorCsv(readFileSync(file, "utf8"), file, half)
    const backRows = back instanceof Float64Array ? [back] : back
    let maxAbsDiff = backRows.length === rows.length ? 0 : Infinity
    rows.forEach((r, l) => r.forEach((x, i) => (maxAbsDiff = Math.max(maxAbsDiff, Math.abs(x - (backRows[l]?.[i] ?? Number.NaN))))))
    return { file, maxLength: s.max_length, values: rows.length * half, maxAbsDiff }
  })
}
