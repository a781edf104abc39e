/**
 * GGUF (llama.cpp's model file, version 3): a writer and a reader, enough for f32/f16 LLaMA-family exports
 * and for reading them back to check a round trip.
 *
 * Layout: "GGUF", version u32, tensor count u64, metadata count u64, metadata key/values, tensor infos
 * (name, dims innermost-first, ggml type, offset), padding to `general.alignment`, tensor data.
 */
import { inputError } from "./errors.ts"
import { writeStreamAtomic } from "./files.ts"
import { f32ToF16 } from "./safetensors.ts"

export type GgufValue =
  | { readonly type: "u32"; readonly value: number }
  | { readonly type: "i32"; readonly value: number }
  | { readonly type: "f32"; readonly value: number }
  | { readonly type: "bool"; readonly value: boolean }
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "u64"; readonly value: bigint }
  | { readonly type: "string[]"; readonly value: readonly string[] }
  | { readonly type: "i32[]"; readonly value: readonly number[] }
  | { readonly type: "f32[]"; readonly value: readonly number[] }

export interface GgufTensor {
  readonly name: string
  /** Row-major shape, outermost first (HF order, e.g. [out, in]); written innermost-first as ggml wants. */
  readonly shape: readonly number[]
  readonly data: Float32Array
  readonly dtype: "f32" | "f16"
}

export interface GgufFile {
  readonly metadata: ReadonlyMap<string, GgufValue>
  readonly tensors: readonly GgufTensor[]
}

/** A tensor whose values are made only when the writer reaches it (a model larger than memory, one tensor at a time). */
export interface LazyGgufTensor {
  readonly name: string
  readonly shape: readonly number[]
  readonly dtype: "f32" | "f16"
  readonly data: () => Float32Array
}

const T = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12 } as const
const GGML_F32 = 0
const GGML_F16 = 1
const ALIGNMENT = 32

class Writer {
  private buf = new Uint8Array(1 << 16)
  private view = new DataView(this.buf.buffer)
  length = 0

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return
    let size = this.buf.length
    while (size < this.length + n) size *= 2
    const next = new Uint8Array(size)
    next.set(this.buf.subarray(0, this.length))
    this.buf = next
    this.view = new DataView(next.buffer)
  }
  u32(v: number) { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4 }
  i32(v: number) { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4 }
  f32(v: number) { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4 }
  u64(v: bigint | number) { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8 }
  u8(v: number) { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1 }
  bytes(b: Uint8Array) { this.reserve(b.length); this.buf.set(b, this.length); this.length += b.length }
  string(s: string) { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b) }
  pad(to: number) { while (this.length % to !== 0) this.u8(0) }
  result(): Uint8Array { return this.buf.subarray(0, this.length) }
}

function writeValue(w: Writer, v: GgufValue): void {
  switch (v.type) {
    case "u32": w.u32(T.u32); w.u32(v.value); break
    case "i32": w.u32(T.i32); w.i32(v.value); break
    case "f32": w.u32(T.f32); w.f32(v.value); break
    case "bool": w.u32(T.bool); w.u8(v.value ? 1 : 0); break
    case "string": w.u32(T.string); w.string(v.value); break
    case "u64": w.u32(T.u64); w.u64(v.value); break
    case "string[]": w.u32(T.array); w.u32(T.string); w.u64(v.value.length); for (const s of v.value) w.string(s); break
    case "i32[]": w.u32(T.array); w.u32(T.i32); w.u64(v.value.length); for (const x of v.value) w.i32(x); break
    case "f32[]": w.u32(T.array); w.u32(T.f32); w.u64(v.value.length); for (const x of v.value) w.f32(x); break
  }
}

const toF16 = (data: Float32Array): Uint8Array => new Uint8Array(f32ToF16(data).buffer)

