//! The int8 GEMM's entry points: the path this CPU runs, packed weights and inputs, and the row
//! ranges a thread computes. The tiles themselves are in `portable`, `x86` and `aarch64`.

use super::*;

/// The GEMM implementations. [`GemmWeights::new`] takes the fastest this CPU has; the tests run
/// every one it has against the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmPath {
    /// AVX-512 VNNI `vpdpbusd`: 64 products per instruction.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// AVX2 `vpmaddwd`: 16 products per instruction.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// NEON `SMULL`/`SMLAL2` on i8 pairs + `SADALP`: 8 products per multiply instruction.
    /// Weights holding a −128 are packed for [`GemmPath::NeonLane`] instead.
    #[cfg(target_arch = "aarch64")]
    NeonMull,
    /// NEON `SMLAL`/`SMLAL2` by lane: 4 products per instruction, any weights.
    #[cfg(target_arch = "aarch64")]
    NeonLane,
    Portable,
}

impl GemmPath {
    /// Every path this CPU runs, fastest first.
    pub fn available() -> Vec<GemmPath> {
        let mut paths = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if x86::vnni_available() {
                paths.push(GemmPath::Vnni);
            }
            if x86::available() {
                paths.push(GemmPath::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        paths.extend([GemmPath::NeonMull, GemmPath::NeonLane]);
        paths.push(GemmPath::Portable);
        paths
    }

    pub fn best() -> GemmPath {
        static BEST: std::sync::OnceLock<GemmPath> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| GemmPath::available()[0])
    }
}

/// Which tile reads [`PackedWeights::Panels`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum PanelTile {
    Portable,
    #[cfg(target_arch = "aarch64")]
    NeonLane,
}

/// GEMM weights, packed once at load for one [`GemmPath`].
#[derive(Debug, Clone, PartialEq)]
pub struct GemmWeights {
    pub rows: usize,
    pub depth: usize,
    /// Row-major `rows × depth`, as in the file.
    pub plain: Vec<i8>,
    pub(super) packed: PackedWeights,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum PackedWeights {
    #[cfg(target_arch = "x86_64")]
    Quads(x86::Quads),
    #[cfg(target_arch = "x86_64")]
    Pairs(Vec<i32>),
    Panels(portable::Panels, PanelTile),
    #[cfg(target_arch = "aarch64")]
    NeonMull(aarch64::MullWeights),
}

impl GemmWeights {
    /// Packed for the fastest path this CPU has.
    pub fn new(plain: Vec<i8>, rows: usize, depth: usize) -> Self {
        Self::for_path(plain, rows, depth, GemmPath::best())
    }

    /// Packed for `path`, which must be one of [`GemmPath::available`].
    pub fn for_path(plain: Vec<i8>, rows: usize, depth: usize, path: GemmPath) -> Self {
        debug_assert_eq!(plain.len(), rows * depth);
        let packed = match path {
            #[cfg(target_arch = "x86_64")]
            GemmPath::Vnni => PackedWeights::Quads(x86::pack_weight_quads(&plain, rows, depth)),
            #[cfg(target_arch = "x86_64")]
            GemmPath::Avx2 => PackedWeights::Pairs(x86::pack_weight_pairs(&plain, rows, depth)),
            #[cfg(target_arch = "aarch64")]
            GemmPath::NeonMull => match aarch64::pack_mull_weights(&plain, rows, depth) {
                Some(w) => PackedWeights::NeonMull(w),
                None => PackedWeights::Panels(portable::pack_weights(&plain, rows, depth), PanelTile::NeonLane),
            },
            #[cfg(target_arch = "aarch64")]
            GemmPath::NeonLane => {
                PackedWeights::Panels(portable::pack_weights(&plain, rows, depth), PanelTile::NeonLane)
            }
            GemmPath::Portable => {
                PackedWeights::Panels(portable::pack_weights(&plain, rows, depth), PanelTile::Portable)
            }
        };
        GemmWeights {
            rows,
            depth,
            plain,
            packed,
        }
    }

