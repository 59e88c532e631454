//! The model bundle contract: one ONNX file whose `metadata_props` carry everything the runtime
//! needs. Reading, validating and writing the metadata all live here, so the trainer and the
//! runtime cannot disagree on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use crate::preprocess::{PreprocessSpec, SpecError};

pub const FORMAT_KEY: &str = "kestrel.format";
pub const LABELS_KEY: &str = "kestrel.labels";
pub const PREPROCESS_KEY: &str = "kestrel.preprocess";
pub const MODEL_CARD_KEY: &str = "kestrel.model_card";

/// The bundle format this runtime reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// What a person (or a script) wants to know about where a model came from and how good it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Architecture, e.g. `efficientnet-lite0`.
    pub backbone: String,
    /// Where the pretrained weights came from (package, file, licence).
    pub weights_source: String,
    pub classes: usize,
    /// Named metrics (`val_top1`, …) when known.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Numeric precision of the graph: `float32`, or the int8 scheme name.
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Tool and version that wrote the bundle, e.g. `kestrel-train 0.1.0`.
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

fn default_precision() -> String {
    "float32".into()
}

/// The parsed, validated `kestrel.*` metadata of a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub labels: Vec<String>,
    pub preprocess: PreprocessSpec,
    pub model_card: ModelCard,
}

/// A bundle that breaks the contract. Each case names what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error(
        "metadata key `{key}` is missing; this ONNX file is not a Kestrel bundle (export it with `kestrel-train fit` or `kestrel-train export-imagenet`)"
    )]
    MissingKey { key: &'static str },
    #[error("metadata key `{key}` is malformed: {source}")]
    MalformedKey {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "bundle format `{found}` is not supported (this build reads format {FORMAT_VERSION}); re-export the model or upgrade kestrel"
    )]
    UnsupportedFormat { found: String },
    #[error("`{LABELS_KEY}` is empty")]
    NoLabels,
    #[error("`{LABELS_KEY}` names `{0}` twice")]
    DuplicateLabel(String),
    #[error("`{PREPROCESS_KEY}` is invalid: {0}")]
    Preprocess(#[from] SpecError),
    #[error("`{MODEL_CARD_KEY}` says {card} classes but `{LABELS_KEY}` has {labels}")]
    CardClasses { card: usize, labels: usize },
    #[error("the model outputs {outputs} scores but `{LABELS_KEY}` has {labels} labels")]
    LabelCount { labels: usize, outputs: usize },
    #[error("the model's input is {found:?} but `{PREPROCESS_KEY}` describes {expected:?} (N, C, H, W)")]
    InputShape { expected: [usize; 4], found: Vec<String> },
    #[error("the model must have exactly one input and one output, it has {inputs} and {outputs}")]
    Arity { inputs: usize, outputs: usize },
    #[error("{user} names tensor `{name}`, which no graph input, initializer or node produces")]
    DanglingName { user: String, name: String },
    #[error(
        "weight `{tensor}` holds {value} at index {index}; the run that wrote it diverged (retrain with a lower learning rate, or export an earlier checkpoint)"
    )]
    NonFiniteWeight { tensor: String, index: usize, value: f32 },
}

/// Any failure to read or write a bundle, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read model {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid ONNX file ({source}); is it truncated or another format?")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{path} has no graph")]
    NoGraph { path: PathBuf },
    #[error("model {path} breaks the Kestrel bundle contract: {source}")]
    Contract {
        path: PathBuf,
        #[source]
        source: ContractError,
    },
    #[error("cannot write model {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Metadata {
    /// Parse and validate the `kestrel.*` entries of `metadata_props`. Checks what can be checked
    /// without the graph; [`check_graph`](Self::check_graph) does the rest.
    pub fn from_props(props: &[pb::StringStringEntryProto]) -> Result<Self, ContractError> {
        let get = |key: &'static str| {
            props
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.value.as_str())
                .ok_or(ContractError::MissingKey { key })
        };
        let json = |key: &'static str, source| ContractError::MalformedKey { key, source };

        let format = get(FORMAT_KEY)?;
        if format.trim() != FORMAT_VERSION.to_string() {
            return Err(ContractError::UnsupportedFormat {
                found: format.to_string(),
            });
        }
        let labels: Vec<String> = serde_json::from_str(get(LABELS_KEY)?).map_err(|e| json(LABELS_KEY, e))?;
        let preprocess: PreprocessSpec =
            serde_json::from_str(get(PREPROCESS_KEY)?).map_err(|e| json(PREPROCESS_KEY, e))?;
        let model_card: ModelCard = serde_json::from_str(get(MODEL_CARD_KEY)?).map_err(|e| json(MODEL_CARD_KEY, e))?;

        if labels.is_empty() {
            return Err(ContractError::NoLabels);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(ContractError::DuplicateLabel(dup.clone()));
        }
        preprocess.validate()?;
        if model_card.classes != labels.len() {
            return Err(ContractError::CardClasses {
                card: model_card.classes,
                labels: labels.len(),
            });
        }
        Ok(Metadata {
            labels,
            preprocess,
            model_card,
        })
    }

    /// The `metadata_props` entries that carry this metadata.
    pub fn to_props(&self) -> Vec<pb::StringStringEntryProto> {
        let entry = |key: &str, value: String| pb::StringStringEntryProto {
            key: key.to_string(),
            value,
        };
        vec![
            entry(FORMAT_KEY, FORMAT_VERSION.to_string()),
            entry(LABELS_KEY, to_json(&self.labels)),
            entry(PREPROCESS_KEY, to_json(&self.preprocess)),
            entry(MODEL_CARD_KEY, to_json(&self.model_card)),
        ]
    }

    /// Check the graph's declared input and output against the metadata.
    pub fn check_graph(&self, graph: &pb::GraphProto) -> Result<(), ContractError> {
        check_names(graph)?;
        let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .collect();
        if inputs.len() != 1 || graph.output.len() != 1 {
            return Err(ContractError::Arity {
                inputs: inputs.len(),
                outputs: graph.output.len(),
            });
        }
        let expected = self.preprocess.batch_shape(1);
        let found = value_dims(inputs[0]);
        // The batch dimension may be symbolic or any size; the rest must match exactly.
        let matches = found.len() == 4
            && found[1..]
                .iter()
                .zip(&expected[1..])
                .all(|(f, e)| matches!(f, Dim::Fixed(v) if *v as usize == *e));
        if !matches {
            return Err(ContractError::InputShape {
                expected,
                found: found.iter().map(Dim::to_string).collect(),
            });
        }
        if let Some(Dim::Fixed(outputs)) = value_dims(&graph.output[0]).last()
            && *outputs as usize != self.labels.len()
        {
            return Err(ContractError::LabelCount {
                labels: self.labels.len(),
                outputs: *outputs as usize,
            });
        }
        check_weights_finite(graph)
    }
}

