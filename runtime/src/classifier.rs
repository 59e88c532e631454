//! A loaded bundle ready to classify: tract's optimised plan, built once and reused per frame.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;
use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::bundle::{Bundle, BundleError, ContractError, Metadata};
use crate::int8::{self, Lowered};
use crate::preprocess::{self, PreprocessError};
use crate::threads;

type Plan = Arc<TypedRunnableModel>;

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("tract cannot prepare model {path}: {message}")]
    Prepare { path: PathBuf, message: String },
    #[error("inference failed on model {path}: {message}")]
    Infer { path: PathBuf, message: String },
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
}

/// Options for [`Classifier::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads an inference may use (tract's ops and Kestrel's kernels alike; see
    /// `threads.rs`); 1 runs everything on the calling thread.
    pub threads: usize,
    /// Lower QDQ int8 graphs to Kestrel's integer kernels ([`crate::int8`]). Off runs the file
    /// as tract alone would (int8 simulated in f32): for comparisons, never faster.
    pub int8_kernels: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 1,
            int8_kernels: true,
        }
    }
}

/// One class of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored<'a> {
    pub index: usize,
    pub label: &'a str,
    pub probability: f32,
}

/// Class probabilities for one image, in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub probabilities: Vec<f32>,
}

impl Prediction {
    pub fn from_logits(logits: &[f32]) -> Self {
        Prediction {
            probabilities: softmax(logits),
        }
    }

    /// The `k` most probable classes, most probable first; ties keep label order.
    pub fn top_k<'a>(&self, labels: &'a [String], k: usize) -> Vec<Scored<'a>> {
        let mut order: Vec<usize> = (0..self.probabilities.len()).collect();
        order.sort_by(|&a, &b| self.probabilities[b].total_cmp(&self.probabilities[a]).then(a.cmp(&b)));
        order
            .into_iter()
            .take(k)
            .map(|index| Scored {
                index,
                label: labels.get(index).map(String::as_str).unwrap_or("?"),
                probability: self.probabilities[index],
            })
            .collect()
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// A Kestrel bundle loaded into tract.
pub struct Classifier {
    path: PathBuf,
    metadata: Metadata,
    plan: Plan,
    input_shape: [usize; 4],
    int8: Lowered,
    /// The plan's thread pool (`LoadOptions::threads` above 1), which inferences run on.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("path", &self.path)
            .field("input_shape", &self.input_shape)
            .field("classes", &self.metadata.labels.len())
            .finish()
    }
}

/// Turns tract's errors while building `path`'s model into [`ClassifierError::Prepare`].
pub(crate) fn prepare_error(path: &Path) -> impl Fn(TractError) -> ClassifierError + Copy + '_ {
    move |e| ClassifierError::Prepare {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    }
}

/// tract meets untrusted graphs, and on a few malformed ones (a Flatten axis past the tensor's
/// rank, found by `fuzz/`) its shape inference panics instead of returning an error. This turns
/// such a panic into an error that names the file, so a bad model is refused, never a crash; it
/// is why no profile of ours sets `panic = "abort"`. tract's plans are immutable (each run builds
/// its own state), so nothing half-updated outlives the panic.
fn catch_tract_panic<T>(f: impl FnOnce() -> TractResult<T>) -> TractResult<T> {
    quiet_panics::install();
    let _catching = quiet_panics::Catching::enter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        let at = quiet_panics::take_location()
            .map(|at| format!(", at {at}"))
            .unwrap_or_default();
        Err(TractError::msg(format!(
            "the graph is malformed (tract panicked: {message}{at}); re-export the model"
        )))
    })
}

/// A panic that [`catch_tract_panic`] turns into an error is not a crash, so Rust's "thread
/// panicked at …" line must not reach the user's terminal or journal beside the real error. The
/// hook installed here stays silent on a thread inside `catch_tract_panic`, keeping the panic's
/// location for the error, and hands every other panic to the hook that was there before.
mod quiet_panics {
    use std::cell::{Cell, RefCell};
    use std::sync::Once;

