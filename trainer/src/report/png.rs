//! `curves.png` and `confusion.png`, drawn with plotters into an RGB buffer and saved with the
//! `image` crate. Text needs a TrueType font: DejaVu Sans (Debian `fonts-dejavu-core`, which
//! set-up installs) or `$KESTREL_FONT`. Without one the PNGs are skipped with a warning; the SVG
//! versions in the report do not need a font.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::RgbImage;
use plotters::prelude::*;

use crate::train::checkpoint::{EpochRow, Phase};

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no TrueType font for plot labels (install fonts-dejavu-core or set KESTREL_FONT)")]
    NoFont,
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("encoding {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("writing {path}: {source}")]
    Save {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Register the font once per process; true when text can be drawn.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = std::env::var_os("KESTREL_FONT")
            .map(PathBuf::from)
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                // plotters keeps fonts for the life of the process; one small leak per process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), PlotError> {
    if !font_ready() {
        return Err(PlotError::NoFont);
    }
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(root).map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| PlotError::Draw {
        path: path.to_path_buf(),
        message: "buffer size".into(),
    })?;
    // Encoded in memory, then written atomically like every other file of a run: a report
    // never shows a half-written plot.
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|source| PlotError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    kestrel_runtime::atomic::write_atomic(path, png.get_ref()).map_err(|source| PlotError::Save {
        path: path.to_path_buf(),
        source,
    })
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// Loss (train, val) and validation top-1 per epoch, both phases on one axis.
pub fn curves_png(history: &[EpochRow], path: &Path) -> Result<(), PlotError> {
    render(path, (1000, 400), |root| {
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(500);
        let n = history.len().max(2) as f64;
        let max_loss = history
            .iter()
            .flat_map(|r| [r.train_loss, r.val_loss])
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.05;
        let finetune_start = history
            .iter()
            .position(|r| r.phase == Phase::Finetune)
            .filter(|&i| i > 0);

        let mut chart = ChartBuilder::on(&left)
            .caption("loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..n, 0f64..max_loss)
            .map_err(err)?;
        chart.configure_mesh().x_desc("epoch").draw().map_err(err)?;
        let series = |f: fn(&EpochRow) -> f64| history.iter().enumerate().map(move |(i, r)| (i as f64 + 1.0, f(r)));
        chart
            .draw_series(LineSeries::new(series(|r| r.train_loss), BLUE.stroke_width(2)))
            .map_err(err)?
            .label("train (with smoothing)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(LineSeries::new(series(|r| r.val_loss), RED.stroke_width(2)))
            .map_err(err)?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        if let Some(i) = finetune_start {
            let x = i as f64 + 0.5;
            chart
                .draw_series(LineSeries::new(vec![(x, 0.0), (x, max_loss)], BLACK.mix(0.3)))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .draw()
            .map_err(err)?;

        let mut acc = ChartBuilder::on(&right)
            .caption("validation top-1 (%)", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1f64..n, 0f64..100f64)
            .map_err(err)?;
        acc.configure_mesh().x_desc("epoch").draw().map_err(err)?;
        acc.draw_series(LineSeries::new(series(|r| 100.0 * r.val_top1), GREEN.stroke_width(2)))
            .map_err(err)?;
        Ok(())
    })
}

/// Row-normalised confusion matrix with counts.
pub fn confusion_png(matrix: &[Vec<usize>], classes: &[String], path: &Path) -> Result<(), PlotError> {
    let n = classes.len().max(1);
    let cell = (600 / n).clamp(16, 60) as i32;
    let label = 160;
    let size = (label + cell * n as i32 + 20) as u32;
    render(path, (size, size + 20), |root| {
        root.fill(&WHITE).map_err(err)?;
        let text = ("sans-serif", (cell / 3).clamp(10, 16)).into_font();
        root.draw(&Text::new("truth ↓  predicted →", (5, 5), text.clone()))
            .map_err(err)?;
        for (t, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            let y = label + t as i32 * cell;
            root.draw(&Text::new(classes[t].clone(), (5, y + cell / 3), text.clone()))
                .map_err(err)?;
            for (p, &count) in row.iter().enumerate() {
                let x = label + p as i32 * cell;
                let share = count as f64 / total;
                let shade = (255.0 * (1.0 - share)) as u8;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(shade, shade, 255).filled(),
                ))
                .map_err(err)?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(220, 220, 220)))
                    .map_err(err)?;
                if count > 0 && cell >= 24 {
                    let colour = if share > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        count.to_string(),
                        (x + cell / 3, y + cell / 3),
                        text.clone().color(&colour),
                    ))
                    .map_err(err)?;
                }
            }
        }
        for (p, class) in classes.iter().enumerate() {
            let x = label + p as i32 * cell + cell / 3;
            let style = text.clone().transform(FontTransform::Rotate270);
            root.draw(&Text::new(class.clone(), (x, label - 5), style))
                .map_err(err)?;
        }
        Ok(())
    })
}