/// Every tensor a node reads and every graph output must exist. tract assumes so and panics on
/// a dangling name (found by fuzzing): a broken file must be an error, not a crash.
fn check_names(graph: &pb::GraphProto) -> Result<(), ContractError> {
    let mut known: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .map(|v| v.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    for node in &graph.node {
        known.extend(node.output.iter().map(String::as_str));
    }
    for node in &graph.node {
        // An empty name is ONNX's "optional input left out".
        if let Some(name) = node.input.iter().find(|n| !n.is_empty() && !known.contains(n.as_str())) {
            return Err(ContractError::DanglingName {
                user: format!("node `{}` ({})", node.name, node.op_type),
                name: name.clone(),
            });
        }
    }
    if let Some(output) = graph.output.iter().find(|o| !known.contains(o.name.as_str())) {
        return Err(ContractError::DanglingName {
            user: "the graph's output".into(),
            name: output.name.clone(),
        });
    }
    Ok(())
}

/// A NaN or infinite float weight makes every answer NaN; refuse it at load, naming the tensor.
fn check_weights_finite(graph: &pb::GraphProto) -> Result<(), ContractError> {
    const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
    for t in graph.initializer.iter().filter(|t| t.data_type == FLOAT) {
        let raw = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if let Some((index, value)) = t
            .float_data
            .iter()
            .copied()
            .chain(raw)
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            return Err(ContractError::NonFiniteWeight {
                tensor: t.name.clone(),
                index,
                value,
            });
        }
    }
    Ok(())
}

/// Serialising plain data structs (no maps with non-string keys) to a String cannot fail.
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
enum Dim {
    Fixed(i64),
    Symbolic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbolic(s) => write!(f, "{s}"),
        }
    }
}

fn value_dims(v: &pb::ValueInfoProto) -> Vec<Dim> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    let Some(TypeValue::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return vec![];
    };
    let Some(shape) = t.shape.as_ref() else {
        return vec![];
    };
    shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(v)) => Dim::Fixed(*v),
            Some(Value::DimParam(p)) => Dim::Symbolic(p.clone()),
            None => Dim::Symbolic("?".into()),
        })
        .collect()
}

/// A decoded ONNX model with its validated Kestrel metadata.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub proto: pb::ModelProto,
    pub metadata: Metadata,
}

impl Bundle {
    /// Read an ONNX file and validate its metadata against its graph.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let bytes = std::fs::read(path).map_err(|source| BundleError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Decode and validate bundle bytes; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, BundleError> {
        let proto = pb::ModelProto::decode(bytes).map_err(|source| BundleError::Decode {
            path: path.to_path_buf(),
            source,
        })?;
        let contract = |source| BundleError::Contract {
            path: path.to_path_buf(),
            source,
        };
        let graph = proto.graph.as_ref().ok_or_else(|| BundleError::NoGraph {
            path: path.to_path_buf(),
        })?;
        let metadata = Metadata::from_props(&proto.metadata_props).map_err(contract)?;
        metadata.check_graph(graph).map_err(contract)?;
        Ok(Bundle { proto, metadata })
    }

    /// `proto` with `metadata` as its `kestrel.*` entries (other entries are kept), validated as
    /// [`Bundle::read`] validates a file; `path` is only used in error messages.
    pub fn new(mut proto: pb::ModelProto, metadata: &Metadata, path: &Path) -> Result<Self, BundleError> {
        proto.metadata_props.retain(|p| !p.key.starts_with("kestrel."));
        proto.metadata_props.extend(metadata.to_props());
        let graph = proto.graph.as_ref().ok_or_else(|| BundleError::NoGraph {
            path: path.to_path_buf(),
        })?;
        metadata.check_graph(graph).map_err(|source| BundleError::Contract {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Bundle {
            proto,
            metadata: metadata.clone(),
        })
    }

    /// Write the bundle to `path` atomically: a reader never sees a half-written model under
    /// the final name.
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        crate::atomic::write_atomic(path, &self.proto.encode_to_vec()).map_err(|source| BundleError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// [`Bundle::new`], then [`Bundle::save`].
    pub fn write(proto: pb::ModelProto, metadata: &Metadata, path: &Path) -> Result<(), BundleError> {
        Bundle::new(proto, metadata, path)?.save(path)
    }
}
