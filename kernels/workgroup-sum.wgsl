// A workgroup-wide sum, prepended to the row kernels that need one (rmsnorm, layernorm):
// WG invocations, `partial` in workgroup memory, a tree reduction.
const WG = 64u;
var<workgroup> partial: array<f32, WG>;

// Workgroup sum of each invocation's `v`; every invocation gets the total.
fn workgroupSum(li: u32, v: f32) -> f32 {
  partial[li] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (li < s) { partial[li] += partial[li + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier(); // partial is reused by the next sum
  return total;
}
