//! Every fast path against [`reference`], bit for bit, on random shapes, strides, paddings, zero
//! points and multipliers. On x86 with AVX2 these run the AVX2 paths and, separately, the portable
//! ones; under qemu-aarch64 (CI) they run the aarch64 build.

use super::*;

/// Three threads, so channel splits leave uneven remainders.
static POOL: std::sync::LazyLock<rayon::ThreadPool> = std::sync::LazyLock::new(|| {
    rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .expect("a 3-thread pool")
});

/// SplitMix64: reproducible cases without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.next() as i8).collect()
    }
    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + self.below((hi - lo + 1) as usize) as i32
    }
}

/// A requantisation that spreads the accumulators of `taps` products over the i8 range, with a
/// random zero point and, sometimes, a ReLU-like clamp.
fn requant_for(rng: &mut Rng, channels: usize, taps: usize) -> Requant {
    let zero_point = rng.range(-128, 127);
    let lo = if rng.below(3) == 0 { zero_point } else { -128 };
    let spread = (taps as f32).sqrt() * 128.0 * 128.0 / 64.0;
    Requant {
        multiplier: (0..channels)
            .map(|_| (0.25 + rng.below(1000) as f32 / 500.0) / spread)
            .collect(),
        zero_point,
        lo: lo.max(-128),
        hi: 127,
    }
}

/// Weights as symmetric quantisers write them (no −128), which the aarch64 mull kernel needs;
/// the other cases keep −128 and so also test its fallback.
fn symmetric(mut w: Vec<i8>) -> Vec<i8> {
    for v in &mut w {
        *v = (*v).max(-127);
    }
    w
}

/// Every path `GemmPath::available` lists packs for itself, except the mull kernel given a −128.
fn assert_packed_for(path: GemmPath, w: &GemmWeights) {
    #[cfg(target_arch = "aarch64")]
    if path == GemmPath::NeonMull {
        let mull = matches!(w.packed, super::gemm::PackedWeights::NeonMull(_));
        assert_eq!(mull, !w.plain.contains(&i8::MIN), "mull packing iff no −128");
    }
    let _ = (path, w);
}

fn bias(rng: &mut Rng, n: usize) -> Vec<i32> {
    (0..n).map(|_| rng.range(-20_000, 20_000)).collect()
}

/// A random GEMM and its reference output: weights, input, bias, requantisation, expected.
struct GemmCase {
    w: Vec<i8>,
    x: Vec<i8>,
    b: Vec<i32>,
    rq: Requant,
    expected: Vec<i8>,
}

fn gemm_case(rng: &mut Rng, rows: usize, depth: usize, cols: usize, symmetric_weights: bool) -> GemmCase {
    let w = rng.i8s(rows * depth);
    let w = if symmetric_weights { symmetric(w) } else { w };
    let x = rng.i8s(depth * cols);
    let b = bias(rng, rows);
    let rq = requant_for(rng, rows, depth);
    let expected = reference::gemm(&w, rows, depth, &x, cols, &b, &rq);
    GemmCase { w, x, b, rq, expected }
}

#[test]
fn gemm_matches_the_reference_on_random_shapes() {
    let mut rng = Rng(1);
    for case in 0..60 {
        let rows = 1 + rng.below(37);
        let depth = 1 + rng.below(70);
        let cols = 1 + rng.below(300);
        let GemmCase { w, x, b, rq, expected } = gemm_case(&mut rng, rows, depth, cols, case % 2 == 0);
        for path in GemmPath::available() {
            let packed = GemmWeights::for_path(w.clone(), rows, depth, path);
            assert_packed_for(path, &packed);
            let mut out = vec![0i8; rows * cols];
            gemm(&packed, &x, cols, &b, &rq, &mut out);
            assert_eq!(out, expected, "case {case}: {rows}×{depth}·{depth}×{cols} ({path:?})");
        }
    }
}

