/**
 * The built-in plugins: ropeway's own stages with the library's contributions (model families and models,
 * RoPE methods, fitness functions, datasets, after-run actions), through the same `definePlugin` a user's
 * plugin uses. The CLI hands them to the engine (cli/workflow.ts); the engine knows none of them.
 */
import { definePlugin, type Plugin } from "../pipeline/workflow/plugin.ts"
import { BUILTIN_DATASETS } from "../plugins/data/index.ts"
import { writeRunMetrics } from "../plugins/eval/metrics.ts"
import { BUILTIN_FAMILIES } from "../plugins/models/registry.ts"
import { tinyModel } from "../plugins/models/tiny/tiny.ts"
import { writeRunReportFromDir } from "../plugins/report/report.ts"
import { BUILTIN_ROPE_METHODS, ropeMethodHook } from "../plugins/rope/index.ts"
import { builtinFitness } from "../plugins/search/fitness.ts"
import { applyFactorsStage } from "./apply-factors.ts"
import { evaluateStage } from "./evaluate.ts"
import { exportModelStage, exportStage } from "./export.ts"
import { finetuneFactorsStage, finetuneStage } from "./finetune.ts"
import { mergeFactorsStage } from "./merge-factors.ts"
import { modelConfigStage } from "./model-config.ts"
import { pretrainStage } from "./pretrain.ts"
import { reportSearchStage, reportStage } from "./report.ts"
import { searchFactorsStage, searchStage } from "./search.ts"

type ManifestLike = Parameters<typeof writeRunReportFromDir>[1]

export const ropewayPlugin = definePlugin({
  name: "ropeway",
  version: "0.1.0",
  description: "ropeway's built-in evaluation stage, model families and models, RoPE methods and datasets",
  stages: [evaluateStage],
  models: [tinyModel],
  families: BUILTIN_FAMILIES,
  ropeMethods: BUILTIN_ROPE_METHODS,
  datasets: BUILTIN_DATASETS,
  afterRun: [
    {
      name: "run-metrics",
      description: "<run>/metrics.json: every step's metrics merged, in step order",
      run: async (runDir, manifest) => void writeRunMetrics(runDir, manifest as ManifestLike),
    },
  ],
  onRegister: { ropeMethods: ropeMethodHook },
})

export const searchPlugin = definePlugin({
  name: "ropeway-search",
  version: "0.1.0",
  description: "LongRoPE's search stage and its fitness functions",
  stages: [searchStage, searchFactorsStage],
  fitness: builtinFitness,
})

export const reportPlugin = definePlugin({
  name: "ropeway-report",
  version: "0.1.0",
  description: "the run report: stages, and <run>/report.md after every run",
  stages: [reportStage, reportSearchStage],
  afterRun: [
    {
      name: "run-report",
      description: "<run>/report.md and charts/ from the run's metrics.json, manifest, search logs and factor sets",
      run: async (runDir, manifest) => void (await writeRunReportFromDir(runDir, manifest as ManifestLike)),
    },
  ],
})

export const trainPlugin = definePlugin({
  name: "ropeway-train",
  version: "0.1.0",
  description: "pre-training and fine-tuning stages (AdamW on WGSL kernels, exact resume)",
  stages: [pretrainStage, finetuneStage, finetuneFactorsStage],
})

export const exportPlugin = definePlugin({
  name: "ropeway-export",
  version: "0.1.0",
  description: "the export stages",
  stages: [exportStage, exportModelStage],
})

export const applyFactorsPlugin = definePlugin({
  name: "ropeway-apply-factors",
  version: "0.1.0",
  description: "factor sets into a model folder without training; merging factor-set tables; config.json edits as a step",
  stages: [applyFactorsStage, mergeFactorsStage, modelConfigStage],
})

/** In registration order (the manifest lists them so). */
export const stagePlugins = (): readonly Plugin[] => [ropewayPlugin, searchPlugin, reportPlugin, trainPlugin, exportPlugin, applyFactorsPlugin]
