//! Kernels against their references: for every weight type, the packed matmul equals an f64
//! dot product of the dequantized weights with the dequantized activation codes, and the SIMD
//! kernel equals the scalar kernel bit for bit.

use everett_engine::gguf::GgmlType;
use everett_engine::kernels::act::QuantActs;
use everett_engine::kernels::matmul::{matmul, Isa};
use everett_engine::kernels::pack::PackedMatrix;
use everett_engine::kernels::pool::ThreadPool;
use everett_engine::kernels::quant::dequantize;
use everett_engine::sample::Rng;
use everett_engine::testutil::{rand_f32, random_blocks};

const TYPES: [GgmlType; 20] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
    GgmlType::MXFP4,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::Q1_0,
    GgmlType::Q2_0,
];

fn check_type(ty: GgmlType, n: usize, k: usize, rows: usize, pool: &ThreadPool) {
    let mut rng = Rng::new(ty.id() as u64 + 7);
    let raw = random_blocks(&mut rng, ty, n * k);
    let mut w = vec![0f32; n * k];
    dequantize(ty, &raw, &mut w);
    let packed = PackedMatrix::pack("w", ty, &raw, n, k).unwrap();
    let x = rand_f32(&mut rng, rows * k, 2.0);
    let mut acts = QuantActs::default();
    acts.quantize(&x, rows, k);
    let quantized = matches!(packed, PackedMatrix::Codes(_));
    let mut out = vec![0f32; rows * n];
    matmul(pool, Isa::SCALAR, &packed, &x, &acts, rows, &mut out);
    for r in 0..rows {
        for c in 0..n {
            let xr: Vec<f64> = (0..k)
                .map(|i| {
                    if quantized {
                        acts.codes()[r * k + i] as f64 * acts.scales()[(r * k + i) / 32] as f64
                    } else {
                        x[r * k + i] as f64
                    }
                })
                .collect();
            let want: f64 = (0..k).map(|i| xr[i] * w[c * k + i] as f64).sum();
            let got = out[r * n + c] as f64;
            let scale: f64 = (0..k)
                .map(|i| (xr[i] * w[c * k + i] as f64).abs())
                .sum::<f64>()
                + 1e-9;
            assert!(
                (got - want).abs() <= 1e-5 * scale,
                "{} r{r} c{c}: {got} vs {want}",
                ty.name()
            );
        }
    }
    for isa in Isa::available() {
        let mut fast = vec![0f32; rows * n];
        matmul(pool, isa, &packed, &x, &acts, rows, &mut fast);
        assert_eq!(fast, out, "{}: {isa:?} differs from scalar", ty.name());
    }
}

#[test]
fn every_type_matches_reference_and_simd_matches_scalar() {
    let pool = ThreadPool::new(2);
    for ty in TYPES {
        // n not a multiple of 16 exercises the padded column group, with its valid columns
        // inside the first 8-column half (37) and reaching into the second (45); rows 1..=7
        // every tile size.
        for (n, rows) in [
            (37, 1),
            (37, 3),
            (37, 7),
            (37, 16),
            (37, 21),
            (45, 5),
            (45, 6),
        ] {
            check_type(ty, n, 512, rows, &pool);
        }
    }
}

#[test]
fn rows_do_not_depend_on_each_other() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng::new(3);
    let (n, k) = (40, 256);
    let raw = random_blocks(&mut rng, GgmlType::Q4_K, n * k);
    let packed = PackedMatrix::pack("w", GgmlType::Q4_K, &raw, n, k).unwrap();
    let x = rand_f32(&mut rng, 9 * k, 1.0);
    let (mut all, mut one) = (QuantActs::default(), QuantActs::default());
    all.quantize(&x, 9, k);
    let mut out_all = vec![0f32; 9 * n];
    matmul(&pool, Isa::detect(), &packed, &x, &all, 9, &mut out_all);
    for r in 0..9 {
        one.quantize(&x[r * k..(r + 1) * k], 1, k);
        let mut out = vec![0f32; n];
        matmul(
            &pool,
            Isa::detect(),
            &packed,
            &x[r * k..],
            &one,
            1,
            &mut out,
        );
        assert_eq!(out, out_all[r * n..(r + 1) * n]);
    }
}

#[test]
fn fast_exp_is_accurate_over_its_range() {
    use everett_engine::kernels::ops::exp_fast;
    let mut worst = 0f64;
    // Below about -87 results are subnormal and lose relative precision; nothing needs them.
    for i in 0..168_000 {
        let x = -80.0 + i as f32 * 0.001;
        let want = (x as f64).exp();
        worst = worst.max(((exp_fast(x) as f64) - want).abs() / want);
    }
    assert!(worst < 5e-7, "relative error {worst}");
    assert!(exp_fast(-1000.0) < 1e-37);
    assert!(exp_fast(1000.0).is_finite() && exp_fast(1000.0) > 1e38);
}

