/**
 * The stage contract: a named, versioned unit of work with a params schema, the artifacts it reads and
 * writes, and an Effect. The runner gives it a context (params, seed, input paths, output and checkpoint
 * directories, a progress reporter); everything else it needs comes as Effect services.
 */
import type { Effect, Schema } from "effect"
import type { RopewayError } from "../../common/errors.ts"
import type { Registry } from "./plugin.ts"

/** A stage failed in a way the user should see: one of the floor's tagged errors (StageError when no other fits). */
export { StageError } from "../../common/errors.ts"

/** An artifact kind is a free label ("checkpoint", "rope-table", "json", ...); "any" accepts every kind. */
export type ArtifactKind = string

/** JSON a stage may return; it is stored with the step's artifacts and copied into the manifest. */
export type Json = null | boolean | number | string | readonly Json[] | { readonly [k: string]: Json }

export interface StageProgress {
  /** Fraction done in [0, 1] plus an optional short note ("generation 3/10"); gives the ETA. */
  readonly report: (fraction: number, note?: string) => Effect.Effect<void>
  /** A line of text for the log, printed above the progress line. */
  readonly log: (line: string) => Effect.Effect<void>
}

export interface StageContext<P, I extends string, O extends string> {
  readonly step: string
  readonly params: P
  readonly seed: number
  /** The cache key of this step (hex), e.g. to name things deterministically. */
  readonly key: string
  /** Input artifacts: absolute paths (a file or a folder), already in the run store. */
  readonly inputs: { readonly [K in I]: string }
  /**
   * Where each output goes: `<outDir>/<name>`. Write a file or a folder there. The folder is a
   * temporary one, renamed into the store only when `run` succeeds.
   */
  readonly outputs: { readonly [K in O]: string }
  readonly outDir: string
  /**
   * Kept per cache key across killed or interrupted runs, deleted once the step is committed: save inner
   * progress (a search generation, a training step) here and resume from it.
   */
  readonly checkpointDir: string
  readonly progress: StageProgress
}

/** A problem with a step's params, found before anything runs: where in the params and what. */
export interface ParamIssue {
  /** Keys from the params' root, e.g. ["strategyParams", "populationSize"]. */
  readonly path: ReadonlyArray<string | number>
  readonly message: string
  /** Point at the key (an unknown key) rather than its value. */
  readonly at?: "key" | "value"
}

/** A file a stage reads from outside the store, named in its params (a corpus folder). */
export interface ParamPath {
  /** Keys from the params' root, e.g. ["data", "path"]. */
  readonly path: ReadonlyArray<string | number>
  /** What it is, for "<what> not found: <path>" (e.g. "corpus"). */
  readonly what: string
}

/** What a stage's `validate` may look at: the workflow's registry (strategies, fitness, ...) and its folder. */
export interface ValidateContext {
  readonly registry: Registry
  /** The workflow file's folder (relative paths in params are resolved against it). */
  readonly dir: string
}

export interface Stage<P = any, I extends string = string, O extends string = string, R = any> {
  readonly _tag: "Stage"
  readonly name: string
  /** Bump it when the stage's behaviour changes: it is part of every cache key. */
  readonly version: string
  readonly description?: string
  readonly params: Schema.Codec<P, any, never, never>
  readonly inputs: { readonly [K in I]: ArtifactKind }
  readonly outputs: { readonly [K in O]: ArtifactKind }
  readonly run: (ctx: StageContext<P, I, O>) => Effect.Effect<Json | void, RopewayError, R>
  /**
   * Checks the decoded params beyond their Schema (names looked up in the registry, nested params a
   * plugin owns) when the workflow is loaded, so `plan` reports them with positions before anything runs.
   * Must be pure and cheap: no model loading, no file reads.
   */
  readonly validate?: (params: P, ctx: ValidateContext) => readonly ParamIssue[]
  /**
   * Where the decoded params name files outside the store. The loader resolves each (a string) against the
   * workflow file's folder before the cache key is made, and `plan` and `run` report a missing one with
   * its position before any step runs.
   */
  readonly paths?: (params: P) => readonly ParamPath[]
}

export type AnyStage = Stage<any, string, string, any>

/** Typed constructor; returns the definition unchanged (plus a tag the plugin loader checks). */
export const defineStage = <P, const I extends string = never, const O extends string = never, R = never>(def: {
  readonly name: string
  readonly version: string
  readonly description?: string
  readonly params: Schema.Codec<P, any, never, never>
  readonly inputs?: { readonly [K in I]: ArtifactKind }
  readonly outputs: { readonly [K in O]: ArtifactKind }
  readonly run: (ctx: StageContext<P, I, O>) => Effect.Effect<Json | void, RopewayError, R>
  readonly validate?: (params: P, ctx: ValidateContext) => readonly ParamIssue[]
  readonly paths?: (params: P) => readonly ParamPath[]
}): Stage<P, I, O, R> => ({
  _tag: "Stage",
  ...def,
  inputs: def.inputs ?? ({} as { readonly [K in I]: ArtifactKind }),
})
