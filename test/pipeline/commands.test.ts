// `ropeway plan` and `ropeway run` as effect/cli commands (wired into the CLI's index by its owner).
import { describe, expect, spyOn, test } from "bun:test"
import { NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { plan } from "../../cli/commands/plan.ts"
import { run } from "../../cli/commands/run.ts"
import { fixture, tempDir } from "./helpers.ts"

const root = Command.make("ropeway").pipe(Command.withSubcommands([run, plan]))
const cli = async (...args: string[]) => {
  const log = spyOn(console, "log").mockImplementation(() => {})
  const write = spyOn(process.stdout, "write").mockImplementation(() => true)
  const err = spyOn(process.stderr, "write").mockImplementation(() => true)
  try {
    const exit = await Effect.runPromiseExit(Command.runWith(root, { version: "0" })(args).pipe(Effect.provide(NodeServices.layer)))
    const out = [...log.mock.calls.map((c) => `${c.join(" ")}\n`), ...write.mock.calls.map((c) => String(c[0]))].join("")
    return { exit, out }
  } finally {
    log.mockRestore()
    write.mockRestore()
    err.mockRestore()
  }
}

describe("commands", () => {
  test("plan --json, run --quiet, plan again: everything cached", async () => {
    const store = tempDir()
    const p1 = await cli("plan", fixture("good.yaml"), "--store", store, "--json")
    expect(p1.exit._tag).toBe("Success")
    const before = JSON.parse(p1.out) as { steps: Array<{ name: string; status: string }> }
    expect(before.steps.map((s) => s.status)).toEqual(["run", "run", "pending", "pending"])
    const r = await cli("run", fixture("good.yaml"), "--store", store, "--quiet")
    expect(r.exit._tag).toBe("Success")
    const runDir = r.out.trimEnd().split("\n").at(-1)!
    expect(existsSync(join(runDir, "manifest.json"))).toBe(true)
    const p2 = await cli("plan", fixture("good.yaml"), "--store", store)
    expect(p2.out).toContain("4 cached, 0 to run")
  })

  test("an invalid file fails with a UserError carrying the positioned message", async () => {
    const r = await cli("plan", fixture("cycle.yaml"), "--store", tempDir())
    expect(r.exit._tag).toBe("Failure")
    if (r.exit._tag === "Failure") expect(String(r.exit.cause)).toContain("cycle.yaml:7:18: steps.a.inputs.a: cycle: a -> b -> a")
  })
})
