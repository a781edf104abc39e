/**
 * Greedy generation with a KV cache, and what to do when the RoPE method's table changes with the
 * sequence length (longrope short→long at original_max+1, longrope-research buckets, dynamic NTK).
 *
 * The table for a forward over L tokens is `rope(L)` (HF: seq_len = max(position_ids)+1). A step that
 * extends the sequence to L therefore needs every cached key rotated with rope(L). Policies:
 * - `fixed`: one table for the whole session, rope(prompt + maxNew), decided up front (vLLM's way).
 * - `reprefill` (default): on a change, drop the cache and run the whole sequence again (HF Phi-3's way).
 * - `rerotate`: on a change, rotate the cached keys by the angle difference and rescale them by
 *   m_new/m_old, n̂ included (LlamaSession.rerotate: O(cache)), then continue.
 *
 * `reprefill` and `fixed` equal a fresh prefill with their table at every step. `rerotate` equals it only
 * in the first layer: the keys and values cached in deeper layers came from hidden states that attended
 * under the old table, which no rotation can undo. What it computes exactly is "every cached key as
 * computed then, rotated with the current table" (plugins/models/llama/model.ref.ts referenceDecode); on a
 * multi-layer model it is an approximation of `reprefill` whose error the tests measure.
 */
import { inputError } from "../../common/errors.ts"
import { invFreqAt } from "../../kernels/rope-table.ts"
import type { ChosenTable } from "../rope/index.ts"
import { fmt } from "../rope/table.ts"
import { sameRopeTable } from "../rope/table.ts"
import type { DecodeSession, LoadedModel } from "./family.ts"

export const POLICIES = ["fixed", "reprefill", "rerotate"] as const
export type BoundaryPolicy = (typeof POLICIES)[number]

export interface GenerateOptions {
  readonly maxNew: number
  readonly policy?: BoundaryPolicy
  /** Token ids that end generation (the stop token itself is emitted). */
  readonly stop?: readonly number[]
  /** Called with each new token as soon as it is chosen. */
  readonly onToken?: (token: number, step: GenerateStep) => void
  /** Keep each step's full next-token log-probs in the result (tests; V floats per step). */
  readonly keepLogprobs?: boolean
  /** Tokens per prefill chunk. */
  readonly chunk?: number
  /** Replaces the model's RoPE method (tests, custom tables). */
  readonly rope?: (length: number) => ChosenTable
  /** What token errors name. */
  readonly source?: string
}

/** One decoding step: the forward over the first `length` tokens that chose `token`. */
export interface GenerateStep {
  /** Sequence length the forward covered (the chosen token goes to position `length`). */
  readonly length: number
  readonly token: number
  /** ln p(token). */
  readonly logprob: number
  /** The table this forward used, and why the method chose it. */
  readonly method: string
  readonly reason: string
  /** Full next-token log-probs (only with keepLogprobs). */
  readonly logprobs?: Float64Array
}

/** A change of table during generation. */
export interface TableSwitch {
  /** The sequence length whose forward first used the new table. */
  readonly at: number
  /** Short labels of the old and new tables (method, divisor range, m, n̂). */
  readonly from: string
  readonly to: string
  /** Why the method chose the new table. */
  readonly reason: string
  /** What the policy did: "rerotated N cached keys" or "re-prefilled N tokens". */
  readonly action: string
}

export interface GenerateResult {
  /** The new tokens (without the prompt). */
  readonly tokens: number[]
  readonly steps: GenerateStep[]
  readonly switches: TableSwitch[]
  readonly policy: BoundaryPolicy
  /** The table of the prefill, and why. */
  readonly prefill: { readonly method: string; readonly reason: string }
  readonly stopped: "stop" | "max-new"
}

/** A compact description of a table, for switch records: method, λ range, m and n̂. */
export function tableLabel(t: ChosenTable): string {
  const orig = t.originalInvFreq
  const inv = invFreqAt(t, 0)
  let lo = Infinity
  let hi = -Infinity
  for (let i = 0; i < t.rotaryDim / 2; i++) {
    const f = orig[i]! / inv[i]!
    lo = Math.min(lo, f)
    hi = Math.max(hi, f)
  }
  const per = t.invFreq instanceof Float64Array ? "" : " (layer 0)"
  return `${t.method}: λ ${fmt(lo)}–${fmt(hi)}${per}, m ${fmt(t.attentionScale)}${t.startTokens > 0 ? `, n̂ ${t.startTokens}` : ""}`
}

