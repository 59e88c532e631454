//! Bundle loading: ONNX protobuf decoding, `kestrel.*` metadata parsing and the contract checks,
//! then, for bytes that pass, tract's model building and one inference. Any input must give a
//! prediction or an error.
#![no_main]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use kestrel_runtime::{Bundle, Classifier, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on every panic, caught or not. The runtime catches tract's panics
        // on malformed graphs and turns them into errors (`Classifier::from_bundle`), so those
        // are let through here, noted a few times; a panic anywhere else still aborts at once,
        // and one in tract that the runtime failed to catch aborts in libfuzzer-sys's wrapper.
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            static NOTED: AtomicUsize = AtomicUsize::new(0);
            match info.location() {
                Some(at) if at.file().contains("/tract-") => {
                    // Not "panicked at": scripts/fuzz.sh greps for that to show a real crash.
                    if NOTED.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("tract panic, for the runtime to catch, from {at}: {:?}", info.payload_as_str());
                    }
                }
                _ => abort_hook(info),
            }
        }));
    },
    |data: &[u8]| {
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
    }
);
