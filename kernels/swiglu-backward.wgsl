// SwiGLU backward: out = silu(g)·u, silu(g) = g·σ(g), so
//   dup = dout·silu(g),   dgate = dout·u·σ(g)·(1 + g·(1 − σ(g))).
// σ from exp(−|g|) ≤ 1, as in the forward, so no exp overflows.
// The wrapper prepends `alias VT = vec4f|f32;` (vec4 when the length is a multiple of 4).
struct Params { n: u32 } // elements in units of VT

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<VT>;
@group(0) @binding(2) var<storage, read> up: array<VT>;
@group(0) @binding(3) var<storage, read> dout: array<VT>;
@group(0) @binding(4) var<storage, read_write> dgate: array<VT>;
@group(0) @binding(5) var<storage, read_write> dup: array<VT>;

fn sigmoid(x: VT) -> VT {
  let e = exp(-abs(x));
  let r = 1.0 / (1.0 + e);
  return select(e * r, r, x >= VT(0.0));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) {
    let g = gate[i];
    let d = dout[i];
    let s = sigmoid(g);
    dup[i] = d * (g * s);
    dgate[i] = d * up[i] * (s * (1.0 + g * (1.0 - s)));
  }
}
