//! Matrix products with int8 weights and f32 inputs: a classifier's `Gemm` in an int8 file,
//! whose input (the pooled features) is f32. `out[m][n] = scale[n] · Σ_k w[n][k] · a[m][k] +
//! bias[n]`. The weights stay int8 in memory: Lite0's 1000 × 1280 classifier is 1.3 MB instead of
//! the 5.1 MB of f32 that tract streamed through the cache on every inference (its product took
//! 0.20 ms of int8's 5.8 here, `kestrel bench --profile`).
//!
//! Rounding: the sum runs in f32 over `w · a` (each product exact: a 24-bit mantissa times an
//! 8-bit integer fits 32 bits, then rounded once), in a different order than a plain loop, so
//! results match the reference within f32 rounding of `Σ |w · a|`, not bit for bit.

/// Rows of int8 weights with one f32 scale per row.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsI8 {
    pub rows: usize,
    pub depth: usize,
    /// `rows × depth`, row-major.
    pub w: Vec<i8>,
    pub scales: Vec<f32>,
}

/// `out[n] = scale[n] · Σ_k w[n][k] · a[k] + bias[n]` for one input vector `a` (`depth` values).
pub fn gemv_w8(w: &WeightsI8, a: &[f32], bias: &[f32], out: &mut [f32]) {
    assert!(a.len() == w.depth && bias.len() == w.rows && out.len() == w.rows);
    assert!(w.w.len() == w.rows * w.depth && w.scales.len() == w.rows);
    #[cfg(target_arch = "x86_64")]
    if super::x86::avx512_available() {
        return super::x86::gemv_w8(w, a, bias, out);
    }
    portable(w, a, bias, out)
}

/// Sixteen partial sums per row (a fixed width LLVM vectorises: `sxtl`/`scvtf`/`fmla` on
/// aarch64), added at the end.
pub fn portable(w: &WeightsI8, a: &[f32], bias: &[f32], out: &mut [f32]) {
    const L: usize = 16;
    let whole = w.depth / L * L;
    for (n, (row, o)) in w.w.chunks_exact(w.depth.max(1)).zip(out.iter_mut()).enumerate() {
        let mut acc = [0f32; L];
        for (wc, ac) in row[..whole].chunks_exact(L).zip(a[..whole].chunks_exact(L)) {
            for ((s, &wv), &av) in acc.iter_mut().zip(wc).zip(ac) {
                *s += wv as f32 * av;
            }
        }
        let tail: f32 = row[whole..]
            .iter()
            .zip(&a[whole..])
            .map(|(&wv, &av)| wv as f32 * av)
            .sum();
        *o = w.scales[n] * (acc.iter().sum::<f32>() + tail) + bias[n];
    }
}
