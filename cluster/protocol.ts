/**
 * The search's scale-out protocol on effect/cluster: one entity type, `FitnessEvaluation`, whose
 * `Evaluate` RPC takes a fitness request (plugins/search/evaluator.ts FitnessRequest) and answers its fitness.
 * Each request is addressed to its own entity id (the candidate's cache key), so the ids hash evenly
 * over the shards and thus over the worker runners. Messages are persisted (SqlMessageStorage in
 * Postgres): a request to a worker that dies is delivered again to the shard's next owner.
 *
 * The fitness travels as a decimal string: exact for every double (NaN and ±Infinity included), which
 * a JSON number in Postgres' message table would not be for the non-finite ones.
 */
import { Schema } from "effect"
import { ClusterSchema, Entity } from "effect/cluster"
import { Rpc } from "effect/rpc"

const Int = Schema.Int

export const GenomeSchema = Schema.Struct({
  factors: Schema.Array(Schema.Number),
  startToken: Schema.optionalKey(Schema.Number),
  attentionScale: Schema.optionalKey(Schema.Number),
  alpha: Schema.optionalKey(Schema.Number),
  beta: Schema.optionalKey(Schema.Number),
})

export const TableOptionsSchema = Schema.Struct({
  geometry: Schema.Struct({ rotaryDim: Int, base: Schema.Number, originalLength: Int }),
  length: Int,
  policy: Schema.Union([Schema.Literals(["su", "yarn"]), Schema.Number]),
  startTokens: Schema.optionalKey(Schema.Number),
  baseFactors: Schema.optionalKey(Schema.Array(Schema.Number)),
})

export const FitnessRequestSchema = Schema.Struct({
  // fullAttention: the search's `slidingWindow: null`; workers load the model the same way
  model: Schema.Struct({ path: Schema.String, hash: Schema.String, fullAttention: Schema.optionalKey(Schema.Boolean) }),
  fitness: Schema.NullOr(Schema.String),
  samples: Schema.String,
  genome: GenomeSchema,
  table: TableOptionsSchema,
  penalty: Schema.NullOr(Schema.Struct({ weight: Schema.Number, length: Int, samples: Schema.String })),
  chunk: Schema.NullOr(Int),
})

export const FitnessReply = Schema.Struct({
  /** `String(fitness)`; `Number(...)` gives the same double back. */
  fitness: Schema.String,
  seconds: Schema.Number,
  /** The worker that evaluated it (logs, tests). */
  worker: Schema.String,
})
export type FitnessReply = typeof FitnessReply.Type

/** A request the worker could not evaluate (model missing or changed, unknown fitness, GPU error). */
export class EvaluationFailed extends Schema.TaggedError<EvaluationFailed>()("EvaluationFailed", {
  message: Schema.String,
  worker: Schema.String,
}) {}

export const Evaluate = Rpc.make("Evaluate", {
  payload: { request: FitnessRequestSchema },
  success: FitnessReply,
  error: EvaluationFailed,
}).annotate(ClusterSchema.Persisted, true)

export const FitnessEvaluation = Entity.make("FitnessEvaluation", [Evaluate])
