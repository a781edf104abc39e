// f32 ↔ 16-bit floats (IEEE f16, bfloat16) packed two to a u32, element 2i in the low half: the layout of a
// 16-bit tensor read as u32 (safetensors, 16-bit KV cache pages). Packing rounds to nearest-even in integer
// arithmetic (WGSL leaves pack2x16float's rounding to the implementation), so every adapter gives the same
// bits; unpacking is exact.
struct Params {
  pairs: u32,    // u32 words to convert
  src: u32,      // offset into the source, in its elements (f32 for pack, u32 for unpack) / 2 for pack
  dst: u32,      // offset into the destination, likewise
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> f: array<f32>;
@group(0) @binding(2) var<storage, read_write> h: array<u32>;

@group(0) @binding(1) var<storage, read> hIn: array<u32>;
@group(0) @binding(2) var<storage, read_write> fOut: array<f32>;

fn toBf16(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) { return (u >> 16u) | 0x40u; } // NaN stays a quiet NaN
  return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}

fn toF16(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  let sign = (u >> 16u) & 0x8000u;
  let e8 = (u >> 23u) & 0xffu;
  let mant = u & 0x7fffffu;
  if (e8 == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let e = i32(e8) - 112;
  if (e >= 31) { return sign | 0x7c00u; }
  var hv: u32;
  var rem: u32;
  var half: u32;
  if (e <= 0) {
    let shift = u32(14 - e);
    if (shift > 24u) { return sign; }
    let m = mant | 0x800000u;
    hv = m >> shift;
    rem = m & ((1u << shift) - 1u);
    half = 1u << (shift - 1u);
  } else {
    hv = (u32(e) << 10u) | (mant >> 13u);
    rem = mant & 0x1fffu;
    half = 0x1000u;
  }
  if (rem > half || (rem == half && (hv & 1u) == 1u)) { hv = hv + 1u; }
  return sign | hv;
}

@compute @workgroup_size(64)
fn pack_bf16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.pairs; i += nwg.x * 64u) {
    let s = 2u * (p.src + i);
    h[p.dst + i] = toBf16(f[s]) | (toBf16(f[s + 1u]) << 16u);
  }
}

@compute @workgroup_size(64)
fn pack_f16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.pairs; i += nwg.x * 64u) {
    let s = 2u * (p.src + i);
    h[p.dst + i] = toF16(f[s]) | (toF16(f[s + 1u]) << 16u);
  }
}

@compute @workgroup_size(64)
fn unpack_bf16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.pairs; i += nwg.x * 64u) {
    let w = hIn[p.src + i];
    let d = 2u * (p.dst + i);
    fOut[d] = bitcast<f32>(w << 16u);
    fOut[d + 1u] = bitcast<f32>(w & 0xffff0000u);
  }
}

@compute @workgroup_size(64)
fn unpack_f16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.pairs; i += nwg.x * 64u) {
    let v = unpack2x16float(hIn[p.src + i]);
    let d = 2u * (p.dst + i);
    fOut[d] = v.x;
    fOut[d + 1u] = v.y;
  }
}
