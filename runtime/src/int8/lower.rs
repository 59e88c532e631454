//! Lowering a standard QDQ graph to integer ops, on the ONNX graph before tract parses it.
//!
//! Patterns (activations signed int8, weights int8 with zero point 0, per channel or per tensor):
//! - `DequantizeLinear(x) → Conv(DQ(w), [bias]) → [Relu | Clip] → QuantizeLinear` becomes one
//!   `KestrelInt8Conv`: i8 in, i8 out, bias as i32 in the accumulator's unit, requantisation and
//!   clamp fused;
//! - `DequantizeLinear(a), DequantizeLinear(b) → Add → QuantizeLinear` becomes `KestrelInt8Add`;
//! - `Gemm(a, DequantizeLinear(w), bias, transB = 1)` with f32 `a` (a classifier fed by pooled
//!   f32 features) becomes `KestrelW8Gemm`: the weights stay int8 ([`super::gemm_w8`]).
//!
//! Why here and not as a pass over tract's decluttered graph: by then tract has folded each
//! weight's DequantizeLinear into an f32 constant, and the int8 weights and their scales are gone.
//! On the ONNX graph they are still explicit, so the integer op is built from the file's own
//! numbers. tract still parses, type-checks, shape-infers and plans everything (our ops register
//! as ONNX ops, `ops::register`). The file on disk stays standard ONNX; onnxruntime runs it as is.
//!
//! Anything that does not match (u8 activations, dilations, a shared intermediate tensor) is left
//! alone and runs as tract runs QDQ today; [`Lowered`] counts both.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

use super::ops;
use crate::onnx_proto::{attr, f32_tensor, f32s, float_attr, i8s, i32_tensor, i32s, int_attr, integers, ints_attr};

/// What [`lower`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Lowered {
    /// Convs now computing in int8 with Kestrel's kernels.
    pub int8_convs: usize,
    /// Residual adds now computing in int8.
    pub int8_adds: usize,
    /// QuantizeLinear of float tensors (the network's input) on Kestrel's kernel.
    pub int8_quantize: usize,
    /// Convs left as they were (float, or a QDQ form tract simulates in float), before float
    /// convs moved to Kestrel's kernels.
    pub other_convs: usize,
    /// Float depthwise convs now on Kestrel's depthwise kernel ([`super::f32_conv`]).
    pub f32_depthwise: usize,
    /// Float pointwise convs now on Kestrel's f32 GEMM ([`super::f32_conv`]; AVX-512 only).
    pub f32_pointwise: usize,
    /// `Gemm`s with int8 weights and f32 input (the classifier) on [`super::gemm_w8`].
    pub int8_weight_gemms: usize,
}

/// `round_half_even(v)` as i32, saturating.
fn round_i32(v: f64) -> i32 {
    v.round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

/// An int8 activation's quantisation: one scale, one i8 zero point.
#[derive(Debug, Clone, Copy)]
struct Act {
    scale: f32,
    zero: i32,
}

pub(super) struct Graph<'g> {
    nodes: &'g [pb::NodeProto],
    inits: HashMap<&'g str, &'g pb::TensorProto>,
    producer: HashMap<&'g str, usize>,
    consumers: HashMap<&'g str, Vec<usize>>,
    outputs: HashSet<&'g str>,
}

impl<'g> Graph<'g> {
    pub(super) fn new(graph: &'g pb::GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        Graph {
            nodes: &graph.node,
            inits: graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect(),
            producer,
            consumers,
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    fn produced_by(&self, tensor: &str, op: &str) -> Option<&'g pb::NodeProto> {
        let n = &self.nodes[*self.producer.get(tensor)?];
        (n.op_type == op).then_some(n)
    }

