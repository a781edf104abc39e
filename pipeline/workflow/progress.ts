/**
 * The progress reporter: steps done/total, the current step, an ETA when the stage reports fractions.
 * On a TTY one line is redrawn in place; otherwise plain lines, throttled so logs stay readable.
 */
import { Context, Effect, Layer } from "effect"

export type ProgressEvent =
  | { readonly _tag: "StepStart"; readonly index: number; readonly total: number; readonly step: string; readonly stage: string }
  | { readonly _tag: "StepCached"; readonly index: number; readonly total: number; readonly step: string }
  | { readonly _tag: "StepProgress"; readonly step: string; readonly fraction: number; readonly note: string | undefined }
  | { readonly _tag: "StepDone"; readonly index: number; readonly total: number; readonly step: string; readonly seconds: number }
  | { readonly _tag: "Log"; readonly step: string | undefined; readonly line: string }
  /** Something the user must see even with --quiet: a store entry set aside, an input that changed. */
  | { readonly _tag: "Warning"; readonly line: string }
  | { readonly _tag: "RunEnd"; readonly status: "done" | "failed" | "interrupted"; readonly ran: number; readonly cached: number }

export class Progress extends Context.Service<Progress, {
  readonly emit: (event: ProgressEvent) => Effect.Effect<void>
}>()("ropeway/Progress") {}

const fmtDuration = (s: number): string =>
  s < 60 ? `${Math.round(s)}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, "0")}m`

/** A console reporter writing to `out` (stderr by default). */
export const makeConsoleProgress = (
  out: { write(s: string): unknown; isTTY?: boolean } = process.stderr,
  now: () => number = () => performance.now(),
): Context.Service.Shape<typeof Progress> => {
  const tty = out.isTTY === true
  let stepStart = 0
  // The step's first report anchors the rate: the time before it is set-up (loading, first kernel compiles)
  // that later fractions do not repeat, e.g. a fine-tune's first step compiles every training kernel.
  let first: { t: number; f: number } | undefined
  let header = ""
  let lastPlain = -Infinity
  let drawn = false
  /** From the rate since the first report; at the first, from the step's start once 5% is done (else none). */
  const etaSeconds = (t: number, f: number): number | undefined =>
    first !== undefined
      ? f > first.f ? ((t - first.t) / 1000) * ((1 - f) / (f - first.f)) : undefined
      : f >= 0.05 ? ((t - stepStart) / 1000) * ((1 - f) / f) : undefined
  const clear = () => {
    if (drawn) out.write("\r\x1b[K")
    drawn = false
  }
  const line = (s: string) => {
    clear()
    out.write(`${s}\n`)
  }
  const status = (s: string) => {
    if (tty) {
      clear()
      out.write(s.slice(0, Math.max(20, ((out as { columns?: number }).columns ?? 100) - 1)))
      drawn = true
    } else if (now() - lastPlain >= 2000) {
      lastPlain = now()
      out.write(`${s}\n`)
    }
  }
  return {
    emit: (e) =>
      Effect.sync(() => {
        switch (e._tag) {
          case "StepStart":
            stepStart = now()
            first = undefined
            header = `[${e.index + 1}/${e.total}] ${e.step} (${e.stage})`
            lastPlain = -Infinity
            if (tty) status(`${header} ...`)
            else line(`${header} running`)
            lastPlain = now()
            break
          case "StepCached":
            line(`[${e.index + 1}/${e.total}] ${e.step}: cached`)
            break
          case "StepProgress": {
            const f = Math.min(1, Math.max(0, e.fraction))
            const t = now()
            const secs = etaSeconds(t, f)
            first ??= { t, f }
            const eta = secs !== undefined && f < 1 ? ` ETA ${fmtDuration(secs)}` : ""
            const bar = tty ? ` ${"#".repeat(Math.round(f * 20)).padEnd(20, ".")}` : ""
            status(`${header}${bar} ${(f * 100).toFixed(0)}%${eta}${e.note !== undefined ? ` ${e.note}` : ""}`)
            break
          }
          case "StepDone":
            line(`[${e.index + 1}/${e.total}] ${e.step}: done in ${fmtDuration(e.seconds)}`)
            break
          case "RunEnd":
            line(`${e.status === "done" ? "finished" : e.status}: ${e.ran} step(s) ran, ${e.cached} reused`)
            break
          case "Log":
          case "Warning":
            line(e._tag === "Warning" ? `warning: ${e.line}` : e.step === undefined ? e.line : `${e.step}: ${e.line}`)
            if (tty && header !== "") status(header)
            break
        }
      }),
  }
}

export const layerConsole: Layer.Layer<Progress> = Layer.sync(Progress, () => makeConsoleProgress())
/** Discards everything (tests). */
export const layerSilent: Layer.Layer<Progress> = Layer.succeed(Progress, { emit: () => Effect.void })
/** Warnings only, on stderr (--quiet). */
export const layerWarnings: Layer.Layer<Progress> = Layer.succeed(Progress, {
  emit: (e) => (e._tag === "Warning" ? Effect.sync(() => void process.stderr.write(`warning: ${e.line}\n`)) : Effect.void),
})
/** Collects events into an array (tests). */
export const layerCollect = (into: ProgressEvent[]): Layer.Layer<Progress> =>
  Layer.succeed(Progress, { emit: (e) => Effect.sync(() => void into.push(e)) })
