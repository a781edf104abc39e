// RMSNorm backward. y = x·r·w with r = (mean(x²) + eps)^−½, so per row
//   dx = r·(w∘dy) − x·r³·Σ(w∘dy∘x)/D,   dw = Σ_rows dy∘x·r.
// dw is reduced over rows without atomics, in a fixed order (deterministic): `dwPartial` sums chunks of
// CHUNK rows per column, `dwReduce` sums the chunks in order.
// The wrapper prepends `alias VT = vec4f|f32;` and `fn hsum(v: VT) -> f32` (vec4 when D % 4 == 0).
struct Params {
  rows: u32,
  cols: u32,   // D in units of VT
  dim: u32,    // D in scalars
  eps: f32,
  chunks: u32, // ceil(rows / CHUNK)
}

const WG = 64u;
const CHUNK = 32u;

@group(0) @binding(0) var<uniform> p: Params;
// rowGrad
@group(0) @binding(1) var<storage, read> x: array<VT>;
@group(0) @binding(2) var<storage, read> w: array<VT>;
@group(0) @binding(3) var<storage, read> dy: array<VT>;
@group(0) @binding(4) var<storage, read_write> dx: array<VT>;
@group(0) @binding(5) var<storage, read_write> rinv: array<f32>;
// dwPartial (x at 1)
@group(0) @binding(2) var<storage, read> pdy: array<VT>;
@group(0) @binding(3) var<storage, read> pr: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<VT>;
// dwReduce
@group(0) @binding(1) var<storage, read> rpartial: array<VT>;
@group(0) @binding(2) var<storage, read_write> dw: array<VT>;

// One invocation per row, sums in one fixed order (as rmsnorm.wgsl; no workgroup reduction).
@compute @workgroup_size(WG)
fn rowGrad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.x + gid.y * nwg.x * WG;
  if (row >= p.rows) { return; }
  let base = row * p.cols;
  var ss = VT(0.0);
  var sd = VT(0.0);
  for (var c = 0u; c < p.cols; c++) {
    let xv = x[base + c];
    ss += xv * xv;
    sd += w[c] * dy[base + c] * xv;
  }
  let r = inverseSqrt(hsum(ss) / f32(p.dim) + p.eps);
  let k = r * r * r * hsum(sd) / f32(p.dim);
  for (var c = 0u; c < p.cols; c++) {
    dx[base + c] = r * (w[c] * dy[base + c]) - x[base + c] * k;
  }
  rinv[row] = r;
}

// One invocation per (column, chunk of rows).
@compute @workgroup_size(WG)
fn dwPartial(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  let chunk = gid.y;
  if (c >= p.cols) { return; }
  let end = min(p.rows, (chunk + 1u) * CHUNK);
  var acc = VT(0.0);
  for (var row = chunk * CHUNK; row < end; row++) {
    acc += pdy[row * p.cols + c] * x[row * p.cols + c] * pr[row];
  }
  partial[chunk * p.cols + c] = acc;
}

// One invocation per column: chunks summed in order.
@compute @workgroup_size(WG)
fn dwReduce(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  var acc = VT(0.0);
  for (var k = 0u; k < p.chunks; k++) { acc += rpartial[k * p.cols + c]; }
  dw[c] = acc;
}