    /// The single node reading `tensor`, when nothing else (nor the graph's outputs) does.
    pub(super) fn only_consumer(&self, tensor: &str) -> Option<usize> {
        if self.outputs.contains(tensor) {
            return None;
        }
        match self.consumers.get(tensor)?.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    fn scalar_f32(&self, name: &str) -> Option<f32> {
        match f32s(self.inits.get(name)?)?.as_slice() {
            [v] => Some(*v),
            _ => None,
        }
    }

    /// The scale and zero point of a Q/DQ node whose zero point is an int8 initializer.
    fn act_params(&self, q: &pb::NodeProto) -> Option<Act> {
        let scale = self.scalar_f32(q.input.get(1)?)?;
        let zero = match i8s(self.inits.get(q.input.get(2)?.as_str())?)?.as_slice() {
            [z] => *z as i32,
            _ => return None,
        };
        (scale.is_finite() && scale > 0.0).then_some(Act { scale, zero })
    }

    /// `DequantizeLinear` of an int8 activation (not a constant) feeding `tensor`.
    fn dequantized_act(&self, tensor: &str) -> Option<(&'g str, Act)> {
        let dq = self.produced_by(tensor, "DequantizeLinear")?;
        let data = dq.input.first()?;
        if self.inits.contains_key(data.as_str()) {
            return None;
        }
        Some((data.as_str(), self.act_params(dq)?))
    }

    /// `DequantizeLinear` of constant int8 weights with zero point 0: the weights and one scale
    /// per output channel.
    fn dequantized_weights(&self, tensor: &str, channels: usize) -> Option<(&'g pb::TensorProto, Vec<f32>)> {
        let dq = self.produced_by(tensor, "DequantizeLinear")?;
        let w = *self.inits.get(dq.input.first()?.as_str())?;
        i8s(w)?;
        if let Some(z) = dq.input.get(2).filter(|z| !z.is_empty()) {
            let zeros = i8s(self.inits.get(z.as_str())?)?;
            if zeros.iter().any(|&z| z != 0) {
                return None;
            }
        }
        let scales = f32s(self.inits.get(dq.input.get(1)?.as_str())?)?;
        let axis = attr(dq, "axis").map_or(1, |a| a.i);
        let scales = match scales.len() {
            1 => vec![scales[0]; channels],
            n if n == channels && axis == 0 => scales,
            _ => return None,
        };
        scales.iter().all(|s| s.is_finite() && *s > 0.0).then_some((w, scales))
    }

    /// [`Self::dequantized_weights`] of a `rank`-dimensional weight tensor, one scale per
    /// output channel (its first dimension).
    fn dequantized_weights_of_rank(&self, tensor: &str, rank: usize) -> Option<(&'g pb::TensorProto, Vec<f32>)> {
        let dq = self.produced_by(tensor, "DequantizeLinear")?;
        let w = *self.inits.get(dq.input.first()?.as_str())?;
        if w.dims.len() != rank {
            return None;
        }
        self.dequantized_weights(tensor, usize::try_from(w.dims[0]).ok()?)
    }

    /// The bias in accumulator units (`sx · sw[c]`): from an f32 initializer, or from a
    /// DequantizeLinear of int32 (re-expressed in our unit if its scale differs).
    fn bias(&self, tensor: Option<&String>, unit: &[f64]) -> Option<Vec<i32>> {
        let Some(tensor) = tensor.filter(|t| !t.is_empty()) else {
            return Some(vec![0; unit.len()]);
        };
        let real: Vec<f64> = if let Some(t) = self.inits.get(tensor.as_str()) {
            f32s(t)?.into_iter().map(f64::from).collect()
        } else {
            let dq = self.produced_by(tensor, "DequantizeLinear")?;
            let q = i32s(self.inits.get(dq.input.first()?.as_str())?)?;
            let scales = f32s(self.inits.get(dq.input.get(1)?.as_str())?)?;
            let zero = match dq.input.get(2).filter(|z| !z.is_empty()) {
                Some(z) => i32s(self.inits.get(z.as_str())?)?,
                None => vec![0],
            };
            q.iter()
                .enumerate()
                .map(|(c, &v)| {
                    let s = scales.get(c).or(scales.first()).copied().unwrap_or(0.0);
                    let z = zero.get(c).or(zero.first()).copied().unwrap_or(0);
                    (v as f64 - z as f64) * s as f64
                })
                .collect()
        };
        (real.len() == unit.len()).then(|| real.iter().zip(unit).map(|(r, u)| round_i32(r / u)).collect())
    }
}

/// The real-valued clamp of a Relu or Clip node, `None` for any other node.
pub(super) fn activation_bounds(g: &Graph, node: &pb::NodeProto) -> Option<(f32, f32)> {
    match node.op_type.as_str() {
        "Relu" => Some((0.0, f32::INFINITY)),
        "Clip" => {
            let bound = |i: usize, name: &str, default: f32| -> Option<f32> {
                match node.input.get(i).filter(|s| !s.is_empty()) {
                    Some(t) => g.scalar_f32(t),
                    None => Some(attr(node, name).map_or(default, |a| a.f)),
                }
            };
            Some((bound(1, "min", f32::NEG_INFINITY)?, bound(2, "max", f32::INFINITY)?))
        }
        _ => None,
    }
}

/// The quantised clamp `[lo, hi]` of an int8 output with parameters `y` and real bounds.
fn quantised_bounds(y: Act, (min, max): (f32, f32)) -> (i32, i32) {
    let q = |v: f32| round_i32(v as f64 / y.scale as f64) as i64 + y.zero as i64;
    let lo = if min.is_finite() { q(min).clamp(-128, 127) } else { -128 };
    let hi = if max.is_finite() { q(max).clamp(-128, 127) } else { 127 };
    (lo as i32, hi as i32)
}

/// One rewrite: `nodes[at]` becomes `node`; `dropped` nodes go; `inits` are added.
struct Replacement {
    at: usize,
    node: pb::NodeProto,
    dropped: Vec<usize>,
    inits: Vec<pb::TensorProto>,
}

/// The output Q of `tensor`, through an optional Relu/Clip: (Q index, dropped nodes, bounds).
fn quantised_output(g: &Graph, tensor: &str) -> Option<(usize, Vec<usize>, (f32, f32))> {
    let next = g.only_consumer(tensor)?;
    let node = &g.nodes[next];
    if node.op_type == "QuantizeLinear" {
        return Some((next, vec![next], (f32::NEG_INFINITY, f32::INFINITY)));
    }
    let bounds = activation_bounds(g, node)?;
    let q = g.only_consumer(node.output.first()?)?;
    (g.nodes[q].op_type == "QuantizeLinear").then(|| (q, vec![next, q], bounds))
}

fn match_conv(g: &Graph, at: usize) -> Option<Replacement> {
    let conv = &g.nodes[at];
    let (x_q, x) = g.dequantized_act(conv.input.first()?)?;
    if attr(conv, "dilations").is_some_and(|a| a.ints.iter().any(|&d| d != 1)) {
        return None;
    }
    if attr(conv, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        return None;
    }
    let (out_q, dropped, bounds) = quantised_output(g, conv.output.first()?)?;
    let q = &g.nodes[out_q];
    let y = g.act_params(q)?;
    let (w, w_scales) = g.dequantized_weights_of_rank(conv.input.get(1)?, 4)?;
    let channels = w_scales.len();
    let unit: Vec<f64> = w_scales.iter().map(|&s| x.scale as f64 * s as f64).collect();
    let bias = g.bias(conv.input.get(2), &unit)?;
    let multiplier: Vec<f32> = w_scales.iter().map(|&s| x.scale * s / y.scale).collect();
    let strides = attr(conv, "strides").map_or(vec![1, 1], |a| a.ints.clone());
    let pads = attr(conv, "pads").map_or(vec![0; 4], |a| a.ints.clone());
    let group = attr(conv, "group").map_or(1, |a| a.i);
    if strides.len() != 2 || pads.len() != 4 {
        return None;
    }
    let (lo, hi) = quantised_bounds(y, bounds);
    let name = format!("{}.kestrel_int8", conv.name);
    let bias_name = format!("{name}.bias");
    let mult_name = format!("{name}.multiplier");
    let node = pb::NodeProto {
        input: vec![x_q.to_string(), w.name.clone(), bias_name.clone(), mult_name.clone()],
        output: vec![q.output.first()?.clone()],
        name,
        op_type: ops::CONV.into(),
        domain: "ai.kestrel".into(),
        attribute: vec![
            ints_attr("strides", strides),
            ints_attr("pads", pads),
            int_attr("group", group),
            int_attr("x_zero", x.zero as i64),
            int_attr("y_zero", y.zero as i64),
            int_attr("lo", lo as i64),
            int_attr("hi", hi as i64),
        ],
        ..Default::default()
    };
    let dims = [channels as i64];
    let inits = vec![
        i32_tensor(&bias_name, &dims, &bias),
        f32_tensor(&mult_name, &dims, &multiplier),
    ];
    Some(Replacement {
        at,
        node,
        dropped,
        inits,
    })
}

fn match_add(g: &Graph, at: usize) -> Option<Replacement> {
    let add = &g.nodes[at];
    if add.input.len() != 2 {
        return None;
    }
    let (a_q, a) = g.dequantized_act(&add.input[0])?;
    let (b_q, b) = g.dequantized_act(&add.input[1])?;
    let (out_q, dropped, bounds) = quantised_output(g, add.output.first()?)?;
    let q = &g.nodes[out_q];
    let y = g.act_params(q)?;
    let (lo, hi) = quantised_bounds(y, bounds);
    let node = pb::NodeProto {
        input: vec![a_q.to_string(), b_q.to_string()],
        output: vec![q.output.first()?.clone()],
        name: format!("{}.kestrel_int8", add.name),
        op_type: ops::ADD.into(),
        domain: "ai.kestrel".into(),
        attribute: vec![
            float_attr("a_mult", a.scale / y.scale),
            int_attr("a_zero", a.zero as i64),
            float_attr("b_mult", b.scale / y.scale),
            int_attr("b_zero", b.zero as i64),
            int_attr("y_zero", y.zero as i64),
            int_attr("lo", lo as i64),
            int_attr("hi", hi as i64),
        ],
        ..Default::default()
    };
    Some(Replacement {
        at,
        node,
        dropped,
        inits: vec![],
    })
}

/// `Gemm(a, DequantizeLinear(w), [bias])` with `transB = 1`, `alpha = beta = 1`, `a` not a
/// constant, int8 weights with zero point 0 and one scale per row (or one for all).
fn match_gemm(g: &Graph, at: usize) -> Option<Replacement> {
    let gemm = &g.nodes[at];
    let int = |name: &str, default: i64| attr(gemm, name).map_or(default, |a| a.i);
    let float = |name: &str| attr(gemm, name).map_or(1.0, |a| a.f);
    if int("transA", 0) != 0 || int("transB", 0) != 1 || float("alpha") != 1.0 || float("beta") != 1.0 {
        return None;
    }
    let a = gemm.input.first()?;
    if g.inits.contains_key(a.as_str())
        || g.producer
            .get(a.as_str())
            .is_some_and(|&p| g.nodes[p].op_type == "DequantizeLinear")
    {
        // A constant input, or an int8 activation: not the f32-features classifier this is for.
        return None;
    }
    let (w, scales) = g.dequantized_weights_of_rank(gemm.input.get(1)?, 2)?;
    let rows = scales.len();
    let bias = match gemm.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => f32s(g.inits.get(b.as_str())?)?,
        None => vec![0.0; rows],
    };
    if bias.len() != rows {
        return None;
    }
    let name = format!("{}.kestrel_w8", gemm.name);
    let (scale_name, bias_name) = (format!("{name}.scale"), format!("{name}.bias"));
    let node = pb::NodeProto {
        input: vec![a.clone(), w.name.clone(), scale_name.clone(), bias_name.clone()],
        output: vec![gemm.output.first()?.clone()],
        name,
        op_type: super::gemm_w8::OP.into(),
        domain: "ai.kestrel".into(),
        ..Default::default()
    };
    let dims = [rows as i64];
    Some(Replacement {
        at,
        node,
        dropped: vec![],
        inits: vec![
            f32_tensor(&scale_name, &dims, &scales),
            f32_tensor(&bias_name, &dims, &bias),
        ],
    })
}

