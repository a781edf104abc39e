/**
 * What a RoPE method sees and produces. A method turns a model's RoPE settings plus an input length into
 * a RopeTable (kernels/rope-table.ts), and says which factor set it chose and why.
 */
import type { RopeTable } from "../../kernels/rope-table.ts"

/** A model's RoPE settings, read from config.json. */
export interface RopeSpec {
  readonly headDim: number
  /** head_dim × partial_rotary_factor. */
  readonly rotaryDim: number
  /** rope_theta. */
  readonly base: number
  /** max_position_embeddings as written in config.json. */
  readonly maxPositions: number
  /** original_max_position_embeddings (top level or inside rope_scaling), if the config has it. */
  readonly originalMaxPositions: number | undefined
  readonly numLayers: number
  /** The HF rope_scaling / rope_parameters object, or undefined for plain RoPE. */
  readonly scaling: Readonly<Record<string, unknown>> | undefined
  /** Where `scaling` came from, for error messages: "rope_scaling" (the default), "rope_parameters", "--rope-scaling". */
  readonly scalingKey?: string
}

export interface ChosenTable extends RopeTable {
  /** The method that made it, e.g. "linear". */
  readonly method: string
  /** Which factor set was chosen and why, for `ropeway rope` and logs. */
  readonly reason: string
}

export interface RopeMethod {
  readonly name: string
  /** Validates the method's parameters (throws an error naming the field) and returns a table maker. */
  readonly resolve: (spec: RopeSpec) => (length: number) => ChosenTable
}
