//! Bundle loading: ONNX protobuf decoding, `kestrel.*` metadata parsing and the contract checks,
//! then, for bytes that pass, tract's model building. Any input must give a bundle or an error.
#![no_main]

use std::path::Path;

use kestrel_runtime::{Bundle, Classifier, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.onnx");
    if let Ok(bundle) = Bundle::from_bytes(data, path) {
        let _ = Classifier::from_bundle(bundle, path, &LoadOptions::default());
    }
});
