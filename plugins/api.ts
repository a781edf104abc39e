/**
 * The public plugin API: everything a user's plugin may import (examples/plugin imports this module only;
 * an installed plugin would import the same names from the ropeway package). A plugin contributes stages,
 * model families and named models, RoPE methods, search strategies, fitness functions, datasets, workflow
 * settings and after-run actions through `definePlugin`, exactly as the built-ins do.
 *
 * What is here, by layer:
 * - the engine's plugin and stage contracts (definePlugin, defineStage, the registry service);
 * - the floor: tagged errors, seeded RNG, atomic files, safetensors, params schemas and file validation;
 * - kernels a model family is built from (each with its float64 reference for the family's own tests);
 * - the library contracts: model families (and their registry), RoPE methods and tables, search
 *   strategies, evaluation baselines.
 */

// ---- the engine: plugins and stages ----
export {
  type AfterRun, type AnyStage, type ArtifactKind, type Contribution, type Dataset, definePlugin, defineStage, type FitnessFunction, type Json,
  type ModelContribution, type ParamIssue, type ParamPath, type Plugin, type PluginDefinition, PluginRegistry, type Registry, type SearchStrategy, type Stage,
  type StageContext, type StageProgress, type ValidateContext, type WorkflowSetting,
} from "../pipeline/workflow/index.ts"

// ---- the floor ----
export { attempt, attemptPromise, BadParams, DoesNotFit, errorMessage, InputError, inputError, ModelNotFound, StageError, TokenizerMismatch, UnsupportedModel } from "../common/errors.ts"
export { writeFileAtomic, writeJsonAtomic } from "../common/files.ts"
export { sha256 } from "../common/hash.ts"
export { Rng, type RngState } from "../common/rng.ts"
export { Checkpoint, type TensorInfo, type TensorToWrite, writeCheckpoint } from "../common/safetensors.ts"
export { decodeParams, doc, NonNeg, NonNegInt, PosInt, withDefault } from "../common/schema.ts"
export { checkJson, readJsonFile } from "../common/validate.ts"

// ---- kernels ----
export { appendKv, attention, createKvCache, type KvCache, releaseKvCache } from "../kernels/attention.ts"
export { embed } from "../kernels/embedding.ts"
export { gelu } from "../kernels/gelu.ts"
export { geluRef } from "../kernels/gelu.ref.ts"
export { layernorm } from "../kernels/layernorm.ts"
export { layernormRef } from "../kernels/layernorm.ref.ts"
export { logprobsFromLogits } from "../kernels/logprobs.ts"
export { linear, prepareWeight, releaseWeight, type Weight } from "../kernels/matmul.ts"
export { applyRope, type GpuRopeTable, releaseRopeTable, uploadRopeTable } from "../kernels/rope.ts"
export { ropeRef } from "../kernels/rope.ref.ts"
export { defaultInvFreq, type RopeTable } from "../kernels/rope-table.ts"
export type { GpuRuntime } from "../kernels/runtime.ts"
export type { Tensor } from "../kernels/tensor.ts"

// ---- the library: model families, RoPE, search, evaluation ----
export type {
  DecodeSession, DistributionRows, InspectedModel, InspectOptions, LoadedModel, LogprobsOptions, MemoryOptions, MemoryPlan, ModelConfig, ModelFamily, PlanKernels, PlannedModel, TrainPlan,
} from "./models/family.ts"
export { checkFits, deviceBudget, familiesOf, familyFor, inspectModel, longestFit, readConfigJson } from "./models/registry.ts"
export { methodScaling } from "./eval/protocols.ts"
export { ropeSpecFromConfig } from "./rope/formats.ts"
export { type ChosenTable, resolveRope, type RopeMethod, type RopeSpec, tableFactors } from "./rope/index.ts"
export { sameRopeTable } from "./rope/table.ts"
export type { Candidate, Evaluated, Fidelity, Genome, Progress, Proposal, Result, SearchContext, Strategy } from "./search/types.ts"
