// The forward attention kernels' parameters and bindings (attention-cpu.wgsl and attention-gpu.wgsl; the
// wrapper puts this in at their //% PARAMS line).
struct Params {
  tq: u32,          // query rows
  queryOffset: u32, // absolute position of query row 0
  group: u32,       // query heads per kv head
  qStride: u32,     // vec4s per q/out row (heads·headDim/4)
  kvStride: u32,    // vec4s per cache row (kvHeads·headDim/4)
  scale: f32,       // softmax scale · log2(e)
  kStart: u32,      // first key of this window (absolute; a multiple of 4); row 0 of the K/V bindings
  kStop: u32,       // end of this window (exclusive, absolute)
  last: u32,        // 1: normalise into O; 0: leave this window's unnormalised output in O, (max, sum) in ML
  first: u32,       // 1: start afresh; 0: continue from the output and (max, sum) the previous window left
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4f>;
@group(0) @binding(2) var<storage, read> K: array<vec4f>;
@group(0) @binding(3) var<storage, read> V: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> O: array<vec4f>;
@group(0) @binding(5) var<storage, read_write> ML: array<vec2f>;

// Masked scores: far below any real one, yet finite so that max/sub never meet inf - inf.
const NEG: f32 = -3.0e38;
