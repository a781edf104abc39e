/**
 * The built-in plugins, registered into every workflow's registry before the workflow's own plugins.
 * Add a built-in: export a `definePlugin(...)` from its module and list it here.
 * (Built-in RoPE methods register themselves in plugins/rope/index.ts.)
 */
import { builtinPlugin } from "../../plugins/builtin.ts"
import { reportPlugin } from "../../stages/report.ts"
import type { Plugin } from "./plugin.ts"
import { searchPlugin } from "../../stages/search.ts"
import { trainPlugin } from "../../stages/finetune.ts"
import { exportPlugin } from "../../stages/export.ts"
import { applyFactorsPlugin } from "../../stages/apply-factors.ts"

export const builtinPlugins = (): readonly Plugin[] => [builtinPlugin, searchPlugin, reportPlugin, trainPlugin, exportPlugin, applyFactorsPlugin]