/// Threads split a GEMM's rows anywhere: a row range that starts and ends inside a register tile
/// must give exactly those rows of the whole product, on every path.
#[test]
fn gemm_row_ranges_give_those_rows_of_the_product() {
    let mut rng = Rng(7);
    let (rows, depth, cols) = (29, 19, 53);
    let GemmCase { w, x, b, rq, expected } = gemm_case(&mut rng, rows, depth, cols, true);
    for path in GemmPath::available() {
        let packed = GemmWeights::for_path(w.clone(), rows, depth, path);
        let input = pack_input(&packed, &x, cols);
        for range in [0..rows, 3..11, 5..6, 13..29, 27..29] {
            let mut out = vec![0i8; range.len() * cols];
            gemm_rows(&packed, range.clone(), &input, cols, &b, &rq, &mut out);
            assert_eq!(
                out,
                expected[range.start * cols..range.end * cols],
                "rows {range:?} ({path:?})"
            );
        }
    }
}

/// The largest products there are, all of one sign, over a long depth: every path's
/// intermediate sums (i16 pairs in the aarch64 mull kernel, i32 elsewhere) must hold them.
#[test]
fn gemm_sums_at_the_extremes_stay_exact() {
    let (rows, depth, cols) = (9, 301, 17);
    for (wv, xv) in [(-127i8, -128i8), (127, -128), (127, 127), (-128, -128), (-128, 127)] {
        let w = vec![wv; rows * depth];
        let x = vec![xv; depth * cols];
        let b = vec![0; rows];
        let rq = Requant {
            multiplier: vec![1.0 / (depth as f32 * 128.0 * 128.0 / 100.0); rows],
            zero_point: 0,
            lo: -128,
            hi: 127,
        };
        let expected = reference::gemm(&w, rows, depth, &x, cols, &b, &rq);
        for path in GemmPath::available() {
            let packed = GemmWeights::for_path(w.clone(), rows, depth, path);
            let mut out = vec![0i8; rows * cols];
            gemm(&packed, &x, cols, &b, &rq, &mut out);
            assert_eq!(out, expected, "w {wv}, x {xv} ({path:?})");
        }
    }
}

fn random_geometry(rng: &mut Rng, depthwise: bool) -> Geometry {
    let kernel = [1, 3, 5][rng.below(3)];
    let stride = 1 + rng.below(2);
    let channels = 1 + rng.below(20);
    let (in_channels, out_channels, groups) = if depthwise {
        (channels.max(2), channels.max(2), channels.max(2))
    } else {
        let groups = if rng.below(4) == 0 { 2 } else { 1 };
        (groups * (1 + rng.below(5)), groups * (1 + rng.below(9)), groups)
    };
    let mut pads = [0; 4];
    for p in pads.iter_mut() {
        *p = rng.below(kernel);
    }
    Geometry {
        in_channels,
        out_channels,
        groups,
        in_h: kernel + rng.below(17),
        in_w: kernel + rng.below(23),
        kernel_h: kernel,
        kernel_w: kernel,
        stride_h: stride,
        stride_w: stride,
        pads,
    }
}

fn check_conv(rng: &mut Rng, g: &Geometry, case: usize) {
    assert!(g.is_valid(), "{g:?}");
    let zx = rng.range(-128, 127);
    let x = rng.i8s(g.in_channels * g.in_h * g.in_w);
    let w = rng.i8s(g.out_channels * g.taps());
    let b = bias(rng, g.out_channels);
    let rq = requant_for(rng, g.out_channels, g.taps());
    let expected = reference::conv(g, &x, zx, &w, &b, &rq);
    let mut out = vec![0i8; expected.len()];
    for path in GemmPath::available() {
        let packed = GemmWeights::for_path(w.clone(), g.out_channels, g.taps(), path);
        let folded: Vec<i32> = b.iter().zip(packed.row_sums()).map(|(b, s)| b - zx * s).collect();
        out.fill(0);
        conv(g, &x, zx, &packed, &b, &folded, &rq, None, &mut out);
        assert_eq!(out, expected, "case {case}: {g:?}, zx {zx} ({path:?})");
        out.fill(0);
        conv(g, &x, zx, &packed, &b, &folded, &rq, Some(&POOL), &mut out);
        assert_eq!(out, expected, "case {case}: split over 3 threads, {g:?} ({path:?})");
    }
    if g.is_depthwise() {
        out.fill(0);
        let d = Depthwise {
            g,
            x: &x,
            zx,
            w: &w,
            bias: &b,
            requant: &rq,
        };
        for (name, path) in depthwise_paths() {
            out.fill(0);
            path(&d, 0..g.in_channels, &mut out);
            assert_eq!(out, expected, "case {case}: {name} depthwise {g:?}");
        }
    }
}

