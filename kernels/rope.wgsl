// Rotary position embedding, applied in place with HF's rotate_half pairing (dim i with i + half).
//
// Angle precision: a plain f32 n·θ is off by ~0.1 rad at n = 2M. Instead the host stores each θ/(2π)
// (turns per position) as a 64-bit fixed-point fraction (hi, lo), and here (n·θ/2π) mod 1 is formed
// exactly in u32 arithmetic: the integer part of the product wraps away, so only the top 32 fraction
// bits are needed = n·hi (mod 2^32) + mulhi(n, lo). No float adds are involved, so no compiler
// reassociation can change the result. The turn is reduced to the nearest quarter in integers, and
// cos/sin come from Taylor polynomials on |x| ≤ π/4 (WGSL's builtins only promise 2^-11 absolute
// on some GPUs). Error: ≤ ~3e-7 rad in angle, ≤ ~2e-7 in cos/sin, at any u32 position.
struct Params {
  count: u32,       // T·quads (vec4 entry) or T·half (scalar entry)
  quads: u32,       // ceil(half / 4): table entries per layer
  half: u32,        // rotaryDim / 2
  heads: u32,
  headDim: u32,
  tableBase: u32,   // layer · quads
  startTokens: u32, // positions below use the original frequencies and no scale
  scale: f32,       // attention scale m on cos and sin
}

@group(0) @binding(0) var<uniform> p: Params;
// Per (layer, quad of pairs): [hi, lo, origHi, origLo], each a vec4 over the quad's 4 pairs.
@group(0) @binding(1) var<storage, read> freq: array<vec4u>;
@group(0) @binding(2) var<storage, read> pos: array<u32>;
@group(0) @binding(3) var<storage, read_write> x4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> x1: array<f32>;

struct CosSin { c: vec4f, s: vec4f }

// High 32 bits of a·b, from 16-bit limbs so every partial product fits in u32.
fn mulhi(a: vec4u, b: vec4u) -> vec4u {
  let m = vec4u(0xffffu);
  let s = vec4u(16u);
  let a0 = a & m; let a1 = a >> s;
  let b0 = b & m; let b1 = b >> s;
  let p00 = a0 * b0; let p01 = a0 * b1; let p10 = a1 * b0; let p11 = a1 * b1;
  let mid = (p00 >> s) + (p01 & m) + (p10 & m); // < 3·2^16: no overflow
  return p11 + (p01 >> s) + (p10 >> s) + (mid >> s);
}

// cos and sin of n·θ for 4 pairs; θ/(2π) = (hi + lo·2^-32)·2^-32.
fn rotation(n: u32, hi: vec4u, lo: vec4u) -> CosSin {
  let nv = vec4u(n);
  let turn = nv * hi + mulhi(nv, lo);               // fraction of a turn, 0.32 fixed point (wrapping)
  let q = (turn + vec4u(0x20000000u)) >> vec4u(30u); // nearest quarter turn, 0..3
  let r = bitcast<vec4i>(turn - (q << vec4u(30u))); // remainder in [−2^29, 2^29)
  let x = vec4f(r) * 1.4629180792671596e-9;          // · 2π/2^32: |x| ≤ π/4
  let x2 = x * x;
  // Taylor to x^9 / x^10: truncation < 2e-9 on |x| ≤ π/4.
  let sn = x * (1.0 + x2 * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362880.0)))));
  let cs = 1.0 + x2 * (-0.5 + x2 * (1.0 / 24.0 + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40320.0 + x2 * (-1.0 / 3628800.0)))));
  // Rotate by q quarter turns: q=1 → (−s, c), q=2 → (−c, −s), q=3 → (s, −c).
  let odd = (q & vec4u(1u)) == vec4u(1u);
  let c0 = select(cs, sn, odd);
  let s0 = select(sn, cs, odd);
  let negC = (q == vec4u(1u)) | (q == vec4u(2u));
  let negS = q >= vec4u(2u);
  return CosSin(select(c0, -c0, negC), select(s0, -s0, negS));
}

fn rotationAt(t: u32, quad: u32) -> CosSin {
  let n = pos[t];
  let early = n < p.startTokens;
  let f = (p.tableBase + quad) * 4u;
  let k = select(0u, 2u, early);
  let r = rotation(n, freq[f + k], freq[f + k + 1u]);
  let m = select(p.scale, 1.0, early);
  return CosSin(r.c * m, r.s * m);
}

// One invocation per (token, quad of pairs): the angles are computed once and applied to every head.
// Needs headDim and half divisible by 4, so each quad is one aligned vec4 in each half.
@compute @workgroup_size(64)
fn main4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let hd4 = p.headDim / 4u;
  let half4 = p.half / 4u;
  for (var e = gid.x; e < p.count; e += nwg.x * 64u) {
    let t = e / p.quads;
    let j = e - t * p.quads;
    let r = rotationAt(t, j);
    var a = t * p.heads * hd4 + j;
    for (var h = 0u; h < p.heads; h++) {
      let u = x4[a];
      let v = x4[a + half4];
      x4[a] = u * r.c - v * r.s;
      x4[a + half4] = v * r.c + u * r.s;
      a += hd4;
    }
  }
}

// Fallback for odd shapes: one invocation per (token, pair).
@compute @workgroup_size(64)
fn main1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < p.count; e += nwg.x * 64u) {
    let t = e / p.half;
    let i = e - t * p.half;
    let r = rotationAt(t, i / 4u);
    let c = r.c[i % 4u];
    let s = r.s[i % 4u];
    var a = t * p.heads * p.headDim + i;
    for (var h = 0u; h < p.heads; h++) {
      let u = x1[a];
      let v = x1[a + p.half];
      x1[a] = u * c - v * s;
      x1[a + p.half] = v * c + u * s;
      a += p.headDim;
    }
  }
}
