/**
 * `ropeway worker --store postgres://user@host:port/db [--address HOST:PORT] [--listen HOST:PORT] [--id NAME] [--plugin FILE]...`:
 * runs a cluster worker on this machine's GPU until interrupted (Ctrl-C / SIGTERM leave the cluster
 * cleanly: shards are released, the runner unregistered). Searches whose workflow has
 * `cluster: { store: <the same URL> }` send their fitness evaluations to the workers.
 * Prints `worker NAME ready (...)` once registered, then one line per evaluation.
 */
import { hostname } from "node:os"
import { Cause, Console, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { describeAdapter, Gpu } from "../../kernels/device.ts"
import { checkStoreUrl } from "../../cluster/store.ts"
import { workerLayer } from "../../cluster/worker.ts"
import { redact } from "../../cluster/evaluator.ts"
import { familiesOf } from "../../plugins/models/registry.ts"
import { registryFromFlags } from "../workflow.ts"
import { InputError, inputError } from "../../common/errors.ts"

const attempt = <A>(f: () => A): Effect.Effect<A, Error> => Effect.try({ try: f, catch: (e) => (e instanceof Error ? e : new Error(String(e))) })

/** An error and its causes on one line ("Failed to connect: connect ECONNREFUSED 127.0.0.1:1"). */
const describe = (e: unknown): string => {
  const parts: string[] = []
  for (let x: unknown = e; x !== undefined && x !== null && parts.length < 4; x = (x as { cause?: unknown }).cause) {
    const m = x instanceof Error || (typeof x === "object" && "message" in x) ? String((x as { message: unknown }).message) : String(x)
    if (m !== "" && !parts.some((p) => p.includes(m))) parts.push(m)
    if (typeof x !== "object") break
  }
  return parts.join(": ") || String(e)
}

/** HOST:PORT (IPv6 hosts in brackets). */
export function parseHostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text)
  const port = m === null ? NaN : Number(m[3])
  if (m === null || !(port >= 1 && port <= 65535)) throw inputError(flag, `expected HOST:PORT (port 1-65535), got ${JSON.stringify(text)}`)
  return { host: (m[1] ?? m[2])!, port }
}

export const worker = Command.make(
  "worker",
  {
    store: Flag.String("store").pipe(Flag.withDescription("the cluster's Postgres: postgres://user[:password]@host[:port]/database")),
    address: Flag.String("address").pipe(
      Flag.withDescription("HOST:PORT where coordinators and other workers reach this worker (default: this host's name, port 34431)"),
      Flag.optional,
    ),
    listen: Flag.String("listen").pipe(Flag.withDescription("HOST:PORT to listen on when it differs from --address"), Flag.optional),
    id: Flag.String("id").pipe(Flag.withDescription("this worker's name in logs and replies (default: host-pid)"), Flag.optional),
    plugin: Flag.String("plugin").pipe(Flag.withDescription("a plugin file or npm package whose model families the worker reads (repeatable)"), Flag.atLeast(0)),
  },
  Effect.fn(function* ({ store, address, listen, id, plugin }) {
    yield* attempt(() => checkStoreUrl(store, "--store"))
    const addr = yield* attempt(() => (Option.isSome(address) ? parseHostPort(address.value, "--address") : { host: hostname(), port: 34431 }))
    const bind = Option.isSome(listen) ? yield* attempt(() => parseHostPort(listen.value, "--listen")) : undefined
    const name = Option.getOrElse(id, () => `${hostname()}-${process.pid}`)
    const layer = workerLayer({
      store,
      address: addr,
      ...(bind === undefined ? {} : { listen: bind }),
      id: name,
      families: familiesOf(yield* registryFromFlags(plugin)),
      log: (line) => process.stdout.write(`${name}: ${line}\n`),
    })
    // The GPU first, so a machine without one fails before it joins the cluster.
    yield* Effect.scoped(
      Effect.gen(function* () {
        const gpu = yield* Gpu
        yield* Layer.build(layer.pipe(Layer.provide(Layer.succeed(Gpu, gpu)))).pipe(
          // Storage failures surface as defects (the cluster layers die on them): one line for the user either way.
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.interrupt : Effect.fail(new InputError({ message: `cluster store ${redact(store)}: ${describe(Cause.squash(cause))}` })),
          ),
        )
        yield* Console.log(`worker ${name} ready (${addr.host}:${addr.port}, store ${redact(store)}, ${describeAdapter(gpu.adapter)})`)
        return yield* Effect.never
      }),
    ).pipe(Effect.provide(Gpu.layer))
  }),
).pipe(Command.withDescription("Evaluate search fitness requests for the cluster in --store, on this machine's GPU"))
