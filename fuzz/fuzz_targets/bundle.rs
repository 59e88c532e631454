//! Bundle loading: ONNX protobuf decoding, `kestrel.*` metadata parsing and the contract checks,
//! then, for bytes that pass, tract's model building and one inference. Any input must give a
//! prediction or an error.
#![no_main]

use std::path::Path;

use kestrel_runtime::{Bundle, Classifier, LoadOptions};
use libfuzzer_sys::fuzz_target;

// libfuzzer-sys's panic hook aborts on every panic, caught or not. The runtime's own hook, put
// in front of it the first time tract runs, keeps quiet about the tract panics the runtime catches
// and turns into errors (`Classifier::from_bundle`, `logits`); any other panic still aborts.
fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.onnx");
    let Ok(bundle) = Bundle::from_bytes(data, path) else {
        return;
    };
    let Ok(classifier) = Classifier::from_bundle(bundle, path, &LoadOptions::default()) else {
        return;
    };
    // The contract allows inputs up to 4096² (200 MB of f32): too slow to run per input here.
    let len = classifier.metadata().preprocess.tensor_len();
    if len <= 1 << 20 {
        let _ = classifier.logits(&vec![0.5; len]);
    }
});
