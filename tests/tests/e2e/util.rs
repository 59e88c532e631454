//! What the topic modules share: the sample photos and the ImageNet classes they show.

use image::DynamicImage;
use kestrel_runtime::load_image;
use kestrel_trainer::assets;

pub const CAT_CLASSES: std::ops::RangeInclusive<usize> = 281..=285;
/// espresso, cup, coffee mug
pub const COFFEE_CLASSES: [usize; 3] = [967, 968, 504];

pub fn sample(name: &str) -> DynamicImage {
    let path = assets::sample(name).expect("sample photos: run scripts/fetch-assets.sh");
    load_image(&path).expect("decode sample photo")
}

pub fn top1(logits: &[f32]) -> usize {
    (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .expect("non-empty")
}

/// Fashion-MNIST (Debian's `dataset-fashion-mnist`, which scripts/test.sh installs) as a
/// `{train,val}/<class>/` folder under `dir`: the first `train_per_class` images of each class
/// of the training set and the first `val_per_class` of the test set. Distinct photos per class,
/// unlike the sample photos' crops.
pub fn fashion_mnist(dir: &std::path::Path, train_per_class: usize, val_per_class: usize) -> std::path::PathBuf {
    use kestrel_trainer::data::idx::{FASHION_MNIST, import};
    let src = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    let raw = dir.join("idx");
    std::fs::create_dir_all(&raw).expect("mkdir");
    for name in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        let gz = src.join(format!("{name}.gz"));
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&gz)
            .output()
            .unwrap_or_else(|e| panic!("gzip {}: {e}", gz.display()));
        assert!(
            out.status.success(),
            "{} missing: apt-get install dataset-fashion-mnist (scripts/test.sh does)",
            gz.display()
        );
        std::fs::write(raw.join(name), out.stdout).expect("write idx");
    }
    let names: Vec<String> = FASHION_MNIST.iter().map(|s| s.to_string()).collect();
    let data = dir.join("fashion-mnist");
    for (split, images, labels, per_class) in [
        (
            "train",
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            train_per_class,
        ),
        ("val", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", val_per_class),
    ] {
        let counts = import(
            &raw.join(images),
            &raw.join(labels),
            &names,
            per_class,
            &data.join(split),
        )
        .expect("import");
        assert!(counts.iter().all(|&c| c == per_class), "{split}: {counts:?}");
    }
    data
}

/// Parameter id and values, per float tensor.
pub type Tensors = Vec<(String, Vec<f32>)>;

/// Every float tensor of a module (parameters and BatchNorm running statistics), in the module's
/// own order (the same on every backend; ids are random per load, so they only pair a module
/// with its own update).
struct Weights(Tensors);

impl burn::module::ModuleVisitor for Weights {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<D>>) {
        let values = param.val().into_data().try_to_vec::<f32>().expect("f32 parameter");
        self.0.push((param.id.to_string(), values));
    }
}

pub fn weights<M: burn::module::Module>(module: &M) -> Tensors {
    let mut w = Weights(Vec::new());
    module.visit(&mut w);
    w.0
}
