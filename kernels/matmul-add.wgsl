// dst += src over `count` vec4s: the residual add of linear(…, { addTo }) on the llvmpipe path. It is a
// separate pass (≈2% of a layer's matmul time) because loading C in the matmul kernel's unrolled
// epilogue made LLVM compile it 2–3× longer.
struct Params { count: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4f>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i < p.count) { dst[i] += src[i]; }
}