    thread_local! {
        static DEPTH: Cell<usize> = const { Cell::new(0) };
        static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    pub(super) fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if DEPTH.get() == 0 {
                    return previous(info);
                }
                // From the crate's folder on: the registry's path before it says nothing useful.
                let at = info.location().map(|at| {
                    let file = at.file();
                    let file = file.find("/tract-").map_or(file, |i| &file[i + 1..]);
                    format!("{file}:{}", at.line())
                });
                tracing::debug!(
                    location = at.as_deref().unwrap_or("?"),
                    "tract panicked; refusing the model"
                );
                LOCATION.set(at);
            }));
        });
    }

    /// Marks the current thread as inside `catch_tract_panic` while alive.
    pub(super) struct Catching;

    impl Catching {
        pub(super) fn enter() -> Self {
            DEPTH.set(DEPTH.get() + 1);
            LOCATION.set(None);
            Catching
        }
    }

    impl Drop for Catching {
        fn drop(&mut self) {
            DEPTH.set(DEPTH.get() - 1);
        }
    }

    pub(super) fn take_location() -> Option<String> {
        LOCATION.take()
    }
}

impl LoadOptions {
    /// tract's run options for these threads: its multithreaded executor above 1.
    pub(crate) fn run_options(&self) -> RunOptions {
        RunOptions {
            executor: (self.threads > 1).then(|| tract_linalg::multithread::Executor::multithread(self.threads)),
            ..RunOptions::default()
        }
    }
}

impl Classifier {
    /// Load, validate and optimise the bundle at `path`.
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Self, ClassifierError> {
        let bundle = Bundle::read(path)?;
        Self::from_bundle(bundle, path, options)
    }

    pub fn from_bundle(bundle: Bundle, path: &Path, options: &LoadOptions) -> Result<Self, ClassifierError> {
        let prepare = prepare_error(path);
        let input_shape = bundle.metadata.preprocess.batch_shape(1);
        let optimise = |proto: &tract_onnx::pb::ModelProto| {
            catch_tract_panic(|| {
                int8::onnx()
                    .model_for_proto_model(proto)?
                    .with_input_fact(0, f32::fact(input_shape).into())?
                    .into_optimized()
            })
        };
        // The rewritten graph, when the rewrites found anything to do.
        let rewritten = options.int8_kernels.then(|| {
            let mut proto = bundle.proto.clone();
            let mut lowered = int8::lower(&mut proto);
            let folded = int8::lower::fold_constant_dequantize(&mut proto);
            let float = int8::f32_conv::lower(&mut proto);
            (lowered.f32_depthwise, lowered.f32_pointwise) = (float.depthwise, float.pointwise);
            (proto, lowered, folded)
        });
        let (model, int8) = match rewritten {
            Some((proto, lowered, folded))
                if lowered.int8_convs
                    + lowered.int8_adds
                    + lowered.int8_quantize
                    + lowered.int8_weight_gemms
                    + lowered.f32_depthwise
                    + lowered.f32_pointwise
                    + folded
                    > 0 =>
            {
                match optimise(&proto) {
                    Ok(model) => (model, lowered),
                    Err(e) => {
                        // The file is valid as tract reads it; only our fast path could not take it.
                        tracing::warn!(
                            "{}: int8 kernels unavailable for this graph ({e:#}); running it as tract does",
                            path.display()
                        );
                        (optimise(&bundle.proto).map_err(prepare)?, Lowered::default())
                    }
                }
            }
            rewritten => (
                optimise(&bundle.proto).map_err(prepare)?,
                rewritten.map(|(_, lowered, _)| lowered).unwrap_or_default(),
            ),
        };
        let output_fact = model.output_fact(0).map_err(prepare)?;
        let outputs = output_fact
            .shape
            .as_concrete()
            .and_then(|s| s.last().copied())
            .unwrap_or(0);
        if outputs != bundle.metadata.labels.len() {
            return Err(BundleError::Contract {
                path: path.to_path_buf(),
                source: ContractError::LabelCount {
                    labels: bundle.metadata.labels.len(),
                    outputs,
                },
            }
            .into());
        }
        let run_options = options.run_options();
        let pool = run_options.executor.as_ref().and_then(threads::pool_of).cloned();
        let plan = catch_tract_panic(|| model.into_runnable_with_options(&run_options)).map_err(prepare)?;
        Ok(Classifier {
            pool,
            path: path.to_path_buf(),
            metadata: bundle.metadata,
            plan,
            input_shape,
            int8,
        })
    }

    /// How much of the graph runs on Kestrel's integer kernels (all zero for a float model).
    pub fn int8(&self) -> Lowered {
        self.int8
    }

