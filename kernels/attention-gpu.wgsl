// Causal flash attention for real GPUs ("gpu" profile): classic FA2. A workgroup of WG invocations
// owns WG consecutive query rows of one head (one row each); K/V tiles of BK rows are staged in
// workgroup memory and shared by all of them. Online softmax once per tile; scores in base 2.
// Key windows as in attention-cpu.wgsl.
// Template: attention.ts fills in the parameters (attention-params.wgsl) and the constants marked //%.

//% PARAMS

const D4: u32 = 0u; //% D4
const BK: u32 = 0u; //% BK
const WG: u32 = 64u;

var<workgroup> Ks: array<vec4f, BK * D4>;
var<workgroup> Vs: array<vec4f, BK * D4>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let h = wg.y;
  let heads = P.qStride / D4;
  let qi = wg.x * WG + lid.x;
  let valid = qi < P.tq;
  let qp = P.queryOffset + qi;
  let qCol = h * D4;
  let kvCol = (h / P.group) * D4;
  let kEnd = min(P.queryOffset + min(wg.x * WG + WG, P.tq), P.kStop);
  let qb = min(qi, P.tq - 1u) * P.qStride + qCol;
  let ob = qi * P.qStride + qCol;

  var q: array<vec4f, D4>;
  var acc: array<vec4f, D4>;
  var m = NEG;
  var l = 0.0;
  for (var c = 0u; c < D4; c++) {
    q[c] = Q[qb + c] * P.scale;
    acc[c] = vec4f(0.0);
  }
  if (P.first == 0u && valid) {
    let st = ML[qi * heads + h];
    m = st.x;
    l = st.y;
    for (var c = 0u; c < D4; c++) {
      acc[c] = O[ob + c];
    }
  }
  var s: array<f32, BK>;

  for (var kt = P.kStart; kt < kEnd; kt += BK) {
    for (var i = lid.x; i < BK * D4; i += WG) {
      let row = (min(kt + i / D4, kEnd - 1u) - P.kStart) * P.kvStride + kvCol + i % D4;
      Ks[i] = K[row];
      Vs[i] = V[row];
    }
    workgroupBarrier();
    let n = min(BK, kEnd - kt);
    var mx = m;
    for (var j = 0u; j < n; j++) {
      var d = 0.0;
      for (var c = 0u; c < D4; c++) {
        d += dot(q[c], Ks[j * D4 + c]);
      }
      d = select(d, NEG, kt + j > qp);
      s[j] = d;
      mx = max(mx, d);
    }
    let al = exp2(m - mx);
    l *= al;
    for (var c = 0u; c < D4; c++) {
      acc[c] *= al;
    }
    for (var j = 0u; j < n; j++) {
      let p = exp2(s[j] - mx);
      l += p;
      for (var c = 0u; c < D4; c++) {
        acc[c] += p * Vs[j * D4 + c];
      }
    }
    m = mx;
    workgroupBarrier();
  }

  if (valid) {
    let r = select(1.0, 1.0 / l, P.last == 1u);
    if (P.last == 0u) {
      ML[qi * heads + h] = vec2f(m, l);
    }
    for (var c = 0u; c < D4; c++) {
      O[ob + c] = acc[c] * r;
    }
  }
}
