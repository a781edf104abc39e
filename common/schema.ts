/**
 * Effect Schema helpers shared by every params schema (stages, plugins, workflow settings) and the one
 * way a schema's failures become messages: a path into the value and what was expected. The workflow
 * loader adds file:line:col to them; elsewhere `decodeParams` throws them as BadParams.
 */
import { Effect, Result, Schema, SchemaIssue } from "effect"
import { BadParams } from "./errors.ts"

export const PosInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
export const NonNegInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
export const NonNeg = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))
export const Fraction = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThanOrEqualTo(1))

/** A default for an absent key, applied when decoding (so the cache key holds it written out). */
export const withDefault = <S extends Schema.Top>(value: S["Encoded"]) => (s: S) => s.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))

/** The description `ropeway list` shows. */
export const doc = (description: string) => <S extends Schema.Top>(s: S): S => s.annotate({ description }) as S

/** One failure of a value against a schema. */
export interface SchemaProblem {
  /** Keys from the value's root. */
  readonly path: ReadonlyArray<string | number>
  /** What was expected (no "got ..."; the caller knows how to show the value). */
  readonly message: string
  /** The key itself is the problem (an unknown key), not its value. */
  readonly at: "key" | "value"
}

/** Decodes `value`; on failure, every problem (unknown keys are problems when `excess` is true). */
export function decodeProblems<A>(schema: Schema.Codec<A, any, never, never>, value: unknown, excess: boolean): Result.Result<A, SchemaProblem[]> {
  const r = Schema.decodeUnknownResult(schema)(value, { errors: "all", ...(excess ? { onExcessProperty: "error" } : {}) })
  if (Result.isSuccess(r)) return Result.succeed(r.success)
  const issues = SchemaIssue.makeFormatterStandardSchemaV1()(r.failure.issue).issues
  return Result.fail(
    issues.map((i) => {
      const path = (i.path ?? []).map((p) => (typeof p === "object" ? p.key : p)) as Array<string | number>
      const last = String(path[path.length - 1])
      if (i.message.includes("excess property") || i.message.startsWith("unknown key")) return { path, message: `unknown key "${last}"`, at: "key" as const }
      if (i.message === "Missing key") return { path, message: `missing key "${last}"`, at: "value" as const }
      return { path, message: i.message, at: "value" as const }
    }),
  )
}

const valueAt = (value: unknown, path: ReadonlyArray<string | number>): unknown =>
  path.reduce<unknown>((o, k) => (typeof o === "object" && o !== null ? (o as Record<string | number, unknown>)[k] : undefined), value)

/** `where.path: message, got <value>` for each problem, one per line. */
export const formatProblems = (problems: readonly SchemaProblem[], value: unknown, where: string): string =>
  problems
    .map((p) => {
      const at = [where, ...p.path.map(String)].filter((s) => s !== "").join(".")
      const got = p.at === "key" || p.message.startsWith("missing key") ? "" : `, got ${JSON.stringify(valueAt(value, p.path)) ?? "undefined"}`
      return `${at}: ${p.message}${got}`
    })
    .join("\n")

/** Decodes params outside a workflow file (a flag, a direct call); throws BadParams naming `where` and the field. */
export function decodeParams<A>(schema: Schema.Codec<A, any, never, never>, value: unknown, where: string): A {
  const r = decodeProblems(schema, value, true)
  if (Result.isSuccess(r)) return r.success
  throw new BadParams({ message: formatProblems(r.failure, value, where) })
}