#[test]
fn near_maximal_codes_and_activations_do_not_overflow_simd_sums() {
    // Every byte 0xEE: nibbles of 14, high bits mostly set, finite f16 scales; activations all
    // at the top code. i16 pair sums summed over a chunk are then near their bound, and any
    // overflow would make a SIMD kernel differ from the scalar one.
    let pool = ThreadPool::new(2);
    let (n, k, rows) = (32, 512, 5);
    for ty in TYPES.into_iter().filter(|t| t.block_elems() > 1) {
        let raw = vec![0xEEu8; n * k / ty.block_elems() * ty.block_bytes()];
        let packed = PackedMatrix::pack("w", ty, &raw, n, k).unwrap();
        for sign in [1.0f32, -1.0] {
            let x = vec![sign; rows * k];
            let mut acts = QuantActs::default();
            acts.quantize(&x, rows, k);
            let mut want = vec![0f32; rows * n];
            matmul(&pool, Isa::SCALAR, &packed, &x, &acts, rows, &mut want);
            assert!(
                want.iter().all(|v| v.is_finite() && *v != 0.0),
                "{}",
                ty.name()
            );
            for isa in Isa::available() {
                let mut got = vec![0f32; rows * n];
                matmul(&pool, isa, &packed, &x, &acts, rows, &mut got);
                assert_eq!(got, want, "{}: {isa:?} differs from scalar", ty.name());
            }
        }
    }
}

#[test]
fn maximal_six_bit_codes_do_not_overflow_paired_i16_sums() {
    // Q6_K with every code at 63 (all code bits set), scale bytes -1 and d = 1.0: the AVX2 kernel
    // adds two steps' i16 pair sums before widening, 2 · 2 · 63 · 127 = 32 004, just inside i16.
    // Any overflow would make it differ from the scalar kernel.
    let pool = ThreadPool::new(2);
    let (n, k, rows) = (32, 512, 5);
    let ty = GgmlType::Q6_K;
    let mut block = vec![0xFFu8; ty.block_bytes()];
    block[208..210].copy_from_slice(&[0x00, 0x3C]);
    let raw = block.repeat(n * k / ty.block_elems());
    let packed = PackedMatrix::pack("w", ty, &raw, n, k).unwrap();
    for sign in [1.0f32, -1.0] {
        let x = vec![sign; rows * k];
        let mut acts = QuantActs::default();
        acts.quantize(&x, rows, k);
        assert!(acts.codes().iter().all(|c| c.unsigned_abs() == 127));
        let mut want = vec![0f32; rows * n];
        matmul(&pool, Isa::SCALAR, &packed, &x, &acts, rows, &mut want);
        // Each weight is -1 · (63 - 32) = -31; each activation ±1.
        let expect = -31.0 * sign * k as f32;
        assert!(
            want.iter()
                .all(|v| (v - expect).abs() <= 1e-3 * expect.abs()),
            "{want:?}"
        );
        for isa in Isa::available() {
            let mut got = vec![0f32; rows * n];
            matmul(&pool, isa, &packed, &x, &acts, rows, &mut got);
            assert_eq!(got, want, "{isa:?} differs from scalar");
        }
    }
}

/// Activations quantized for other rows or another width are refused by every kernel family
/// with the same check, before any SIMD code reads them (a `QuantActs` can only be made by
/// `quantize`, so its buffers always match its shape).
#[test]
fn activations_of_the_wrong_shape_are_refused_on_every_isa() {
    let pool = ThreadPool::new(2);
    let mut rng = Rng::new(5);
    let (n, k) = (32, 256);
    let raw = random_blocks(&mut rng, GgmlType::Q4_K, n * k);
    let packed = PackedMatrix::pack("w", GgmlType::Q4_K, &raw, n, k).unwrap();
    let x = rand_f32(&mut rng, 4 * k, 1.0);
    for isa in Isa::available() {
        for (rows_quantized, k_quantized) in [(1, k), (4, k / 2)] {
            let mut acts = QuantActs::default();
            acts.quantize(
                &x[..rows_quantized * k_quantized],
                rows_quantized,
                k_quantized,
            );
            let mut out = vec![0f32; 4 * n];
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                matmul(&pool, isa, &packed, &x, &acts, 4, &mut out)
            }));
            assert!(run.is_err(), "{isa:?} ran on mismatched activations");
        }
    }
}