#[test]
fn depthwise_matches_the_reference_for_every_kernel_stride_and_padding() {
    let mut rng = Rng(2);
    for case in 0..150 {
        let g = random_geometry(&mut rng, true);
        check_conv(&mut rng, &g, case);
    }
    // The shapes EfficientNet-Lite0 runs, TF "SAME" padding as our export writes it.
    for (k, s, hw, pads) in [
        (3, 1, 112, [1, 1, 1, 1]),
        (3, 2, 112, [0, 0, 1, 1]),
        (5, 2, 28, [1, 1, 2, 2]),
    ] {
        check_conv(&mut rng, &depthwise_geometry(8, hw, k, s, pads), 999);
    }
}

/// The integer depthwise forms (x86 VNNI) group taps in fours along a row and store rows by
/// phase of the vertical stride; plane widths around 8 and 16 switch their register layouts.
/// Every kernel width 1–7 (rectangular too), strides 1–4 each way, widths on both sides of those
/// switches, and zero points at both ends.
#[test]
fn depthwise_matches_the_reference_for_every_kernel_width_stride_and_plane_width() {
    let mut rng = Rng(12);
    let mut case = 0;
    for kw in 1..=7 {
        for sw in 1..=4 {
            let kh = [3, 5, kw][case % 3];
            let sh = 1 + (case % 4);
            for in_w in [kw, kw + 7, 8 * sw + kw - 1, 16 * sw + kw, 33] {
                let g = Geometry {
                    in_channels: 3,
                    out_channels: 3,
                    groups: 3,
                    in_h: kh + rng.below(20),
                    in_w,
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    pads: [rng.below(kh), rng.below(kw), rng.below(kh), rng.below(kw)],
                };
                let zx = [-128, 127, rng.range(-128, 127)][case % 3];
                let x = rng.i8s(g.in_channels * g.in_h * g.in_w);
                let w = rng.i8s(g.out_channels * g.taps());
                let b = bias(&mut rng, g.out_channels);
                let rq = requant_for(&mut rng, g.out_channels, g.taps());
                let expected = reference::conv(&g, &x, zx, &w, &b, &rq);
                let d = Depthwise {
                    g: &g,
                    x: &x,
                    zx,
                    w: &w,
                    bias: &b,
                    requant: &rq,
                };
                for (name, path) in depthwise_paths() {
                    let mut out = vec![0i8; expected.len()];
                    path(&d, 1..3, &mut out[g.out_h() * g.out_w()..]);
                    path(&d, 0..1, &mut out);
                    assert_eq!(out, expected, "case {case}: {name} depthwise {g:?}, zx {zx}");
                }
                case += 1;
            }
        }
    }
}

/// The int8-weights matrix-vector product (an int8 file's classifier) against an f64 reference:
/// each output within f32 rounding of `scale · Σ |w · a|`, on depths around the 16-wide steps
/// and row counts around the 4-row blocks.
#[test]
fn int8_weights_gemv_matches_the_reference() {
    let mut rng = Rng(13);
    for case in 0..60 {
        let rows = 1 + rng.below(13);
        let depth = [1, 15, 16, 17, 33, 1280][case % 6] + rng.below(3);
        let w = WeightsI8 {
            rows,
            depth,
            w: rng.i8s(rows * depth),
            scales: (0..rows).map(|_| (1 + rng.below(1000)) as f32 / 3e4).collect(),
        };
        let a: Vec<f32> = (0..depth).map(|_| rng.range(-3000, 3000) as f32 / 517.0).collect();
        let bias: Vec<f32> = (0..rows).map(|_| rng.range(-100, 100) as f32 / 7.0).collect();
        let mut fast = vec![0f32; rows];
        let mut portable = vec![0f32; rows];
        gemv_w8(&w, &a, &bias, &mut fast);
        gemv_w8::portable(&w, &a, &bias, &mut portable);
        for n in 0..rows {
            let row = &w.w[n * depth..(n + 1) * depth];
            let products = row.iter().zip(&a).map(|(&wv, &av)| wv as f64 * av as f64);
            let sum: f64 = products.clone().sum();
            let magnitude: f64 = products.map(f64::abs).sum::<f64>() * w.scales[n] as f64 + bias[n].abs() as f64;
            let expected = w.scales[n] as f64 * sum + bias[n] as f64;
            for (name, got) in [("fast", fast[n]), ("portable", portable[n])] {
                assert!(
                    (got as f64 - expected).abs() <= 1e-6 * magnitude + 1e-30,
                    "case {case}: {name} row {n} of {rows}x{depth} is {got}, expected {expected} (± {})",
                    1e-6 * magnitude
                );
            }
        }
    }
}