    /// One line saying what computes this model on this CPU, for `kestrel info` and benchmarks.
    pub fn kernels(&self) -> String {
        let l = self.int8;
        let float = l.f32_depthwise + l.f32_pointwise;
        let depthwise = format!(
            "{float} f32 convs on Kestrel ({} depthwise on {}, {} pointwise{})",
            l.f32_depthwise,
            int8::kernels::depthwise_f32_paths()[0].0,
            l.f32_pointwise,
            if l.f32_pointwise > 0 { " on AVX-512" } else { "" }
        );
        if l.int8_convs + l.int8_adds == 0 {
            return match float {
                0 => "tract (float kernels)".into(),
                _ => format!("tract (float kernels), {depthwise}"),
            };
        }
        let on_tract = l.other_convs.saturating_sub(float);
        let mut rest = String::new();
        if float > 0 {
            rest += &format!(", {depthwise}");
        }
        if on_tract > 0 {
            rest += &format!(", {on_tract} convs on tract");
        }
        let gemms = match l.int8_weight_gemms {
            0 => String::new(),
            n => format!(" + {n} int8-weight Gemm"),
        };
        format!(
            "Kestrel int8: {} convs + {} adds{gemms} on {}{rest}",
            l.int8_convs,
            l.int8_adds,
            int8::isa()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn labels(&self) -> &[String] {
        &self.metadata.labels
    }

    /// The ops of tract's optimised graph, in evaluation order: what actually runs, so a test can
    /// tell integer kernels from a silent fall-back to float.
    pub fn op_names(&self) -> Vec<String> {
        self.plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op().name().to_string())
            .collect()
    }

    /// Logits for one preprocessed image (C·H·W, as [`preprocess`](crate::preprocess) makes it).
    pub fn logits(&self, input: &[f32]) -> Result<Vec<f32>, ClassifierError> {
        let infer = self.infer_error();
        let tensor = Tensor::from_shape(&self.input_shape, input).map_err(infer)?;
        threads::run(self.pool.as_deref(), || {
            catch_tract_panic(|| {
                let outputs = self.plan.run(tvec!(tensor.into()))?;
                let logits = outputs[0].to_plain_array_view::<f32>()?;
                Ok(logits.iter().copied().collect())
            })
        })
        .map_err(infer)
    }

    /// Turns tract's errors while running this model into [`ClassifierError::Infer`].
    fn infer_error(&self) -> impl Fn(TractError) -> ClassifierError + Copy + '_ {
        move |e| ClassifierError::Infer {
            path: self.path.clone(),
            message: format!("{e:#}"),
        }
    }

    /// Time per op type over `iterations` inferences of `input`: (op name, nodes, total ms per
    /// inference), slowest first. What tells a kernel author where the time goes.
    pub fn profile(&self, input: &[f32], iterations: usize) -> Result<Vec<(String, usize, f64)>, ClassifierError> {
        use std::collections::HashMap;
        use std::time::Instant;
        use tract_onnx::tract_core::plan::{SimpleState, eval};
        let infer = self.infer_error();
        let tensor = Tensor::from_shape(&self.input_shape, input).map_err(infer)?;
        let mut per_op: HashMap<String, (std::collections::HashSet<usize>, f64)> = HashMap::new();
        // On the pool as `logits` runs, so the profile times what a user's inference does.
        threads::run(self.pool.as_deref(), || {
            let mut state = SimpleState::new(&self.plan)?;
            for _ in 0..iterations.max(1) {
                catch_tract_panic(|| {
                    state.run_plan_with_eval(tvec!(tensor.clone().into()), |ctx, op_state, node, inputs| {
                        let t = Instant::now();
                        let out = eval(ctx, op_state, node, inputs);
                        let entry = per_op.entry(node.op().name().to_string()).or_default();
                        entry.0.insert(node.id);
                        entry.1 += t.elapsed().as_secs_f64() * 1e3;
                        out
                    })
                })?;
            }
            TractResult::Ok(())
        })
        .map_err(infer)?;
        let mut rows: Vec<(String, usize, f64)> = per_op
            .into_iter()
            .map(|(name, (nodes, ms))| (name, nodes.len(), ms / iterations.max(1) as f64))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(rows)
    }

    /// Preprocess per the bundle's spec, infer, softmax.
    pub fn classify(&self, image: &DynamicImage) -> Result<Prediction, ClassifierError> {
        let input = preprocess::preprocess(image, &self.metadata.preprocess)?;
        Ok(Prediction::from_logits(&self.logits(&input)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
    }

    #[test]
    fn top_k_orders_by_probability_then_index() {
        let labels: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = Prediction {
            probabilities: vec![0.1, 0.4, 0.1, 0.4],
        };
        let top: Vec<_> = p.top_k(&labels, 3).iter().map(|s| s.label).collect();
        assert_eq!(top, ["b", "d", "a"]);
        assert_eq!(p.top_k(&labels, 10).len(), 4);
    }
}
