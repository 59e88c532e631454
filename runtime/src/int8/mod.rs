//! Kestrel's own kernels inside tract's plan. The int8 path: QDQ graphs lowered to integer ops.
//! [`lower`] rewrites the ONNX graph, [`ops`] are the ops tract runs, [`kernels`] the arithmetic.
//! Float depthwise and pointwise convolutions, where tract is slowest, run on Kestrel's kernels
//! too ([`f32_conv`]). Nothing here knows about bundles or images.

pub mod f32_conv;
pub mod gemm_w8;
pub mod kernels;
pub mod lower;
pub mod ops;

pub use kernels::isa;
pub use lower::{Lowered, lower};

/// tract's ONNX parser as Kestrel uses it everywhere: Kestrel's int8 ops registered, and tract
/// kept off kernels known to crash ([`avoid_faulty_tract_kernels`]).
pub fn onnx() -> tract_onnx::Onnx {
    avoid_faulty_tract_kernels();
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx);
    onnx
}

/// tract-linalg 0.23.9's AMX int8 matrix product (`avx512amx_mmm_i32_8x8`, chosen on CPUs with
/// AMX such as Sapphire Rapids) segfaults intermittently: about one run in two of the e2e test
/// that runs the `qoperator` and `mixed` schemes on this project's CI machines (gdb: SIGSEGV
/// inside that kernel), none in six with it removed. Until tract fixes it, Kestrel removes
/// `amx-int8` from tract's instruction set, which falls back to the AVX-512 VNNI kernels: the
/// same integer results. Must run before tract first probes the CPU (once per process), so
/// every tract model Kestrel builds goes through [`onnx`]. A `TRACT_CPU_ISA` set by the user
/// is left as it is.
pub fn avoid_faulty_tract_kernels() {
    #[cfg(target_arch = "x86_64")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("TRACT_CPU_ISA").is_none() {
                tract_linalg::knobs::TRACT_CPU_ISA.set(Some("-amx-int8".to_string()));
            }
        });
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    /// On a CPU with AMX (this project's CI machines) this fails without the override; on one
    /// without, it passes either way.
    #[test]
    fn tract_never_selects_its_amx_int8_kernels() {
        let _ = super::onnx();
        let isa = tract_linalg::isa::native();
        assert!(isa.iter().all(|i| i.name() != "amx-int8"), "{isa:?}");
    }
}
