// Merges one key window's attention into the running state, for caches longer than one storage
// binding (see attention.ts): O, W hold unnormalised outputs, ML, MW their (max, sum) in base 2, per
// (query row, head); an (row, head) pair's headDim values are contiguous in the [T, heads·headDim] layout.
// A separate pass because merging inside the unrolled cpu kernel doubled its compile time.
// A window none of whose keys a query may see leaves it max NEG (and a meaningless sum/output, since
// every masked key weighed exp2(0)); its weight exp2(NEG - m) is exactly 0. The running max is always
// real: window 0 holds key 0, which every query sees.

struct Params {
  n: u32,     // query rows × heads
  d4: u32,    // headDim / 4
  last: u32,  // 1: also normalise (the final window)
  gx: u32,    // workgroups along x (2D grid once n/256 exceeds the per-dimension limit)
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> O: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> ML: array<vec2f>;
@group(0) @binding(3) var<storage, read> W: array<vec4f>;
@group(0) @binding(4) var<storage, read> MW: array<vec2f>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let i = (wg.y * P.gx + wg.x) * 256u + lid.x;
  if (i >= P.n) {
    return;
  }
  let a = ML[i];
  let b = MW[i];
  let m = max(a.x, b.x);
  let fa = exp2(a.x - m);
  let fb = exp2(b.x - m);
  let l = a.y * fa + b.y * fb;
  let r = select(1.0, 1.0 / l, P.last == 1u);
  ML[i] = vec2f(m, l);
  let base = i * P.d4;
  for (var c = 0u; c < P.d4; c++) {
    O[base + c] = (O[base + c] * fa + W[base + c] * fb) * r;
  }
}
