/**
 * Files that come from outside (HF config.json, factor files, corpus metadata, metrics read back) are
 * checked with arktype; a failure is one InputError naming the file and each field that is wrong.
 */
import { type Type, type } from "arktype"
import { inputError } from "./errors.ts"

/** `value` if it fits `schema`; else throws `file: field must be ... (was ...)`, the problems joined by "; ". */
export function checkJson<T>(schema: Type<T>, value: unknown, file: string): T {
  const out = schema(value)
  if (out instanceof type.errors) throw inputError(file, out.summary.replace(/\n/g, "; "))
  return out as T
}