/// f32 outputs against an f64 reference, each within f32 rounding of its sum's magnitude (a few
/// ulps of Σ|w·x|).
fn assert_f32_close(out: &[f32], expected: &[f32], magnitude: &[f64], what: &str) {
    for (i, ((&o, &e), &m)) in out.iter().zip(expected).zip(magnitude).enumerate() {
        let tolerance = 1e-6 * m + 1e-30;
        assert!(
            (o as f64 - e as f64).abs() <= tolerance,
            "{what}: output {i} is {o}, expected {e} (± {tolerance})"
        );
    }
}

/// A depthwise geometry of `c` channels on a square `hw` plane.
fn depthwise_geometry(c: usize, hw: usize, k: usize, s: usize, pads: [usize; 4]) -> Geometry {
    Geometry {
        in_channels: c,
        out_channels: c,
        groups: c,
        in_h: hw,
        in_w: hw,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pads,
    }
}

/// No clamp, a ReLU, or a ReLU6-like one: what a folded Relu/Clip gives the f32 kernels.
fn random_clamp(rng: &mut Rng) -> (f32, f32) {
    [(f32::NEG_INFINITY, f32::INFINITY), (0.0, f32::INFINITY), (0.0, 0.5)][rng.below(3)]
}

/// f32 depthwise: every path against the f64 reference, within f32 rounding of the sum's
/// magnitude (a few ulps of Σ|w·x| for at most 26 terms), with and without a thread pool.
#[test]
fn f32_depthwise_matches_the_reference_for_every_kernel_stride_and_padding() {
    let mut rng = Rng(5);
    let f32s = |rng: &mut Rng, n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next() as i8) as f32 / 37.0).collect() };
    for case in 0..150 {
        let g = random_geometry(&mut rng, true);
        let x = f32s(&mut rng, g.in_channels * g.in_h * g.in_w);
        let w = f32s(&mut rng, g.out_channels * g.taps());
        let bias = f32s(&mut rng, g.out_channels);
        let clamp = random_clamp(&mut rng);
        let (mut expected, magnitude) = reference::depthwise_f32(&g, &x, &w, &bias);
        for e in expected.iter_mut() {
            *e = e.max(clamp.0).min(clamp.1);
        }
        let d = DepthwiseF32 {
            g: &g,
            x: &x,
            w: &w,
            bias: &bias,
            clamp,
        };
        let mut out = vec![f32::NAN; expected.len()];
        let check = |out: &[f32], what: &str| {
            assert_f32_close(out, &expected, &magnitude, &format!("case {case}: {what} {g:?}"))
        };
        for (name, path) in depthwise_f32_paths() {
            out.fill(f32::NAN);
            path(&d, 0..g.in_channels, &mut out);
            check(&out, name);
        }
        out.fill(f32::NAN);
        depthwise_f32(&d, Some(&POOL), &mut out);
        check(&out, "split over 3 threads");
    }
}

/// f32 GEMM (where this CPU has it): against the f64 reference within f32 rounding of the sum's
/// magnitude, on random shapes (column tails of every width, row counts off the tile), with and
/// without a thread pool.
#[test]
fn f32_gemm_matches_the_reference_on_random_shapes() {
    if !gemm_f32_available() {
        return;
    }
    let mut rng = Rng(6);
    let f32s = |rng: &mut Rng, n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next() as i8) as f32 / 29.0).collect() };
    for case in 0..60 {
        let rows = 1 + rng.below(37);
        let depth = 1 + rng.below(70);
        let cols = 1 + rng.below(300);
        let w = f32s(&mut rng, rows * depth);
        let x = f32s(&mut rng, depth * cols);
        let bias = f32s(&mut rng, rows);
        let clamp = random_clamp(&mut rng);
        let (mut expected, magnitude) = reference::gemm_f32(&w, rows, depth, &x, cols, &bias);
        for e in expected.iter_mut() {
            *e = e.max(clamp.0).min(clamp.1);
        }
        let packed = GemmF32::new(&w, rows, depth).expect("AVX-512");
        for pool in [None, Some(&*POOL)] {
            let mut out = vec![f32::NAN; rows * cols];
            gemm_f32(&packed, &x, cols, &bias, clamp, pool, &mut out);
            let what = format!("case {case}: {rows}×{depth}·{depth}×{cols} (pool {})", pool.is_some());
            assert_f32_close(&out, &expected, &magnitude, &what);
        }
    }
}

