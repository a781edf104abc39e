/**
 * The built-in plugins, registered into every workflow's registry before the workflow's own plugins.
 * Add a built-in: export a `definePlugin(...)` from its module and list it here.
 * (Built-in RoPE methods register themselves in plugins/rope/index.ts.)
 */
import type { Plugin } from "./plugin.ts"

export const builtinPlugins = (): readonly Plugin[] => []
