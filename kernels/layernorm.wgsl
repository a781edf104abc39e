// LayerNorm with bias over the last dimension, in f32 (torch.nn.LayerNorm):
// y = (x − mean) · rsqrt(var + eps) · w + b, var the biased variance. Two passes over the row (mean, then
// the squared deviations), so a large mean does not cancel the variance away.
// One workgroup per row (grid-stride over rows), sums by a workgroup tree reduction.
struct Params {
  rows: u32,
  cols: u32, // D in units of the entry's element (vec4 or f32)
  dim: u32,  // D in scalars, for the means
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4f>;
@group(0) @binding(2) var<storage, read> w4: array<vec4f>;
@group(0) @binding(3) var<storage, read> b4: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4f>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read> w1: array<f32>;
@group(0) @binding(3) var<storage, read> b1: array<f32>;
@group(0) @binding(4) var<storage, read_write> y1: array<f32>;

// workgroupSum and WG: workgroup-sum.wgsl, prepended by the wrapper.

@compute @workgroup_size(WG)
fn main4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let base = row * p.cols;
    var acc = vec4f(0.0);
    for (var c = li; c < p.cols; c += WG) { acc += x4[base + c]; }
    let mean = workgroupSum(li, (acc.x + acc.y) + (acc.z + acc.w)) / f32(p.dim);
    var sq = vec4f(0.0);
    for (var c = li; c < p.cols; c += WG) { let d = x4[base + c] - vec4f(mean); sq += d * d; }
    let inv = inverseSqrt(workgroupSum(li, (sq.x + sq.y) + (sq.z + sq.w)) / f32(p.dim) + p.eps);
    for (var c = li; c < p.cols; c += WG) { y4[base + c] = (x4[base + c] - vec4f(mean)) * inv * w4[c] + b4[c]; }
  }
}

@compute @workgroup_size(WG)
fn main1(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let base = row * p.cols;
    var acc = 0.0;
    for (var c = li; c < p.cols; c += WG) { acc += x1[base + c]; }
    let mean = workgroupSum(li, acc) / f32(p.dim);
    var sq = 0.0;
    for (var c = li; c < p.cols; c += WG) { let d = x1[base + c] - mean; sq += d * d; }
    let inv = inverseSqrt(workgroupSum(li, sq) / f32(p.dim) + p.eps);
    for (var c = li; c < p.cols; c += WG) { y1[base + c] = (x1[base + c] - mean) * inv * w1[c] + b1[c]; }
  }
}
