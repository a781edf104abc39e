/**
 * The cluster's store: one Postgres database, reached through @effect/sql-pg. effect/cluster keeps its
 * runners, shard locks, messages and replies there (tables `cluster_*`, created on first use); we add
 * `ropeway_samples`, the fitness samples by content hash, so a request names its samples instead of
 * carrying up to millions of tokens in every message. The coordinator writes each set once; a worker
 * reads it once and checks the hash, so both sides score exactly the same tokens.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { decodeParams, doc, PosInt, withDefault } from "../common/schema.ts"
import { type FitnessSample, samplesHash } from "../plugins/search/fitness.ts"

const isPostgresUrl = (url: string): boolean => {
  try {
    const u = new URL(url)
    return u.protocol === "postgres:" || u.protocol === "postgresql:"
  } catch {
    return false
  }
}

/** postgres://user[:password]@host[:port]/database */
export const PostgresUrl = Schema.String.check(Schema.makeFilter((s) => isPostgresUrl(s) || "expected a postgres:// URL"))

/** The workflow's `cluster:` settings. */
export const ClusterSettingsSchema = Schema.Struct({
  store: PostgresUrl.annotate({ description: "the cluster's Postgres: postgres://user[:password]@host[:port]/database" }),
  /** Evaluations of one batch in flight at once (default: the whole batch). */
  concurrency: Schema.Union([PosInt, Schema.Literal("unbounded")]).pipe(
    doc('evaluations of one batch in flight at once: an integer ≥ 1 or "unbounded" (default: the whole batch)'),
    withDefault("unbounded" as const),
  ),
})
export type ClusterSettings = typeof ClusterSettingsSchema.Type

/** Checks a `cluster:` mapping outside a workflow file (errors name `cluster.<field>`). */
export const parseClusterSettings = (raw: unknown, where = "cluster"): ClusterSettings => decodeParams(ClusterSettingsSchema, raw, where)

/** Checks a flag's URL (`--store`). */
export const checkStoreUrl = (url: string, where: string): void => void decodeParams(PostgresUrl, url, where)

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
