// Copies a column-padded scratch C [M, lds] into the real C [M, N] (row stride ldc, column offset c0),
// adding to what is there when accumulating. Used when N is not a multiple of the llvmpipe block (16).
struct Params { M: u32, N: u32, lds: u32, ldc: u32, c0: u32, accumulate: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.M * p.N) { return; }
  let r = i / p.N;
  let n = i % p.N;
  let at = r * p.ldc + p.c0 + n;
  var v = src[r * p.lds + n];
  if (p.accumulate != 0u) { v += dst[at]; }
  dst[at] = v;
}
