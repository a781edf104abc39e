/**
 * RoPE methods: the registry (a plugin point: `registerRopeMethod`) plus the built-in methods, which
 * register through the same API a user's plugin uses. Importing this module registers the built-ins.
 */
import { defaultMethod } from "./default.ts"
import { dynamicMethod } from "./dynamic.ts"
import { linearMethod } from "./linear.ts"
import { llama3Method } from "./llama3.ts"
import { longropeResearchMethod } from "./longrope-research.ts"
import { longropeMethod } from "./longrope.ts"
import { ntkMethod } from "./ntk.ts"
import { registerRopeMethod } from "./registry.ts"
import { yarnMethod } from "./yarn.ts"

export type { ChosenTable, RopeMethod, RopeSpec } from "./types.ts"
export { getRopeMethod, methodName, registerRopeMethod, resolveRope, ropeMethodNames } from "./registry.ts"
export * from "./factors.ts"
export { longropeAttentionFactor } from "./longrope.ts"
export { tableFactors } from "./table.ts"

registerRopeMethod(defaultMethod)
registerRopeMethod(linearMethod)
registerRopeMethod(ntkMethod)
registerRopeMethod(dynamicMethod)
registerRopeMethod(yarnMethod)
registerRopeMethod(llama3Method)
registerRopeMethod(longropeMethod, ["su"])
registerRopeMethod(longropeResearchMethod)