const blobOf = (dtype: "f32" | "f16", data: Float32Array): Uint8Array => (dtype === "f16" ? toF16(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
const blobBytes = (t: { readonly shape: readonly number[]; readonly dtype: "f32" | "f16" }): number => t.shape.reduce((a, b) => a * b, 1) * (t.dtype === "f16" ? 2 : 4)

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >>> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

/** Everything before the tensor data: magic, counts, metadata, tensor infos, padding. Needs shapes only. */
function ggufHeader(metadata: ReadonlyMap<string, GgufValue>, tensors: readonly { readonly name: string; readonly shape: readonly number[]; readonly dtype: "f32" | "f16" }[]): Uint8Array {
  const w = new Writer()
  w.u32(0x46554747) // "GGUF" little-endian
  w.u32(3)
  w.u64(tensors.length)
  w.u64(metadata.size)
  for (const [key, value] of metadata) { w.string(key); writeValue(w, value) }
  let offset = 0
  for (const t of tensors) {
    w.string(t.name)
    w.u32(t.shape.length)
    for (const d of [...t.shape].reverse()) w.u64(d)
    w.u32(t.dtype === "f16" ? GGML_F16 : GGML_F32)
    w.u64(offset)
    offset += Math.ceil(blobBytes(t) / ALIGNMENT) * ALIGNMENT
  }
  w.pad(ALIGNMENT)
  return w.result()
}

/** Serialises a GGUF file. */
export function encodeGguf(file: GgufFile): Uint8Array {
  const w = new Writer()
  w.bytes(ggufHeader(file.metadata, file.tensors))
  for (const t of file.tensors) { w.bytes(blobOf(t.dtype, t.data)); w.pad(ALIGNMENT) }
  return w.result()
}

/** Writes atomically: a crash never leaves half a file; a failure names `path`. */
export async function writeGguf(path: string, file: GgufFile): Promise<void> {
  writeGgufLazy(path, file.metadata, file.tensors.map((t) => ({ ...t, data: () => t.data })))
}

/** Writes a GGUF file holding one tensor in memory at a time, atomically (temp + rename); a failure names `path`. */
export function writeGgufLazy(path: string, metadata: ReadonlyMap<string, GgufValue>, tensors: readonly LazyGgufTensor[]): void {
  writeStreamAtomic(path, (put) => {
    const header = ggufHeader(metadata, tensors)
    put(header)
    let at = header.length
    for (const t of tensors) {
      const blob = blobOf(t.dtype, t.data())
      const pad = (ALIGNMENT - ((at + blob.length) % ALIGNMENT)) % ALIGNMENT
      put(blob)
      put(new Uint8Array(pad))
      at += blob.length + pad
    }
  })
}

/** Bytes per element of each metadata scalar type (strings: their 8-byte length at least). */
const SCALAR_BYTES: Readonly<Record<number, number>> = { [T.u8]: 1, [T.i8]: 1, [T.u16]: 2, [T.i16]: 2, [T.u32]: 4, [T.i32]: 4, [T.f32]: 4, [T.bool]: 1, [T.string]: 8, [T.u64]: 8, [T.i64]: 8, [T.f64]: 8 }
/** ggml keeps at most 4 dimensions; a few more are allowed before a file counts as damaged. */
const MAX_DIMS = 8

/** A cursor over a GGUF file's bytes: every read checks that the bytes are there, and failures name the file. */
class GgufReader {
  readonly view: DataView
  p = 0
  constructor(readonly bytes: Uint8Array, readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  fail(what: string): never {
    throw inputError(this.file, what)
  }
  need(n: number, what: string): void {
    if (n > this.bytes.length - this.p) this.fail(`${what} at byte ${this.p} needs ${n} bytes; the file ends at ${this.bytes.length}`)
  }
  u32(what: string): number {
    this.need(4, what)
    const v = this.view.getUint32(this.p, true)
    this.p += 4
    return v
  }
  u64(what: string): bigint {
    this.need(8, what)
    const v = this.view.getBigUint64(this.p, true)
    this.p += 8
    return v
  }
  /** A u64 count of items of at least `minBytes` each, refused when they cannot fit in the rest of the file. */
  count(what: string, minBytes: number): number {
    const n = this.u64(what)
    const left = this.bytes.length - this.p
    if (n > BigInt(Math.floor(left / minBytes))) this.fail(`${what} ${n} cannot fit in the ${left} bytes left`)
    return Number(n)
  }
  str(what: string): string {
    const n = this.count(`${what} length`, 1)
    const s = new TextDecoder().decode(this.bytes.subarray(this.p, this.p + n))
    this.p += n
    return s
  }
  scalar(t: number, what: string): number | bigint | boolean | string {
    const size = SCALAR_BYTES[t]
    if (size === undefined) return this.fail(`${what}: unknown metadata type ${t}`)
    if (t === T.string) return this.str(what)
    this.need(size, what)
    const at = this.p
    const view = this.view
    this.p += size
    switch (t) {
      case T.u8: return view.getUint8(at)
      case T.i8: return view.getInt8(at)
      case T.u16: return view.getUint16(at, true)
      case T.i16: return view.getInt16(at, true)
      case T.u32: return view.getUint32(at, true)
      case T.i32: return view.getInt32(at, true)
      case T.f32: return view.getFloat32(at, true)
      case T.bool: return view.getUint8(at) !== 0
      case T.u64: return view.getBigUint64(at, true)
      case T.i64: return view.getBigInt64(at, true)
      default: return view.getFloat64(at, true)
    }
  }
}

/** A tensor's header: its name, shape (row-major, outermost first), ggml type and offset in the data section. */
interface GgufTensorInfo {
  readonly name: string
  readonly shape: number[]
  readonly type: number
  readonly offset: bigint
  readonly elements: bigint
}

/**
 * Parses a GGUF file (f32/f16 tensors; other ggml types are reported as unsupported). Every count,
 * length, dimension and offset is checked against the bytes that are there before anything is
 * allocated, so a damaged file is an InputError naming it, never a giant allocation.
 */
export function decodeGguf(bytes: Uint8Array, file = "model.gguf"): GgufFile {
  const r = new GgufReader(bytes, file)
  if (r.u32("magic") !== 0x46554747) r.fail("not a GGUF file (bad magic)")
  const version = r.u32("version")
  if (version !== 3) r.fail(`GGUF version ${version}; only version 3 is read`)
  const nTensors = r.count("tensor count", 32)
  const nKv = r.count("metadata count", 12)
  const metadata = new Map<string, GgufValue>()
  for (let i = 0; i < nKv; i++) {
    const key = r.str(`metadata key ${i}`)
    metadata.set(key, readValue(r, key))
  }
  const alignmentValue = metadata.get("general.alignment")
  const alignment = alignmentValue?.type === "u32" ? alignmentValue.value : ALIGNMENT
  if (alignment < 1 || (alignment & (alignment - 1)) !== 0) r.fail(`general.alignment ${alignment}: expected a power of two`)
  const infos: GgufTensorInfo[] = []
  for (let i = 0; i < nTensors; i++) infos.push(readTensorInfo(r, i))
  const dataStart = Math.ceil(r.p / alignment) * alignment
  const tensors = infos.map((info) => readTensor(r, info, dataStart))
  return { metadata, tensors }
}

/** One metadata value (its type, then the value or an array of them), typed the way GgufValue keeps it. */
function readValue(r: GgufReader, key: string): GgufValue {
  const t = r.u32(`type of ${key}`)
  if (t === T.array) {
    const et = r.u32(`element type of ${key}`)
    if (SCALAR_BYTES[et] === undefined) r.fail(`${key}: unknown array element type ${et}`)
    const n = r.count(`${key} element count`, SCALAR_BYTES[et]!)
    const items: unknown[] = []
    for (let j = 0; j < n; j++) items.push(r.scalar(et, `${key}[${j}]`))
    if (et === T.string) return { type: "string[]", value: items as string[] }
    if (et === T.f32 || et === T.f64) return { type: "f32[]", value: items as number[] }
    return { type: "i32[]", value: items.map(Number) }
  }
  const v = r.scalar(t, key)
  if (typeof v === "string") return { type: "string", value: v }
  if (typeof v === "boolean") return { type: "bool", value: v }
  if (typeof v === "bigint") return { type: "u64", value: v }
  if (t === T.f32 || t === T.f64) return { type: "f32", value: v }
  if (t === T.i32 || t === T.i8 || t === T.i16) return { type: "i32", value: v }
  return { type: "u32", value: v }
}

function readTensorInfo(r: GgufReader, i: number): GgufTensorInfo {
  const name = r.str(`tensor ${i} name`)
  const nd = r.u32(`${name} dimension count`)
  if (nd > MAX_DIMS) r.fail(`tensor ${name}: ${nd} dimensions; GGUF tensors have at most 4`)
  const dims: bigint[] = []
  for (let j = 0; j < nd; j++) dims.push(r.u64(`${name} dimension ${j}`))
  const type = r.u32(`${name} type`)
  const offset = r.u64(`${name} offset`)
  const elements = dims.reduce((a, b) => a * b, 1n)
  return { name, shape: dims.reverse().map(Number), type, offset, elements }
}

/** A tensor's values as f32 (f16 widened), after checking they lie inside the data section. */
function readTensor(r: GgufReader, info: GgufTensorInfo, dataStart: number): GgufTensor {
  const bytes = r.bytes
  const dataBytes = BigInt(Math.max(0, bytes.length - dataStart))
  const elemBytes = info.type === GGML_F32 ? 4n : info.type === GGML_F16 ? 2n : undefined
  if (elemBytes === undefined) return r.fail(`tensor ${info.name} has ggml type ${info.type}; only F32 and F16 are read`)
  const size = info.elements * elemBytes
  if (info.offset + size > dataBytes) {
    r.fail(`tensor ${info.name}: ${size} bytes at data offset ${info.offset} lie outside the ${dataBytes} data bytes`)
  }
  const start = dataStart + Number(info.offset)
  const n = Number(info.elements)
  if (info.type === GGML_F32) {
    const data = new Float32Array(bytes.slice(start, start + n * 4).buffer)
    return { name: info.name, shape: info.shape, data, dtype: "f32" }
  }
  const halves = new Uint16Array(bytes.slice(start, start + n * 2).buffer)
  const data = new Float32Array(n)
  for (let i = 0; i < n; i++) data[i] = f16ToF32(halves[i]!)
  return { name: info.name, shape: info.shape, data, dtype: "f16" }
}