#[test]
fn other_convolutions_match_the_reference_through_im2col() {
    let mut rng = Rng(3);
    for case in 0..80 {
        let g = random_geometry(&mut rng, false);
        check_conv(&mut rng, &g, case);
    }
}

#[test]
fn depthwise_sums_at_the_extremes_stay_exact() {
    // Every product at its largest magnitude: the f32 accumulation must still be exact.
    let g = Geometry {
        in_channels: 2,
        out_channels: 2,
        groups: 2,
        in_h: 7,
        in_w: 7,
        kernel_h: 5,
        kernel_w: 5,
        stride_h: 1,
        stride_w: 1,
        pads: [2, 2, 2, 2],
    };
    let x = vec![-128i8; 2 * 49];
    let w = vec![-128i8; 2 * 25];
    let b = vec![i32::MAX / 4, -7];
    let rq = Requant {
        multiplier: vec![1.0 / 3000.0, 1.0 / 2999.0],
        zero_point: 0,
        lo: -128,
        hi: 127,
    };
    let expected = reference::conv(&g, &x, 127, &w, &b, &rq);
    let mut out = vec![0i8; expected.len()];
    let d = Depthwise {
        g: &g,
        x: &x,
        zx: 127,
        w: &w,
        bias: &b,
        requant: &rq,
    };
    depthwise(&d, &mut out);
    assert_eq!(out, expected);
}

#[test]
fn quantize_matches_the_reference() {
    let mut rng = Rng(7);
    for case in 0..40 {
        let n = 1 + rng.below(1000);
        let scale = (1 + rng.below(1000)) as f32 / 997.0;
        let zero = rng.range(-128, 127);
        // Values around every rounding boundary and far past the int8 range, both signs.
        let x: Vec<f32> = (0..n)
            .map(|_| match rng.below(3) {
                0 => (rng.range(-300, 300) as f32 + 0.5) * scale,
                1 => rng.range(-1_000_000, 1_000_000) as f32 / 777.0,
                _ => (rng.next() as i32) as f32,
            })
            .collect();
        let expected = reference::quantize(&x, scale, zero);
        let mut out = vec![0i8; n];
        quantize(&x, scale, zero, &mut out);
        assert_eq!(out, expected, "case {case}: scale {scale}, zero {zero}");
        out.fill(0);
        portable::quantize(&x, scale, zero, &mut out);
        assert_eq!(out, expected, "case {case}: portable");
    }
}

#[test]
fn add_matches_the_reference() {
    let mut rng = Rng(4);
    for case in 0..40 {
        let n = 1 + rng.below(1000);
        let a = rng.i8s(n);
        let b = rng.i8s(n);
        let zero_point = rng.range(-128, 127);
        let p = AddParams {
            a_mult: 0.1 + rng.below(100) as f32 / 50.0,
            a_zero: rng.range(-128, 127),
            b_mult: 0.1 + rng.below(100) as f32 / 50.0,
            b_zero: rng.range(-128, 127),
            zero_point,
            lo: -128,
            hi: 127,
        };
        let expected = reference::add(&p, &a, &b);
        let mut out = vec![0i8; n];
        add(&p, &a, &b, &mut out);
        assert_eq!(out, expected, "case {case}");
    }
}

#[test]
fn requantisation_rounds_half_to_even_and_saturates() {
    assert_eq!(requantize(5, 0.5, 0, -128, 127), 2, "2.5 rounds to 2");
    assert_eq!(requantize(7, 0.5, 0, -128, 127), 4, "3.5 rounds to 4");
    assert_eq!(requantize(-5, 0.5, 0, -128, 127), -2);
    assert_eq!(requantize(i32::MAX, 1e9, 10, -128, 127), 127);
    assert_eq!(requantize(i32::MIN, 1e9, 10, -128, 127), -128);
    assert_eq!(
        requantize(-1000, 1.0, -128, -128, 127),
        -128,
        "a ReLU clamp at the zero point"
    );
}

