/**
 * Validation errors that point into the workflow file: file, line, column, the path in the document and
 * what was expected. Positions come from the yaml package's node ranges.
 */
import { Data } from "effect"
import { oneLine } from "../../common/errors.ts"
import { isMap, isPair, isScalar, isSeq, type Document, type LineCounter, type Node } from "yaml"

export type DocPath = ReadonlyArray<string | number>

export interface Diagnostic {
  readonly file: string
  readonly line: number
  readonly column: number
  /** Where in the document, e.g. `steps.search.params.length`; "" for the whole file. */
  readonly path: string
  readonly message: string
}

export const formatPath = (path: DocPath): string =>
  path.reduce<string>((acc, seg) => (typeof seg === "number" ? `${acc}[${seg}]` : acc === "" ? seg : `${acc}.${seg}`), "")

export const formatDiagnostic = (d: Diagnostic): string =>
  `${d.file}:${d.line}:${d.column}: ${oneLine(`${d.path === "" ? "" : `${d.path}: `}${d.message}`)}`

/** The workflow file is invalid; nothing ran. `message` lists every problem, one per line. */
export class WorkflowInvalid extends Data.TaggedError("WorkflowInvalid")<{
  readonly diagnostics: readonly Diagnostic[]
}> {
  override get message(): string {
    return this.diagnostics.map(formatDiagnostic).join("\n")
  }
}

/** A parsed document plus what is needed to turn a document path into a line and column. */
export class SourceMap {
  constructor(
    readonly file: string,
    readonly doc: Document.Parsed,
    readonly lines: LineCounter,
    readonly text: string,
  ) {}

  /**
   * The position of the node at `path` (its key when `at` is "key"); a missing node falls back to its
   * nearest ancestor, so "missing key" errors point at the mapping that lacks it.
   */
  position(path: DocPath, at: "key" | "value" = "value"): { line: number; column: number } {
    let node: unknown = this.doc.contents
    let offset = rangeStart(node) ?? 0
    for (const seg of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && keyText(p.key) === String(seg))
        if (pair === undefined) break
        node = pair.value
        offset = (at === "key" && seg === path[path.length - 1] ? rangeStart(pair.key) : rangeStart(pair.value)) ??
          rangeStart(pair.key) ?? offset
      } else if (isSeq(node) && typeof seg === "number") {
        const item = node.items[seg]
        if (item === undefined) break
        node = item
        offset = rangeStart(item) ?? offset
      } else break
    }
    const { line, col } = this.lines.linePos(offset)
    return { line, column: col }
  }

  diag(path: DocPath, message: string, at: "key" | "value" = "value"): Diagnostic {
    return { file: this.file, ...this.position(path, at), path: formatPath(path), message }
  }

  /** The source text of the node at `path`, shortened, for "got ..." in messages. */
  source(path: DocPath): string | undefined {
    const node = this.doc.getIn(path, true) as Node | undefined | null
    if (node === undefined || node === null || node.range == null) return undefined
    const raw = this.text.slice(node.range[0], node.range[1]).trim()
    return raw.length > 40 ? `${raw.slice(0, 37)}...` : raw
  }
}

const rangeStart = (node: unknown): number | undefined =>
  node !== null && typeof node === "object" && "range" in node && Array.isArray((node as Node).range)
    ? (node as Node).range![0]
    : undefined

const keyText = (key: unknown): string | undefined => (isScalar(key) ? String(key.value) : undefined)
