/**
 * Every workflow file shipped at the top of workflows/ (default, smoke, tiny-pretrain, search-budget, tiny-8x, tiny-16x,
 * second-interpolation, finetuned-baselines…)
 * loads and plans: the params of every step, the nested strategy params included, are
 * valid, and nothing would stop `run` before its first step. Only smoke.yaml runs in CI; this keeps the
 * others from rotting when a stage's parameters change.
 */
import { describe, expect, test } from "bun:test"
import { Effect } from "effect"
import { mkdtempSync, readdirSync } from "node:fs"
import { removeTree } from "../../pipeline/workflow/store.ts"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { loadWorkflow, planWorkflow } from "../../cli/workflow.ts"

const DIR = resolve(import.meta.dirname, "../../workflows")
const files = readdirSync(DIR).filter((f) => f.endsWith(".yaml")).sort()

describe("shipped workflows", () => {
  test("the expected files are there", () => {
    for (const f of ["default.yaml", "smoke.yaml", "tiny-pretrain.yaml", "search-budget.yaml", "tiny-8x.yaml", "tiny-16x.yaml", "second-interpolation.yaml", "finetuned-baselines.yaml"]) {
      expect(files).toContain(f)
    }
  })

  for (const file of files) {
    test(`${file} validates and plans with no problem`, async () => {
      const store = mkdtempSync(join(tmpdir(), "ropeway-shipped-plan-"))
      try {
        const plan = await Effect.runPromise(Effect.flatMap(loadWorkflow(join(DIR, file)), (wf) => planWorkflow(wf, { store })))
        expect(plan.problems).toEqual([])
        // tiny-pretrain makes its model; the others start from the built-in one
        expect([null, "tiny (built-in)"]).toContain(plan.model)
        expect(plan.steps.length).toBeGreaterThan(1)
      } finally {
        removeTree(store)
      }
    })
  }
})
