//! `out[rows, n] = x[rows, k] @ W[n, k]^T` over packed weights, split by output columns across the
//! thread pool so that each weight byte is read once per step however many rows the batch has.
//! The scalar kernel is the reference; the AVX2 (`avx2`) and AVX-512 VNNI (`vnni`) kernels must
//! agree with it bit for bit (same operation order per output), and neither lets one row's numbers depend on another's.

use super::act::QuantActs;
use super::disjoint::Disjoint;
use super::ops::dot;
use super::pack::{pair_bytes, CodeMatrix, PackedMatrix, GROUP};
use super::pool::{split, Shares, ThreadPool};

/// The kernel families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Scalar,
    Avx2,
    Avx512Vnni,
}

/// A kernel family this CPU can run. Its field is private: the only ways to get one (`detect`,
/// `available`, `parse`, `SCALAR`) check the CPU, so safe code cannot make the matmul run
/// instructions the CPU lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa(Family);

impl Isa {
    /// The portable reference kernel, available everywhere.
    pub const SCALAR: Isa = Isa(Family::Scalar);

    pub fn family(self) -> Family {
        self.0
    }

    /// The best kernel family this CPU runs. `EVERETT_ISA=scalar|avx2|avx512vnni` caps it (to
    /// compare kernels on one machine); a capped choice the CPU lacks falls back to the best one.
    pub fn detect() -> Self {
        let best = *Self::available().last().unwrap_or(&Self::SCALAR);
        std::env::var("EVERETT_ISA")
            .ok()
            .and_then(|s| Self::parse(&s))
            .unwrap_or(best)
    }

    /// Every kernel family this CPU can run, slowest first (tests compare each with scalar).
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut isas = vec![Self::SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                isas.push(Isa(Family::Avx2));
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                isas.push(Isa(Family::Avx512Vnni));
            }
        }
        isas
    }

    /// The named family, when this CPU runs it.
    pub fn parse(s: &str) -> Option<Self> {
        let family = match s {
            "scalar" => Family::Scalar,
            "avx2" => Family::Avx2,
            "avx512vnni" => Family::Avx512Vnni,
            _ => return None,
        };
        Self::available().into_iter().find(|i| i.0 == family)
    }
}

/// Rows processed together by one micro-kernel call.
pub(crate) const ROW_TILE: usize = 4;

/// `out = x @ W^T`; `acts` must hold `x` quantized when `w` is a code matrix.
pub fn matmul(
    pool: &ThreadPool,
    isa: Isa,
    w: &PackedMatrix,
    x: &[f32],
    acts: &QuantActs,
    rows: usize,
    out: &mut [f32],
) {
    let n = w.n();
    assert!(out.len() >= rows * n && x.len() >= rows * w.k());
    let ptr = Disjoint::new(out);
    match w {
        PackedMatrix::Float { n, k, data } => pool.run(&|t, nt| {
            let cols = split(*n, t, nt);
            float_cols(data, *k, *n, x, rows, cols, ptr);
        }),
        PackedMatrix::Codes(m) => {
            assert!(
                acts.rows == rows && acts.k == m.k,
                "activations not quantized for this matmul"
            );
            let groups = n.div_ceil(GROUP);
            // One row tile reads compact codes directly; more rows share a plain copy of each
            // group, unpacked once into this thread's buffer.
            let direct = !m.is_plain() && rows <= ROW_TILE && direct_kernel(isa, m);
            let groups_of = |buf: &mut Vec<u8>, gs: std::ops::Range<usize>| {
                for g in gs {
                    let (codes, bits) = if m.is_plain() || direct {
                        (m.group(g), m.layout.bits)
                    } else {
                        buf.resize(m.k * GROUP, 0);
                        unpack_group(isa, m, g, buf);
                        (&buf[..], 8)
                    };
                    let mut r0 = 0;
                    while r0 < rows {
                        let r = (rows - r0).min(ROW_TILE);
                        let tile = Tile {
                            m,
                            codes,
                            bits,
                            g,
                            acts,
                            rows: r0..r0 + r,
                        };
                        // SAFETY: group g is handed to exactly one thread, which alone
                        // writes its columns.
                        unsafe { code_tile(isa, &tile, ptr) };
                        r0 += r;
                    }
                }
            };
            // Threads start on equal halves; one that finishes early takes over the rest of
            // the other's (which thread computes a column never changes its bits).
            let shares = Shares::new(groups, pool.threads());
            pool.run(&|t, nt| {
                PLAIN.with_borrow_mut(|buf| match &shares {
                    Some(s) => s.run(t, |gs| groups_of(buf, gs)),
                    None => groups_of(buf, split(groups, t, nt)),
                })
            });
        }
    }
}

fn float_cols(
    w: &[f32],
    k: usize,
    n: usize,
    x: &[f32],
    rows: usize,
    cols: std::ops::Range<usize>,
    out: Disjoint<'_, f32>,
) {
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        for c in cols.clone() {
            let s = dot(xr, &w[c * k..(c + 1) * k]);
            // SAFETY: (r, c) is inside out and column c belongs to this thread.
            unsafe { *out.at(r * n + c) = s };
        }
    }
}