/// Not a test: kernel timings on EfficientNet-Lite0's own shapes, for whoever tunes them.
///   cargo test --release -p kestrel-runtime --lib int8::kernels::tests::timings -- --ignored --nocapture
#[test]
#[ignore]
fn timings() {
    let mut rng = Rng(9);
    let time = |label: &str, macs: usize, f: &mut dyn FnMut()| {
        f();
        let t = std::time::Instant::now();
        let n = 20;
        for _ in 0..n {
            f();
        }
        let s = t.elapsed().as_secs_f64() / n as f64;
        println!("{label:<44} {:>8.3} ms {:>6.1} GMAC/s", s * 1e3, macs as f64 / s / 1e9);
    };
    // Every distinct depthwise shape of EfficientNet-Lite0 (TF "SAME" padding).
    for (c, hw, k, s) in [
        (32, 112, 3, 1),
        (96, 112, 3, 2),
        (144, 56, 3, 1),
        (144, 56, 5, 2),
        (240, 28, 5, 1),
        (240, 28, 3, 2),
        (480, 14, 3, 1),
        (480, 14, 5, 1),
        (672, 14, 5, 1),
        (672, 14, 5, 2),
        (1152, 7, 5, 1),
        (1152, 7, 3, 1),
    ] {
        // SAME: total padding k − s on even sizes, the odd one at the bottom and right.
        let (before, after) = ((k - s) / 2, (k - s) - (k - s) / 2);
        let g = depthwise_geometry(c, hw, k, s, [before, before, after, after]);
        let x = rng.i8s(c * hw * hw);
        let w = rng.i8s(c * k * k);
        let b = bias(&mut rng, c);
        let rq = requant_for(&mut rng, c, k * k);
        let mut out = vec![0i8; c * g.out_h() * g.out_w()];
        let macs = c * k * k * g.out_h() * g.out_w();
        let d = Depthwise {
            g: &g,
            x: &x,
            zx: 3,
            w: &w,
            bias: &b,
            requant: &rq,
        };
        for (name, path) in depthwise_paths() {
            time(&format!("depthwise {c}ch {hw}px k{k} s{s} {name}"), macs, &mut || {
                path(&d, 0..c, &mut out)
            });
        }
    }
    // Every distinct pointwise shape of EfficientNet-Lite0 (rows × depth · depth × pixels).
    for (rows, depth, cols) in [
        (16, 32, 112 * 112),
        (96, 16, 112 * 112),
        (24, 96, 56 * 56),
        (144, 24, 56 * 56),
        (24, 144, 56 * 56),
        (40, 144, 28 * 28),
        (240, 40, 28 * 28),
        (40, 240, 28 * 28),
        (80, 240, 14 * 14),
        (480, 80, 14 * 14),
        (80, 480, 14 * 14),
        (112, 480, 14 * 14),
        (672, 112, 14 * 14),
        (112, 672, 14 * 14),
        (192, 672, 49),
        (1152, 192, 49),
        (192, 1152, 49),
        (320, 1152, 49),
        (1280, 320, 49),
    ] {
        let plain = rng.i8s(rows * depth);
        let x = rng.i8s(depth * cols);
        let b = bias(&mut rng, rows);
        let rq = requant_for(&mut rng, rows, depth);
        let mut out = vec![0i8; rows * cols];
        for path in GemmPath::available() {
            let w = GemmWeights::for_path(plain.clone(), rows, depth, path);
            time(
                &format!("gemm {rows}x{depth} · {depth}x{cols} {path:?}"),
                rows * depth * cols,
                &mut || gemm(&w, &x, cols, &b, &rq, &mut out),
            );
        }
        let wf: Vec<f32> = plain.iter().map(|&v| v as f32).collect();
        if let Some(w) = GemmF32::new(&wf, rows, depth) {
            let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let bf = vec![0.5f32; rows];
            let mut out = vec![0f32; rows * cols];
            time(
                &format!("gemm {rows}x{depth} · {depth}x{cols} f32"),
                rows * depth * cols,
                &mut || gemm_f32(&w, &xf, cols, &bf, (0.0, 6.0), None, &mut out),
            );
        }
    }
}
