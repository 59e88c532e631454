//! The report's plots as SVG: drawn by hand, so they scale, embed in the HTML and need no
//! font files.

use std::fmt::Write as _;

use crate::train::checkpoint::{EpochRow, Phase};

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Loss and accuracy per epoch, both phases on one time axis.
pub fn curves_svg(history: &[EpochRow]) -> String {
    let (w, h, pad) = (640.0, 300.0, 40.0);
    let n = history.len().max(2) as f64;
    let max_loss = history
        .iter()
        .flat_map(|r| [r.train_loss, r.val_loss])
        .fold(0.0f64, f64::max)
        .max(1e-6);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v;
    let line = |f: &dyn Fn(&EpochRow) -> f64, colour: &str| {
        let pts: Vec<String> = history
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{:.1},{:.1}", x(i), y(f(r).clamp(0.0, 1.0))))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#888\"/>",
        h - pad,
        w - pad,
        h - pad,
        h - pad
    );
    s += &line(&|r| r.train_loss / max_loss, "#1f77b4");
    s += &line(&|r| r.val_loss / max_loss, "#ff7f0e");
    s += &line(&|r| r.val_top1, "#2ca02c");
    if let Some(i) = history
        .iter()
        .position(|r| r.phase == Phase::Finetune)
        .filter(|&i| i > 0)
    {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{pad}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#aaa\" stroke-dasharray=\"4\"/>\
             <text x=\"{0:.1}\" y=\"{2}\">fine-tune</text>",
            x(i),
            h - pad,
            pad - 5.0
        );
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"{}\">epoch →</text>\
         <text x=\"{}\" y=\"20\" fill=\"#1f77b4\">train loss</text><text x=\"{}\" y=\"20\" fill=\"#ff7f0e\">val loss</text>\
         <text x=\"{}\" y=\"20\" fill=\"#2ca02c\">val top-1 (0–100%)</text>\
         <text x=\"5\" y=\"{}\">0</text><text x=\"5\" y=\"{}\">max</text></svg>",
        h - 10.0,
        pad,
        pad + 90.0,
        pad + 170.0,
        h - pad,
        pad + 4.0
    );
    s
}

/// Row-normalised confusion matrix as a heat map, counts in the cells.
pub fn confusion_svg(matrix: &[Vec<usize>], classes: &[String]) -> String {
    let n = classes.len().max(1);
    let cell = (480 / n).clamp(12, 48) as f64;
    let label_w = 140.0;
    let size = label_w + cell * n as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{size}\" height=\"{size}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"5\" y=\"14\">truth ↓ predicted →</text>"
    );
    for (t, row) in matrix.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        let y = label_w + t as f64 * cell;
        let _ = write!(
            s,
            "<text x=\"5\" y=\"{:.1}\">{}</text>",
            y + cell * 0.65,
            esc(&classes[t])
        );
        for (p, &count) in row.iter().enumerate() {
            let x = label_w + p as f64 * cell;
            let share = count as f64 / total;
            let shade = (255.0 * (1.0 - share)).round() as u8;
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({shade},{shade},255)\" stroke=\"#ddd\"/>"
            );
            if count > 0 && cell >= 20.0 {
                let colour = if share > 0.5 { "white" } else { "black" };
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{count}</text>",
                    x + cell / 2.0,
                    y + cell * 0.65
                );
            }
        }
    }
    for (p, class) in classes.iter().enumerate() {
        let x = label_w + p as f64 * cell + cell * 0.65;
        let _ = write!(
            s,
            "<text transform=\"translate({x:.1},{:.1}) rotate(-60)\">{}</text>",
            label_w - 4.0,
            esc(class)
        );
    }
    s + "</svg>"
}
