/**
 * The on-disk candidate cache: one JSON file per evaluated candidate, named by the hash of everything
 * the fitness depends on (model fingerprint, fitness name + version + params, the samples' content, the
 * fidelity, and the exact RoPE table the candidate became). Written atomically (sibling + rename), so a
 * run killed mid-write leaves either nothing or a whole entry, and two runs can share the folder.
 *
 * Keyed on the table actually evaluated (absolute factors, n̂, m), not on a strategy's genome, so a
 * candidate is never evaluated twice across runs, strategies and modes (a `second` search's relative
 * genome that multiplies out to a vector already scored is a hit).
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import { writeFileAtomic } from "../../common/files.ts"
import { join } from "node:path"
import { canonicalJson, sha256 } from "../../common/hash.ts"
import { sanitizeFitness, type Fidelity } from "./types.ts"

/** What a fitness value depends on. Numbers go into the key exactly (JSON's shortest round-trip form). */
export interface CacheKeyParts {
  /** Content hash of the model folder. */
  readonly model: string
  readonly fitness: { readonly name: string; readonly version: string; readonly params: unknown }
  /** Content hash of the samples at this fidelity (token ids and scored positions). */
  readonly samples: string
  readonly fidelity: Fidelity
  /** The evaluated table: λ_i (θ'_i = θ_i/λ_i), n̂ and m. */
  readonly rope: { readonly factors: readonly number[]; readonly startTokens: number; readonly attentionScale: number }
}

export interface CacheEntry {
  readonly key: string
  /** JSON-safe: a non-finite fitness is stored as WORST. */
  readonly fitness: number
  /** Seconds the evaluation took. */
  readonly seconds: number
  readonly parts: CacheKeyParts
  readonly createdAt: string
}

export const candidateKey = (parts: CacheKeyParts): string => sha256(canonicalJson({ format: 1, ...parts }))

export class CandidateCache {
  /** Lookups answered from disk and entries written, since this object was made. */
  hits = 0
  writes = 0

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true })
  }

  private path(key: string): string {
    // Two-level fan-out keeps folders small on a long search (1344 entries per paper run).
    return join(this.dir, key.slice(0, 2), `${key}.json`)
  }

  get(key: string): CacheEntry | undefined {
    const p = this.path(key)
    if (!existsSync(p)) return undefined
    try {
      const e = JSON.parse(readFileSync(p, "utf8")) as CacheEntry
      if (e.key !== key || typeof e.fitness !== "number") return undefined
      this.hits++
      return e
    } catch {
      return undefined // a foreign or damaged file: re-evaluate and overwrite it
    }
  }

  put(parts: CacheKeyParts, fitness: number, seconds: number): CacheEntry {
    const key = candidateKey(parts)
    const entry: CacheEntry = { key, fitness: sanitizeFitness(fitness), seconds, parts, createdAt: new Date().toISOString() }
    const p = this.path(key)
    writeFileAtomic(p, `${JSON.stringify(entry)}\n`)
    this.writes++
    return entry
  }
}
