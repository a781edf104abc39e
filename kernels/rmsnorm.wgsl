// HF LlamaRMSNorm in f32: y = x · rsqrt(mean(x²) + eps) · w.
// One workgroup per row (grid-stride over rows), sum of squares by a workgroup tree reduction.
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

// workgroupSum and WG: workgroup-sum.wgsl, prepended by the wrapper.

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let base = row * p.cols;
    var acc = vec4f(0.0);
    for (var c = li; c < p.cols; c += WG) { let v = x4[base + c]; acc += v * v; }
    let inv = inverseSqrt(workgroupSum(li, (acc.x + acc.y) + (acc.z + acc.w)) / f32(p.dim) + p.eps);
    for (var c = li; c < p.cols; c += WG) { y4[base + c] = (x4[base + c] * inv) * w4[c]; }
  }
}

@compute @workgroup_size(WG)
fn main1(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let base = row * p.cols;
    var acc = 0.0;
    for (var c = li; c < p.cols; c += WG) { let v = x1[base + c]; acc += v * v; }
    let inv = inverseSqrt(workgroupSum(li, acc) / f32(p.dim) + p.eps);
    for (var c = li; c < p.cols; c += WG) { y1[base + c] = (x1[base + c] * inv) * w1[c]; }
  }
}
