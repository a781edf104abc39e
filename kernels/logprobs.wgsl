// Row-wise log-sum-exp and next-token log-probabilities: logits[t, target_t] − logsumexp_v logits[t, v].
// One workgroup per row (grid-stride over rows). Each invocation keeps an online (max, sum·e^−max)
// pair per vec4 lane, so a row is read once and no exp ever sees a positive argument; the pairs are
// then merged by a workgroup tree reduction.
struct Params {
  rows: u32,
  cols: u32,  // V in units of the entry's element (vec4 or f32)
  vocab: u32, // V in scalars
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits4: array<vec4f>;
@group(0) @binding(1) var<storage, read> logits1: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;

const WG = 64u;
const LOWEST = -3.4028234663852886e38; // finite, so LOWEST − LOWEST is 0, not NaN
var<workgroup> wm: array<f32, WG>;
var<workgroup> ws: array<f32, WG>;

// Merges every invocation's (m, s) and returns log Σ e^x = m + log s, to every invocation.
fn workgroupLse(li: u32, m: f32, s: f32) -> f32 {
  wm[li] = m;
  ws[li] = s;
  workgroupBarrier();
  for (var k = WG / 2u; k > 0u; k >>= 1u) {
    if (li < k) {
      let m1 = wm[li];
      let m2 = wm[li + k];
      let mx = max(m1, m2);
      ws[li] = ws[li] * exp(m1 - mx) + ws[li + k] * exp(m2 - mx);
      wm[li] = mx;
    }
    workgroupBarrier();
  }
  let r = wm[0] + log(ws[0]);
  workgroupBarrier(); // wm/ws are reused by the next row
  return r;
}

fn rowLse4(row: u32, li: u32) -> f32 {
  let base = row * p.cols;
  var m = vec4f(LOWEST);
  var s = vec4f(0.0);
  for (var c = li; c < p.cols; c += WG) {
    let v = logits4[base + c];
    let mx = max(m, v);
    s = s * exp(m - mx) + exp(v - mx);
    m = mx;
  }
  let mm = max(max(m.x, m.y), max(m.z, m.w));
  return workgroupLse(li, mm, dot(s, exp(m - vec4f(mm))));
}

fn rowLse1(row: u32, li: u32) -> f32 {
  let base = row * p.cols;
  var m = LOWEST;
  var s = 0.0;
  for (var c = li; c < p.cols; c += WG) {
    let v = logits1[base + c];
    let mx = max(m, v);
    s = s * exp(m - mx) + exp(v - mx);
    m = mx;
  }
  return workgroupLse(li, m, s);
}

@compute @workgroup_size(WG)
fn lse4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let l = rowLse4(row, li);
    if (li == 0u) { out[row] = l; }
  }
}

@compute @workgroup_size(WG)
fn lse1(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let l = rowLse1(row, li);
    if (li == 0u) { out[row] = l; }
  }
}

@compute @workgroup_size(WG)
fn logprob4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let l = rowLse4(row, li);
    if (li == 0u) {
      let tgt = min(targets[row], p.vocab - 1u); // out-of-range targets are the caller's bug; never read past the row
      out[row] = logits4[row * p.cols + tgt / 4u][tgt % 4u] - l;
    }
  }
}

@compute @workgroup_size(WG)
fn logprob1(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32, @builtin(num_workgroups) nwg: vec3u) {
  for (var row = wid.x; row < p.rows; row += nwg.x) {
    let l = rowLse1(row, li);
    if (li == 0u) {
      let tgt = min(targets[row], p.vocab - 1u);
      out[row] = logits1[row * p.cols + tgt] - l;
    }
  }
}
