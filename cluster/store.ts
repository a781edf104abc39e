/**
 * The cluster's store: one Postgres database, reached through @effect/sql-pg. effect/cluster keeps its
 * runners, shard locks, messages and replies there (tables `cluster_*`, created on first use); we add
 * `ropeway_samples`, the fitness samples by content hash, so a request names its samples instead of
 * carrying up to millions of tokens in every message. The coordinator writes each set once; a worker
 * reads it once and checks the hash, so both sides score exactly the same tokens.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { inputError } from "../common/errors.ts"
import { type FitnessSample, samplesHash } from "../plugins/search/fitness.ts"

/** The workflow's `cluster:` settings. */
export interface ClusterSettings {
  /** postgres://user[:password]@host[:port]/database */
  readonly store: string
  /** Evaluations of one batch in flight at once (default: the whole batch). */
  readonly concurrency: number | "unbounded"
}

/** Checks a `cluster:` mapping (errors name `cluster.<field>`). */
export function parseClusterSettings(raw: unknown, where = "cluster"): ClusterSettings {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw inputError(where, `expected a mapping {store: postgres://..., concurrency?}, got ${JSON.stringify(raw)}`)
  const o = raw as Record<string, unknown>
  for (const k of Object.keys(o)) if (!["store", "concurrency"].includes(k)) throw inputError(`${where}.${k}`, "unknown field; known: store, concurrency")
  const store = o["store"]
  if (typeof store !== "string") throw inputError(`${where}.store`, `expected a postgres:// URL, got ${JSON.stringify(store)}`)
  checkStoreUrl(store, `${where}.store`)
  const c = o["concurrency"] ?? "unbounded"
  if (c !== "unbounded" && !(typeof c === "number" && Number.isSafeInteger(c) && c >= 1)) throw inputError(`${where}.concurrency`, `expected an integer ≥ 1 or "unbounded", got ${JSON.stringify(c)}`)
  return { store, concurrency: c }
}

export function checkStoreUrl(url: string, where: string): void {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw inputError(where, `expected a postgres:// URL, got ${JSON.stringify(url)}`)
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") throw inputError(where, `expected a postgres:// URL, got ${JSON.stringify(url)}`)
}

/**
 * SqlClient on the store (a small pool: cluster storage polls, plus our few queries). The application
 * name (`ropeway-worker:<id>` for workers) shows who holds which shard locks in pg_stat_activity.
 */
export const storeLayer = (url: string, applicationName = "ropeway") =>
  PgClient.layer({ url: Redacted.make(url), maxConnections: 8, applicationName })

const ensureTable = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  // Serialised: concurrent CREATE ... IF NOT EXISTS can still collide in pg_type.
  yield* sql.withTransaction(
    Effect.gen(function* () {
      yield* sql`SELECT pg_advisory_xact_lock(7157001)`
      yield* sql`CREATE TABLE IF NOT EXISTS ropeway_samples (hash text PRIMARY KEY, data text NOT NULL, created timestamptz NOT NULL DEFAULT now())`
    }),
  )
})

const b64 = (a: Uint32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("base64")
const u32 = (s: string): Uint32Array => {
  const b = Buffer.from(s, "base64")
  // Copy: Buffer's pool offset need not be 4-byte aligned.
  return new Uint32Array(new Uint8Array(b).buffer)
}

export const encodeSamples = (samples: readonly FitnessSample[]): string =>
  JSON.stringify(samples.map((s) => ({ tokens: b64(s.tokens), targets: s.targets === undefined ? null : b64(s.targets) })))

export function decodeSamples(text: string): FitnessSample[] {
  const raw = JSON.parse(text) as { tokens: string; targets: string | null }[]
  return raw.map((s) => ({ tokens: u32(s.tokens), targets: s.targets === null ? undefined : u32(s.targets) }))
}

/** The samples table: put (idempotent) and get (checked against the hash). */
export class SamplesStore {
  private tableReady = false
  private readonly known = new Set<string>()
  private readonly cache = new Map<string, readonly FitnessSample[]>()

  constructor(private readonly sql: SqlClient.SqlClient) {}

  private ensure() {
    // Idempotent (and serialised in the database), so two first callers racing is harmless.
    return this.tableReady
      ? Effect.void
      : ensureTable.pipe(
          Effect.provideService(SqlClient.SqlClient, this.sql),
          Effect.tap(() => Effect.sync(() => void (this.tableReady = true))),
        )
  }

  put(hash: string, samples: readonly FitnessSample[]) {
    const self = this
    return Effect.gen(function* () {
      if (self.known.has(hash)) return
      yield* self.ensure()
      yield* self.sql`INSERT INTO ropeway_samples (hash, data) VALUES (${hash}, ${encodeSamples(samples)}) ON CONFLICT (hash) DO NOTHING`
      self.known.add(hash)
    })
  }

  get(hash: string) {
    const self = this
    return Effect.gen(function* () {
      const hit = self.cache.get(hash)
      if (hit !== undefined) return hit
      yield* self.ensure()
      const rows = yield* self.sql<{ data: string }>`SELECT data FROM ropeway_samples WHERE hash = ${hash}`
      const row = rows[0]
      if (row === undefined) return yield* Effect.fail(new Error(`samples ${hash} are not in the store`))
      const samples = decodeSamples(row.data)
      const got = samplesHash(samples)
      if (got !== hash) return yield* Effect.fail(new Error(`samples ${hash} read back with hash ${got}`))
      self.cache.set(hash, samples)
      return samples as readonly FitnessSample[]
    })
  }
}
