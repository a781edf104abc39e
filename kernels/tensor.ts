/** A GPU tensor: a storage buffer plus its logical shape. Row-major, densely packed. */
export type DType = "f32" | "u32" | "i32"

export interface Tensor {
  readonly buffer: GPUBuffer
  readonly shape: readonly number[]
  readonly dtype: DType
}

/** 16-bit floats: IEEE binary16, or bfloat16 (the top half of an f32). */
export type Half = "f16" | "bf16"

/**
 * A tensor of 16-bit floats packed two to a u32 (element 2i in the low half, as a 16-bit file stores them):
 * weights kept in their file dtype, 16-bit KV cache pages. Only the kernels that take one read it.
 */
export interface HalfTensor {
  readonly buffer: GPUBuffer
  readonly shape: readonly number[]
  readonly dtype: Half
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1)

export const bytesOf = (t: Tensor): number => numel(t.shape) * 4

export const shapeString = (shape: readonly number[]): string => `[${shape.join("×")}]`

/** Throws when a tensor's shape differs from what an op expects; names the op and the operand. */
export function expectShape(op: string, operand: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${op}: ${operand} has shape ${shapeString(t.shape)}, expected ${shapeString(shape)}`)
  }
}