/// `QuantizeLinear` of a float tensor (the network's input; every other Q belongs to a conv or add
/// pattern) with a scalar scale and an int8 zero point: tract's own took 0.26 ms of Lite0's 7.5.
fn match_quantize(g: &Graph, at: usize) -> Option<Replacement> {
    let q = &g.nodes[at];
    let act = g.act_params(q)?;
    let node = pb::NodeProto {
        input: vec![q.input.first()?.clone()],
        output: vec![q.output.first()?.clone()],
        name: format!("{}.kestrel_int8", q.name),
        op_type: ops::QUANTIZE.into(),
        domain: "ai.kestrel".into(),
        attribute: vec![float_attr("scale", act.scale), int_attr("zero", act.zero as i64)],
        ..Default::default()
    };
    Some(Replacement {
        at,
        node,
        dropped: vec![],
        inits: vec![],
    })
}

/// Rewrite the QDQ patterns of `proto`'s graph into Kestrel's int8 ops, in place.
pub fn lower(proto: &mut pb::ModelProto) -> Lowered {
    let Some(graph) = proto.graph.as_mut() else {
        return Lowered::default();
    };
    let mut done = Lowered::default();
    let replacements: Vec<Replacement> = {
        let g = Graph::new(graph);
        let mut taken = HashSet::new();
        let mut out = Vec::new();
        for (i, n) in g.nodes.iter().enumerate() {
            let found = match n.op_type.as_str() {
                "Conv" => {
                    let r = match_conv(&g, i);
                    if r.is_none() {
                        done.other_convs += 1;
                    }
                    r
                }
                "Add" => match_add(&g, i),
                "Gemm" => match_gemm(&g, i),
                // Not an output Q a conv or add above already took over.
                "QuantizeLinear" if !taken.contains(&i) => match_quantize(&g, i),
                _ => None,
            };
            if let Some(r) = found.filter(|r| r.dropped.iter().all(|d| !taken.contains(d))) {
                taken.extend(r.dropped.iter().copied());
                match g.nodes[i].op_type.as_str() {
                    "Conv" => done.int8_convs += 1,
                    "Add" => done.int8_adds += 1,
                    "Gemm" => done.int8_weight_gemms += 1,
                    _ => done.int8_quantize += 1,
                }
                out.push(r);
            }
        }
        out
    };
    if replacements.is_empty() {
        // Not ours to touch: the graph goes to tract exactly as the file has it.
        return done;
    }
    let mut dropped: HashSet<usize> = HashSet::new();
    for r in replacements {
        graph.node[r.at] = r.node;
        dropped.extend(r.dropped);
        graph.initializer.extend(r.inits);
    }
    drop_nodes(graph, &dropped);
    remove_dead(graph);
    done
}