    /// Σ_k w[r][k] for each row: the input zero point's share of each accumulator.
    pub fn row_sums(&self) -> Vec<i32> {
        self.plain
            .chunks(self.depth.max(1))
            .map(|r| r.iter().map(|&w| w as i32).sum())
            .collect()
    }
}

/// A GEMM's input, packed once for the path that will read it (shared by every thread).
pub enum PackedInput {
    #[cfg(target_arch = "x86_64")]
    Quads {
        data: Vec<u8>,
        padded: usize,
    },
    #[cfg(target_arch = "x86_64")]
    Pairs {
        data: Vec<i32>,
        padded: usize,
    },
    I16 {
        data: Vec<i16>,
        padded: usize,
    },
    /// Columns with the depth contiguous (see `aarch64::pack_mull_input`).
    #[cfg(target_arch = "aarch64")]
    Columns(Vec<i8>),
}

/// Pack `x` (`w.depth × cols` i8) for [`gemm_rows`].
pub fn pack_input(w: &GemmWeights, x: &[i8], cols: usize) -> PackedInput {
    match w.packed {
        #[cfg(target_arch = "x86_64")]
        PackedWeights::Quads(_) => {
            let (data, padded) = x86::pack_input_quads(x, w.depth, cols);
            PackedInput::Quads { data, padded }
        }
        #[cfg(target_arch = "x86_64")]
        PackedWeights::Pairs(_) => {
            let (data, padded) = x86::pack_input_pairs(x, w.depth, cols);
            PackedInput::Pairs { data, padded }
        }
        PackedWeights::Panels(..) => {
            let (data, padded) = portable::pack_input(x, w.depth, cols);
            PackedInput::I16 { data, padded }
        }
        #[cfg(target_arch = "aarch64")]
        PackedWeights::NeonMull(_) => PackedInput::Columns(aarch64::pack_mull_input(x, w.depth, cols)),
    }
}

/// Rows `rows` of `out = requant(bias + w · x)` into `out` (those rows only, `rows.len() × cols`).
/// The input zero point is folded into `bias` by the caller (see [`GemmWeights::row_sums`]).
pub fn gemm_rows(
    w: &GemmWeights,
    rows: Range<usize>,
    x: &PackedInput,
    cols: usize,
    bias: &[i32],
    requant: &Requant,
    out: &mut [i8],
) {
    match (&w.packed, x) {
        #[cfg(target_arch = "x86_64")]
        (PackedWeights::Quads(quads), PackedInput::Quads { data, padded }) => {
            x86::gemm_rows_vnni(quads, rows, data, *padded, cols, bias, requant, out)
        }
        #[cfg(target_arch = "x86_64")]
        (PackedWeights::Pairs(pairs), PackedInput::Pairs { data, padded }) => {
            x86::gemm_rows(pairs, w.depth, rows, data, *padded, cols, bias, requant, out)
        }
        (PackedWeights::Panels(panels, PanelTile::Portable), PackedInput::I16 { data, padded }) => {
            portable::gemm_rows(panels, rows, data, *padded, cols, bias, requant, out)
        }
        #[cfg(target_arch = "aarch64")]
        (PackedWeights::Panels(panels, PanelTile::NeonLane), PackedInput::I16 { data, padded }) => {
            let tile = |r0, c0, b: &[i32; portable::MR]| aarch64::lane_tile(panels, r0, data, *padded, c0, b);
            portable::gemm_rows_with(tile, rows, cols, bias, requant, out)
        }
        #[cfg(target_arch = "aarch64")]
        (PackedWeights::NeonMull(weights), PackedInput::Columns(xt)) => {
            let tile = |r0, c0, b: &[i32; portable::MR]| aarch64::mull_tile(weights, r0, xt, c0, b);
            portable::gemm_rows_with(tile, rows, cols, bias, requant, out)
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!("`pack_input` packs the input for these weights' path"),
    }
}

/// `out[r][n] = requant(bias[r] + Σ_k w[r][k] · x[k][n])`, `x` being `depth × cols` i8.
pub fn gemm(w: &GemmWeights, x: &[i8], cols: usize, bias: &[i32], requant: &Requant, out: &mut [i8]) {
    let packed = pack_input(w, x, cols);
    gemm_rows(w, 0..w.rows, &packed, cols, bias, requant, out)
}
