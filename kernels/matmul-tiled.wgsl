// C[M,N] (+)= A·B (+ bias[N]) for real GPUs: classic workgroup-memory tiling. A 16×16 workgroup computes a
// 64×64 tile of C, 4×4 outputs per invocation, staging 16-deep slices of A and B in workgroup memory.
// Operands are addressed by strides (A(m,k) = a[aOff + m·sam + k·sak]), so every transpose and any size
// works without repacking; loads outside the matrix read as 0.
// Invocation (x, y) owns rows y + 16·i and columns x + 16·j: stores coalesce and workgroup reads of Bs
// are consecutive across x.
struct Params {
  M: u32, N: u32, K: u32, flags: u32, // flags: 1 = add bias, 2 = accumulate into C
  aOff: u32, sam: u32, sak: u32, ldc: u32,
  bOff: u32, sbk: u32, sbn: u32, c0: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

const BM = 64u;
const BN = 64u;
const BK = 16u;
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

fn loadA(m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  return a[p.aOff + m * p.sam + k * p.sak];
}

fn loadB(k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  return b[p.bOff + k * p.sbk + n * p.sbn];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tid = lid.y * 16u + lid.x;
  let m0 = wg.y * BM;
  let n0 = wg.x * BN;
  // Neighbouring invocations read neighbouring addresses: along k when k is contiguous, else along m / n.
  let aAlongK = p.sak == 1u;
  let bAlongN = p.sbn == 1u;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var t = 0u; t < 4u; t++) {
      let e = tid + t * 256u;
      var am = e % BM;
      var ak = e / BM;
      if (aAlongK) { am = e / BK; ak = e % BK; }
      As[ak * BM + am] = loadA(m0 + am, k0 + ak);
      var bn = e % BN;
      var bk = e / BN;
      if (!bAlongN) { bn = e / BK; bk = e % BK; }
      Bs[bk * BN + bn] = loadB(k0 + bk, n0 + bn);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = As[kk * BM + lid.y + 16u * i];
        bv[i] = Bs[kk * BN + lid.x + 16u * i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x + 16u * j;
      if (m < p.M && n < p.N) {
        let at = m * p.ldc + p.c0 + n;
        var s = acc[i * 4u + j];
        if ((p.flags & 1u) != 0u) { s += bias[p.c0 + n]; }
        if ((p.flags & 2u) != 0u) { s += c[at]; }
        c[at] = s;
      }
    }
  }
}