/** Index of the largest value (the lowest index on ties). */
export function argmax(a: Float64Array): number {
  let best = 0
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i
  return best
}

/** What generation needs of a model: its RoPE method, its depth (for table comparisons) and a KV-cache session. */
export interface Generator {
  readonly config: { readonly numLayers: number }
  readonly rope: LoadedModel["rope"]
  session(capacity: number): DecodeSession
}

/** The model as a Generator, or undefined when its family gives no KV-cache session. */
export const asGenerator = (m: LoadedModel): Generator | undefined =>
  m.session === undefined ? undefined : { config: m.config, rope: m.rope, session: (capacity) => m.session!(capacity) }

export async function generate(model: Generator, prompt: Uint32Array | readonly number[], opts: GenerateOptions): Promise<GenerateResult> {
  const policy = opts.policy ?? "reprefill"
  if (!POLICIES.includes(policy)) throw inputError("policy", `expected one of ${POLICIES.join(", ")}, got ${JSON.stringify(policy)}`)
  const maxNew = opts.maxNew
  if (!Number.isInteger(maxNew) || maxNew < 0) throw inputError("max-new", `expected an integer ≥ 0, got ${maxNew}`)
  const source = opts.source ?? "prompt"
  if (prompt.length === 0) throw inputError(source, "the prompt needs at least one token")
  const rope = opts.rope ?? model.rope
  const layers = model.config.numLayers
  const seq = Array.from(prompt)
  const stop = new Set(opts.stop ?? [])
  const feedOpts = { ...(opts.chunk === undefined ? {} : { chunk: opts.chunk }), source }
  const fixedTable = policy === "fixed" ? rope(seq.length + maxNew) : undefined
  const tableFor = (length: number): ChosenTable => fixedTable ?? rope(length)

  const steps: GenerateStep[] = []
  const switches: TableSwitch[] = []
  const tokens: number[] = []
  let current = tableFor(seq.length)
  const prefill = { method: current.method, reason: current.reason }
  if (maxNew === 0) return { tokens, steps, switches, policy, prefill, stopped: "max-new" }

  // The last new token is never fed: nothing is predicted from it.
  const session = model.session(seq.length + maxNew - 1)
  let stopped: GenerateResult["stopped"] = "max-new"
  try {
    let logprobs = await session.feed(seq, current, feedOpts)
    for (let k = 0; ; k++) {
      const token = argmax(logprobs)
      const step: GenerateStep = {
        length: seq.length,
        token,
        logprob: logprobs[token]!,
        method: current.method,
        reason: current.reason,
        ...(opts.keepLogprobs === true ? { logprobs } : {}),
      }
      steps.push(step)
      tokens.push(token)
      seq.push(token)
      opts.onToken?.(token, step)
      if (stop.has(token)) {
        stopped = "stop"
        break
      }
      if (k + 1 >= maxNew) break
      const next = tableFor(seq.length)
      if (!sameRopeTable(current, next, layers)) {
        const cached = session.length
        let action: string
        if (policy === "reprefill") {
          session.reset()
          logprobs = await session.feed(seq, next, feedOpts)
          action = `dropped the cache and re-prefilled ${seq.length} tokens`
        } else {
          if (session.rerotate === undefined) throw inputError("policy", "rerotate: this model's family cannot rotate cached keys; use reprefill")
          session.rerotate(next)
          logprobs = await session.feed([token], next, feedOpts)
          action = `rerotated ${cached} cached keys × ${layers} layers`
        }
        switches.push({ at: seq.length, from: tableLabel(current), to: tableLabel(next), reason: next.reason, action })
      } else {
        logprobs = await session.feed([token], next, feedOpts)
      }
      current = next // same rotation, but its reason names this length
    }
  } finally {
    session.dispose()
  }
  return { tokens, steps, switches, policy, prefill, stopped }
}
