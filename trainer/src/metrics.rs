//! Classification metrics from logits: accuracy, top-k, per-class precision/recall/F1, and the
//! confusion matrix with its most-confused pairs.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub class: String,
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Confusion {
    pub truth: String,
    pub predicted: String,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    pub images: usize,
    pub top1: f64,
    /// Top-k accuracy with k = min(5, classes).
    pub topk: f64,
    pub k: usize,
    pub mean_loss: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `matrix[truth][predicted]`.
    pub matrix: Vec<Vec<usize>>,
    pub most_confused: Vec<Confusion>,
}

/// Cross-entropy of one row of logits against `label` (no smoothing: the honest number).
pub fn cross_entropy(logits: &[f32], label: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[label] as f64
}

/// The top-1 class of a row of logits: the lowest index among equal maxima, as [`evaluate`]
/// ranks.
pub fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .reduce(|best, i| if row[i].total_cmp(&row[best]).is_gt() { i } else { best })
        .unwrap_or(0)
}

/// Evaluate row-major `logits` (`labels.len()` rows of `classes.len()`).
pub fn evaluate(logits: &[f32], labels: &[usize], classes: &[String]) -> Evaluation {
    let n_classes = classes.len();
    let k = n_classes.min(5);
    let mut matrix = vec![vec![0usize; n_classes]; n_classes];
    let (mut top1, mut topk, mut loss) = (0usize, 0usize, 0.0f64);
    for (row, &label) in logits.chunks_exact(n_classes).zip(labels) {
        let mut order: Vec<usize> = (0..n_classes).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        matrix[label][order[0]] += 1;
        top1 += usize::from(order[0] == label);
        topk += usize::from(order[..k].contains(&label));
        loss += cross_entropy(row, label);
    }
    let n = labels.len().max(1) as f64;
    let per_class = (0..n_classes)
        .map(|c| {
            let tp = matrix[c][c] as f64;
            let support: usize = matrix[c].iter().sum();
            let predicted: usize = matrix.iter().map(|r| r[c]).sum();
            let precision = if predicted == 0 { 0.0 } else { tp / predicted as f64 };
            let recall = if support == 0 { 0.0 } else { tp / support as f64 };
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                class: classes[c].clone(),
                support,
                precision,
                recall,
                f1,
            }
        })
        .collect();
    let mut most_confused: Vec<Confusion> = (0..n_classes)
        .flat_map(|t| (0..n_classes).map(move |p| (t, p)))
        .filter(|&(t, p)| t != p && matrix[t][p] > 0)
        .map(|(t, p)| Confusion {
            truth: classes[t].clone(),
            predicted: classes[p].clone(),
            count: matrix[t][p],
        })
        .collect();
    most_confused.sort_by_key(|c| std::cmp::Reverse(c.count));
    most_confused.truncate(10);
    Evaluation {
        images: labels.len(),
        top1: top1 as f64 / n,
        topk: topk as f64 / n,
        k,
        mean_loss: loss / n,
        per_class,
        matrix,
        most_confused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_three_class_case() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // rows: truth a→a, a→b, b→b, c→b
        let logits = [3.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 5.0, 1.0, 0.0, 4.0, 3.0];
        let e = evaluate(&logits, &[0, 0, 1, 2], &classes);
        assert_eq!(e.top1, 0.5);
        assert_eq!(e.k, 3);
        assert_eq!(e.topk, 1.0);
        assert_eq!(e.matrix, vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 0]]);
        let b = &e.per_class[1];
        assert_eq!((b.support, b.precision, b.recall), (1, 1.0 / 3.0, 1.0));
        assert_eq!(e.per_class[2].f1, 0.0);
        assert_eq!(e.most_confused.len(), 2);
        assert!((cross_entropy(&[0.0, 0.0], 1) - 2f64.ln()).abs() < 1e-12);
    }
}
