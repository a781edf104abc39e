// The workflow's `cluster:` setting and the worker's flags: checked before anything connects.
import { expect, test } from "bun:test"
import { Effect, Exit } from "effect"
import { clusterLayer, parseClusterSettings, redact } from "../../cluster/index.ts"
import { parseHostPort } from "../../cli/commands/worker.ts"
import { decodeSamples, encodeSamples } from "../../cluster/store.ts"
import { samplesHash } from "../../plugins/search/fitness.ts"

test("cluster: {store, concurrency?} is validated with the path of the bad field", () => {
  expect(parseClusterSettings({ store: "postgres://u@h:5432/db" })).toEqual({ store: "postgres://u@h:5432/db", concurrency: "unbounded" })
  expect(parseClusterSettings({ store: "postgresql://h/db", concurrency: 4 }).concurrency).toBe(4)
  expect(() => parseClusterSettings("postgres://h/db")).toThrow('cluster: Expected object, got "postgres://h/db"')
  expect(() => parseClusterSettings({})).toThrow('cluster.store: missing key "store"')
  expect(() => parseClusterSettings({ store: "mysql://h/db" })).toThrow("cluster.store: expected a postgres:// URL")
  expect(() => parseClusterSettings({ store: "postgres://h/db", concurrency: 0 })).toThrow("cluster.concurrency")
  expect(() => parseClusterSettings({ store: "postgres://h/db", concurrency: "x" })).toThrow('cluster.concurrency: Expected number | "unbounded", got "x"')
  expect(() => parseClusterSettings({ store: "postgres://h/db", workers: 2 })).toThrow('cluster.workers: unknown key "workers"')
})

test("a malformed cluster: fails the layer (not the caller) with that message", async () => {
  const exit = await Effect.runPromiseExit(Effect.scoped(Effect.asVoid(Effect.provide(Effect.void, clusterLayer({ store: "mysql://h/db" })))))
  expect(Exit.isFailure(exit)).toBe(true)
  expect(JSON.stringify(exit)).toContain('cluster.store: expected a postgres:// URL, got \\"mysql://h/db\\"')
})

test("worker flags and URLs in messages", () => {
  expect(parseHostPort("10.0.0.5:34431", "--address")).toEqual({ host: "10.0.0.5", port: 34431 })
  expect(parseHostPort("[::1]:9000", "--address")).toEqual({ host: "::1", port: 9000 })
  expect(() => parseHostPort("host", "--address")).toThrow("--address: expected HOST:PORT")
  expect(() => parseHostPort("host:70000", "--listen")).toThrow("--listen: expected HOST:PORT")
  expect(redact("postgres://u:secret@h:5432/db")).toBe("postgres://u:***@h:5432/db")
})

test("samples survive the store's text encoding bit for bit (hash checked by workers)", () => {
  const s = [
    { tokens: Uint32Array.from([256, 1, 2, 4294967295]), targets: undefined },
    { tokens: Uint32Array.from([256, 7, 8]), targets: Uint32Array.from([2]) },
  ]
  const back = decodeSamples(encodeSamples(s))
  expect(samplesHash(back)).toBe(samplesHash(s))
  expect(back[1]!.targets).toEqual(Uint32Array.from([2]))
  expect(back[0]!.targets).toBeUndefined()
})