/// Replace every DequantizeLinear of constants (the weights of float ops: a weight-only Conv, a
/// classifier `Gemm` that [`lower`] did not take) by its f32 result, and return how many. tract
/// 0.23.9 leaves such a node in the plan and dequantises (and repacks) the weights on every
/// inference: ~5 ms of 30 for Lite0's classifier on 1 thread here (`kestrel bench --profile`:
/// Cast, OptMulByScalar, OptMatMulPack).
pub fn fold_constant_dequantize(proto: &mut pb::ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let mut folded = Vec::new();
    {
        let inits: HashMap<&str, &pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        for (i, n) in graph.node.iter().enumerate() {
            if n.op_type != "DequantizeLinear" || n.output.len() != 1 {
                continue;
            }
            let get = |k: usize| {
                n.input
                    .get(k)
                    .filter(|s| !s.is_empty())
                    .and_then(|s| inits.get(s.as_str()))
            };
            let (Some(data), Some(scale)) = (get(0), get(1)) else {
                continue;
            };
            let zero = match get(2) {
                None => Some(vec![0.0]),
                Some(z) => integers(z),
            };
            let (Some(values), Some(zero), Some(scale)) = (integers(data), zero, f32s(scale)) else {
                continue;
            };
            // Which index along `axis` each element has (per-axis parameters), or 0.
            let dims: Vec<usize> = data.dims.iter().map(|&d| d.max(0) as usize).collect();
            let rank = dims.len() as i64;
            let axis = attr(n, "axis").map_or(1, |a| a.i);
            let axis = if axis < 0 { axis + rank } else { axis };
            let inner: usize = dims.iter().skip(axis.max(0) as usize + 1).product();
            let along = dims.get(axis.max(0) as usize).copied().unwrap_or(1);
            let param = |p: &[f64], i: usize| -> f64 {
                if p.len() == 1 {
                    p[0]
                } else {
                    p[(i / inner.max(1)) % along.max(1)]
                }
            };
            let scale: Vec<f64> = scale.into_iter().map(f64::from).collect();
            if (scale.len() != 1 && scale.len() != along) || (zero.len() != 1 && zero.len() != along) {
                continue;
            }
            let out: Vec<f32> = values
                .iter()
                .enumerate()
                .map(|(i, &q)| ((q - param(&zero, i)) * param(&scale, i)) as f32)
                .collect();
            folded.push((i, f32_tensor(&n.output[0], &data.dims, &out)));
        }
    }
    let count = folded.len();
    let gone: HashSet<usize> = folded.iter().map(|(i, _)| *i).collect();
    graph.initializer.extend(folded.into_iter().map(|(_, t)| t));
    drop_nodes(graph, &gone);
    if count > 0 {
        remove_dead(graph);
    }
    count
}

/// Remove the nodes at these indices, keeping the others in order.
pub(super) fn drop_nodes(graph: &mut pb::GraphProto, indices: &HashSet<usize>) {
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !indices.contains(&(i - 1))
    });
}

/// Drop nodes whose outputs nothing reads (the DequantizeLinear nodes the fused ops replaced),
/// then initializers nothing reads.
fn remove_dead(graph: &mut pb::GraphProto) {
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    loop {
        let read: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .collect();
        let dead: Vec<usize> = graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.output
                    .iter()
                    .all(|o| !read.contains(o.as_str()) && !outputs.contains(o))
            })
            .map(|(i, _)| i)
            .collect();
        if dead.is_empty() {
            break;
        }
        drop_nodes(graph, &dead.into_iter().collect());
    }
    let read: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
    graph.initializer.retain(|t| read.contains(&t.name));
}

#[cfg(test)]
mod tests;
