// HF LlamaRMSNorm in f32: y = x · rsqrt(mean(x²) + eps) · w.
// One invocation per row, the sum of squares in one fixed order (per lane of a vec4, then (x+y)+(z+w)):
// on llvmpipe a workgroup tree reduction spends most of its time in barriers and idle lanes (8 rows of a
// SIMD vector go through together instead), and one order on every adapter keeps results identical.
struct Params {
  rows: u32,
  cols: u32, // D in units of the entry's element (vec4 or f32)
  dim: u32,  // D in scalars, for the mean
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4f>;
@group(0) @binding(2) var<storage, read> w4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> y4: array<vec4f>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<f32>;
@group(0) @binding(3) var<storage, read_write> y1: array<f32>;

const WG = 64u;

@compute @workgroup_size(WG)
fn main4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * WG;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var acc = vec4f(0.0);
  for (var c = 0u; c < p.cols; c++) { let v = x4[base + c]; acc += v * v; }
  let inv = inverseSqrt(((acc.x + acc.y) + (acc.z + acc.w)) / f32(p.dim) + p.eps);
  for (var c = 0u; c < p.cols; c++) { y4[base + c] = (x4[base + c] * inv) * w4[c]; }
}

@compute @workgroup_size(WG)
fn main1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * WG;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var acc = 0.0;
  for (var c = 0u; c < p.cols; c++) { let v = x1[base + c]; acc += v * v; }
  let inv = inverseSqrt(acc / f32(p.dim) + p.eps);
  for (var c = 0u; c < p.cols; c++) { y1[base + c] = (x1[base + c] * inv) * w1[c]; }
}
