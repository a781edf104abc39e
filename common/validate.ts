/**
 * Files that come from outside (HF config.json, factor files, corpus metadata, metrics read back) are
 * checked with arktype; a failure is one InputError naming the file and each field that is wrong.
 */
import { type Type, type } from "arktype"
import { existsSync, readFileSync } from "node:fs"
import { inputError } from "./errors.ts"

/**
 * `value` if it fits `schema`; else throws `file: field must be ... (was ...)`, the problems joined by "; ".
 * A file whose schema is an object must hold a JSON object (not an array, which arktype's objects admit).
 */
export function checkJson<T>(schema: Type<T>, value: unknown, file: string): T {
  if (schema.json !== null && typeof schema.json === "object" && (schema.json as { domain?: unknown }).domain === "object" && (typeof value !== "object" || value === null || Array.isArray(value))) {
    throw inputError(file, `expected a JSON object, got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`)
  }
  const out = schema(value)
  if (out instanceof type.errors) throw inputError(file, out.summary.replace(/\n/g, "; "))
  return out as T
}

/** A JSON file's value; `file: not found (why)` or `file: malformed JSON (...)` otherwise. */
export function readJsonFile(file: string, notFound = "not found"): unknown {
  if (!existsSync(file)) throw inputError(file, notFound)
  try {
    return JSON.parse(readFileSync(file, "utf8"))
  } catch (e) {
    throw inputError(file, `malformed JSON (${(e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ")})`)
  }
}