thread_local! {
    /// Each thread's plain copy of the group it is working on (grown once, then reused).
    static PLAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `isa` has a kernel that reads `m`'s compact codes directly.
fn direct_kernel(isa: Isa, m: &CodeMatrix) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa.family() == Family::Avx512Vnni {
        return super::vnni::has_direct(m.layout);
    }
    let _ = (isa, m);
    false
}

/// Group `g` of `m` in the plain layout, into `out`.
fn unpack_group(isa: Isa, m: &CodeMatrix, g: usize, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if isa.family() == Family::Avx512Vnni && super::vnni::has_direct(m.layout) {
        // SAFETY: the CPU has avx512f/bw (it runs the VNNI kernels); the layout is one the
        // VNNI code handles.
        return unsafe { super::vnni::unpack_group(m, g, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa.family() != Family::Scalar {
        // SAFETY: every family but scalar exists only when the CPU has AVX2.
        return unsafe { super::avx2::unpack_group(m, g, out) };
    }
    m.unpack_group(g, out)
}

/// One micro-kernel call: the columns of group `g` of `m`, from `codes` (the group stored with
/// `bits`-bit codes: 8 is the plain layout; fewer only where `direct_kernel` holds), for the
/// activation rows `rows` of `acts`.
pub(crate) struct Tile<'a> {
    pub m: &'a CodeMatrix,
    pub codes: &'a [u8],
    pub bits: u32,
    pub g: usize,
    pub acts: &'a QuantActs,
    pub rows: std::ops::Range<usize>,
}

impl Tile<'_> {
    /// The bounds every kernel family relies on, checked once for all of them.
    fn check(&self) {
        let (m, a, k) = (self.m, self.acts, self.m.k);
        let end = self.rows.end;
        assert!(
            (1..=ROW_TILE).contains(&self.rows.len()) && end <= a.rows && a.k == k,
            "a tile of rows {:?} against {} activation rows of {} (weights of {k})",
            self.rows,
            a.rows,
            a.k
        );
        assert!(self.g < m.n.div_ceil(GROUP) && self.codes.len() >= k / 8 * pair_bytes(self.bits));
        assert!(a.codes.len() >= end * k && a.scales.len() >= end * k / 32);
        assert!(a.sums16.len() >= end * k / 16 && a.sums32.len() >= end * k / 32);
    }
}

/// Computes one tile's output cells.
///
/// # Safety
/// The caller must own those output cells.
unsafe fn code_tile(isa: Isa, t: &Tile, out: Disjoint<'_, f32>) {
    t.check();
    match isa.family() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of this family exists only when the CPU has AVX-512 VNNI; the
        // output cells are the caller's (this function's contract).
        Family::Avx512Vnni => unsafe { super::vnni::code_tile(t, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of this family exists only when the CPU has AVX2 and FMA; the output
        // cells are the caller's.
        Family::Avx2 => unsafe { super::avx2::code_tile(t, out) },
        // SAFETY: the output cells are the caller's.
        _ => unsafe { code_tile_scalar(t, out) },
    }
}

/// The reference micro-kernel (plain codes).
///
/// # Safety
/// As `code_tile`.
pub(crate) unsafe fn code_tile_scalar(t: &Tile, out: Disjoint<'_, f32>) {
    let Tile {
        m, codes, g, acts, ..
    } = *t;
    let (r0, r) = (t.rows.start, t.rows.len());
    let (k, bs) = (m.k, m.layout.sub_block);
    let n_sub = k / bs;
    let codes = &codes[..k * GROUP];
    for row in r0..r0 + r {
        let a = &acts.codes[row * k..(row + 1) * k];
        for c in 0..GROUP {
            let col = g * GROUP + c;
            if col >= m.n {
                break;
            }
            let mut facc = 0f32;
            for b in 0..n_sub {
                let mut isum = 0i32;
                for kk in b * bs..(b + 1) * bs {
                    isum += codes[((kk / 4) * GROUP + c) * 4 + kk % 4] as i32 * a[kk] as i32;
                }
                let (sum, da) = block_sums(acts, row, b, bs);
                isum -= m.layout.zero * sum;
                let s = m.scales[(g * n_sub + b) * GROUP + c];
                facc = (isum as f32).mul_add(s * da, facc);
                if m.layout.has_offset {
                    facc = m.offsets[(g * n_sub + b) * GROUP + c].mul_add(da * sum as f32, facc);
                }
            }
            // SAFETY: per the function contract.
            unsafe { *out.at(row * m.n + col) = facc };
        }
    }
}

/// The activation code sum over weight sub-block `b` (of size `bs`) of `row`, and the scale of
/// the 32-block that contains it.
#[inline(always)]
pub(crate) fn block_sums(acts: &QuantActs, row: usize, b: usize, bs: usize) -> (i32, f32) {
    let k = acts.k;
    let sum = if bs == 16 {
        acts.sums16[row * k / 16 + b]
    } else {
        acts.sums32[row * k / 32 + b]
    };
    (sum, acts.scales[row * k / 32 + b * bs / 32])
}
