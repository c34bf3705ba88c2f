//! The training chart `metrics.svg`, drawn from the run's `metrics.jsonl` with plotters' SVG
//! backend (text as SVG `<text>`, so no font files are needed to draw it).
//!
//! Two panels over one x axis, the global step (step t is the t-th optimizer update):
//! - top: training loss of every step and its mean per epoch, validation loss (left axis,
//!   cross-entropy), validation accuracy and macro-F1 (right axis, 0 to 1, drawn only with
//!   validation data), one point per epoch at the step that ends it;
//! - bottom: the learning rate of every step (the top layer group's, `lr · schedule(t, T)`).
//!
//! Dashed vertical lines mark the end of each epoch in both panels; each epoch's number
//! stands over its span at the top of the upper one. Each panel's legend lists what it drew.

use crate::checkpoint::atomic::{write_atomic, write_err};
use crate::error::{Error, Result};
use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;
use std::path::Path;

/// One line of `metrics.jsonl`: a step (`loss`, `lr`) or the end of an epoch (`train_loss`,
/// `valid`). A non-finite number is written as `null` and reads as `None`.
#[derive(Deserialize)]
struct LogLine {
    step: Option<u64>,
    epoch: Option<u64>,
    loss: Option<f64>,
    lr: Option<f64>,
    train_loss: Option<f64>,
    valid: Option<Valid>,
}

/// A run's curves, by global step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curves {
    /// (step, epoch (1-based), training loss, learning rate) of every step.
    pub steps: Vec<(u64, u64, f64, Option<f64>)>,
    /// The end of every complete epoch.
    pub epochs: Vec<EpochEnd>,
}

/// The end of an epoch: its number (1-based), the step that ends it, its mean training loss
/// and, with validation data, the validation metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochEnd {
    /// The epoch's number, 1-based.
    pub epoch: u64,
    /// The global step that ends it (its last optimizer update).
    pub step: u64,
    /// Mean training loss of its steps (`None`: not finite).
    pub train_loss: Option<f64>,
    /// Validation metrics, when the run had validation data.
    pub valid: Option<Valid>,
}

/// Validation metrics of an epoch (the log's `valid` also holds the confusion matrix).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Valid {
    /// Mean cross-entropy per example (`None`: not finite).
    pub loss: Option<f64>,
    /// Fraction of examples classified correctly, 0 to 1.
    pub accuracy: Option<f64>,
    /// Macro-averaged F1, 0 to 1 (see [`crate::train::metrics`]).
    pub macro_f1: Option<f64>,
}

impl Curves {
    /// Reads the curves of `metrics.jsonl` (one JSON object a line).
    pub fn read_log(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut curves = Curves::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: LogLine = serde_json::from_str(line)
                .map_err(|e| Error::format(path, format!("line {}: {e}", i + 1)))?;
            match (l.step, l.epoch, l.loss, l.train_loss) {
                (Some(step), Some(epoch), Some(loss), None) => {
                    curves.steps.push((step, epoch, loss, l.lr))
                }
                (Some(step), Some(epoch), None, train_loss) => curves.epochs.push(EpochEnd {
                    epoch,
                    step,
                    train_loss,
                    valid: l.valid,
                }),
                _ => {
                    return Err(Error::format(
                        path,
                        format!("line {}: neither a step nor an epoch's end", i + 1),
                    ))
                }
            }
        }
        Ok(curves)
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self, title: &str) -> Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root, title)
                .map_err(|e| Error::invalid(format!("drawing the training chart: {e}")))?;
        }
        Ok(svg)
    }

    /// The last step drawn (at least 1, so that the x range is never empty).
    fn last_step(&self) -> u64 {
        let steps = self.steps.iter().map(|s| s.0);
        steps
            .chain(self.epochs.iter().map(|e| e.step))
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// Each epoch's span of steps: (epoch, first step - 1, last step).
    fn epoch_spans(&self) -> Vec<(u64, u64, u64)> {
        let mut spans: Vec<(u64, u64, u64)> = Vec::new();
        for &(step, epoch, _, _) in &self.steps {
            match spans.last_mut() {
                Some(s) if s.0 == epoch => s.2 = step,
                _ => spans.push((epoch, step.saturating_sub(1), step)),
            }
        }
        spans
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, title: &str) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 20))?;
        let (top, bottom) = root.split_vertically(TOP_PANEL);
        self.draw_losses(&top)?;
        self.draw_lr(&bottom)?;
        root.present()?;
        Ok(())
    }

    /// The top panel: losses on the left axis, accuracy and macro-F1 on the right.
    fn draw_losses<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let (area, legend) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND);
        let x_max = self.last_step();
        let losses = self
            .steps
            .iter()
            .map(|s| s.2)
            .chain(self.epochs.iter().filter_map(|e| e.train_loss))
            .chain(self.epochs.iter().filter_map(|e| e.valid?.loss));
        // Headroom above the data for the epoch numbers.
        let y_max = upper_bound(losses) * HEADROOM;
        let validated = self.epochs.iter().any(|e| e.valid.is_some());
        let caption = if validated {
            "loss and validation metrics"
        } else {
            "training loss"
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 16))
            .margin(MARGIN)
            .x_label_area_size(X_LABELS)
            .y_label_area_size(Y_LABELS)
            .right_y_label_area_size(Y_LABELS)
            .build_cartesian_2d(0..x_max, 0.0..y_max)?
            .set_secondary_coord(0..x_max, 0.0..HEADROOM);
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (cross-entropy)")
            .y_label_formatter(&|v| format!("{v:.2}"))
            .light_line_style(BLACK.mix(0.04))
            .draw()?;
        if validated {
            chart
                .configure_secondary_axes()
                .y_desc("validation accuracy, macro-F1")
                .y_labels(6)
                .y_label_formatter(&|&v| {
                    if v <= 1.0 {
                        format!("{v:.1}")
                    } else {
                        String::new()
                    }
                })
                .draw()?;
        }
        self.draw_epochs(&mut chart, y_max, true)?;

        let step_loss = Entry::line("train loss (each step)", TRAIN.mix(0.35).stroke_width(1));
        chart.draw_series(LineSeries::new(
            self.steps.iter().map(|s| (s.0, s.2)),
            step_loss.style,
        ))?;
        let epoch_points = |f: &dyn Fn(&EpochEnd) -> Option<f64>| -> Vec<(u64, f64)> {
            self.epochs
                .iter()
                .filter_map(|e| Some((e.step, f(e)?)))
                .collect()
        };
        let left = [
            (
                Entry::points("train loss (epoch mean)", TRAIN),
                epoch_points(&|e| e.train_loss),
            ),
            (
                Entry::points("valid loss", VALID),
                epoch_points(&|e| e.valid?.loss),
            ),
        ];
        let right = [
            (
                Entry::points("valid accuracy (right axis)", ACCURACY),
                epoch_points(&|e| e.valid?.accuracy),
            ),
            (
                Entry::points("valid macro-F1 (right axis)", MACRO_F1),
                epoch_points(&|e| e.valid?.macro_f1),
            ),
        ];
        let mut entries = vec![step_loss];
        for (entry, points) in left.into_iter().filter(|(_, p)| !p.is_empty()) {
            chart.draw_series(LineSeries::new(points, entry.style).point_size(POINT))?;
            entries.push(entry);
        }
        for (entry, points) in right.into_iter().filter(|(_, p)| !p.is_empty()) {
            chart.draw_secondary_series(LineSeries::new(points, entry.style).point_size(POINT))?;
            entries.push(entry);
        }
        if self.epoch_spans().len() > 1 {
            entries.push(Entry::epoch_end());
        }
        draw_legend(&legend, &entries)
    }

    /// The bottom panel: the learning rate of every step, over the same x axis.
    fn draw_lr<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let (area, legend) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND);
        let x_max = self.last_step();
        let lrs: Vec<(u64, f64)> = self
            .steps
            .iter()
            .filter_map(|s| Some((s.0, s.3?)))
            .collect();
        let y_max = upper_bound(lrs.iter().map(|p| p.1));
        // No right axis: its room stays empty so that both panels' steps line up.
        let mut chart = ChartBuilder::on(&area)
            .caption("learning-rate schedule", ("sans-serif", 16))
            .margin(MARGIN)
            .margin_right(MARGIN + Y_LABELS)
            .x_label_area_size(X_LABELS)
            .y_label_area_size(Y_LABELS)
            .build_cartesian_2d(0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("learning rate")
            .y_labels(5)
            .y_label_formatter(&|&v| {
                if v == 0.0 {
                    "0".into()
                } else {
                    format!("{v:.1e}")
                }
            })
            .light_line_style(BLACK.mix(0.04))
            .draw()?;
        self.draw_epochs(&mut chart, y_max, false)?;
        let lr = Entry::line("learning rate (top layer group)", LR.stroke_width(2));
        chart.draw_series(LineSeries::new(lrs, lr.style))?;
        draw_legend(&legend, &[lr])
    }

    /// Dashed lines at the end of each epoch (but at the last step) in a panel whose y axis
    /// reaches `y_max`, and with `numbers` each epoch's number over its span at the top.
    fn draw_epochs<DB: DrawingBackend>(
        &self,
        chart: &mut ChartContext<DB, Coords>,
        y_max: f64,
        numbers: bool,
    ) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let x_max = self.last_step();
        let spans = self.epoch_spans();
        // At most about 20 epoch numbers, so that they never overlap.
        let every = spans.len().div_ceil(20).max(1);
        let boundary = Entry::epoch_end().style;
        for (i, &(epoch, start, end)) in spans.iter().enumerate() {
            if end < x_max {
                chart.draw_series(DashedLineSeries::new(
                    [(end, 0.0), (end, y_max)],
                    DASH,
                    GAP,
                    boundary,
                ))?;
            }
            if numbers && i % every == 0 {
                let label = ("sans-serif", 12)
                    .into_font()
                    .color(&EPOCH_LABEL)
                    .pos(Pos::new(HPos::Center, VPos::Top));
                chart.draw_series(std::iter::once(Text::new(
                    format!("epoch {epoch}"),
                    ((start + end) / 2, y_max),
                    label,
                )))?;
            }
        }
        Ok(())
    }
}

/// The result of a drawing step: plotters' errors, boxed (they are reported as text).
type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// Both panels' coordinates: step (x), value (y).
type Coords = Cartesian2d<RangedCoordu64, RangedCoordf64>;

/// A legend entry: a series' name and how it is drawn.
struct Entry {
    label: &'static str,
    style: ShapeStyle,
    mark: Mark,
}

enum Mark {
    Line,
    /// A line through points (one per epoch).
    Points,
    Dashed,
}

impl Entry {
    fn line(label: &'static str, style: ShapeStyle) -> Self {
        Entry {
            label,
            style,
            mark: Mark::Line,
        }
    }
    fn points(label: &'static str, color: RGBColor) -> Self {
        Entry {
            label,
            style: color.stroke_width(2),
            mark: Mark::Points,
        }
    }
    fn epoch_end() -> Self {
        Entry {
            label: "end of an epoch",
            style: BLACK.mix(0.4).stroke_width(1),
            mark: Mark::Dashed,
        }
    }
}

/// The legend of a panel, one entry a line, in the column `area` right of the panel's plot.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[Entry]) -> Drawn
where
    DB::ErrorType: 'static,
{
    let font = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    // Level with the plot's top, below the panel's caption.
    let (x, top, height) = (4, 40, 20);
    for (i, e) in entries.iter().enumerate() {
        let y = top + height * i as i32;
        match e.mark {
            Mark::Line | Mark::Points => {
                area.draw(&PathElement::new([(x, y), (x + 24, y)], e.style))?;
            }
            Mark::Dashed => {
                area.draw(&PathElement::new([(x, y), (x + 8, y)], e.style))?;
                area.draw(&PathElement::new([(x + 14, y), (x + 22, y)], e.style))?;
            }
        }
        if let Mark::Points = e.mark {
            area.draw(&Circle::new((x + 12, y), POINT, e.style))?;
        }
        area.draw(&Text::new(e.label, (x + 32, y), &font))?;
    }
    Ok(())
}

/// Writes the chart of the log `log` to `svg` atomically.
pub fn write_chart(svg: &Path, log: &Path, title: &str) -> Result<()> {
    let text = Curves::read_log(log)?.to_svg(title)?;
    write_atomic(svg, |w| {
        w.write_all(text.as_bytes()).map_err(write_err(svg))
    })
}

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 720;
/// Width of the legend column right of each panel.
const LEGEND: u32 = 220;
/// Height of the top panel (the title above it included).
const TOP_PANEL: u32 = 460;
const MARGIN: u32 = 12;
/// The top panel's y axes reach this much above the data (1 on the right), the room of the
/// epoch numbers.
const HEADROOM: f64 = 1.08;
/// Radius of a per-epoch point; dash and gap lengths of an epoch boundary.
const POINT: u32 = 3;
const DASH: u32 = 6;
const GAP: u32 = 4;
const X_LABELS: u32 = 44;
const Y_LABELS: u32 = 72;

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALID: RGBColor = RGBColor(255, 127, 14);
const ACCURACY: RGBColor = RGBColor(44, 160, 44);
const MACRO_F1: RGBColor = RGBColor(148, 103, 189);
const LR: RGBColor = RGBColor(214, 39, 40);
const EPOCH_LABEL: RGBColor = RGBColor(96, 96, 96);

/// The top of a y axis for `values` (0 at the bottom): 5% above the largest finite one.
fn upper_bound(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 {
        max * 1.05
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts of the SVG's `<text>` elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                Some(body.trim().to_string())
            })
            .collect()
    }

    fn made_up() -> Curves {
        let mut c = Curves::default();
        let lr = |t: u64| {
            1e-3 * if t < 3 {
                (t + 1) as f64 / 3.0
            } else {
                (12 - t) as f64 / 9.0
            }
        };
        for t in 1..=12u64 {
            let epoch = (t - 1) / 4 + 1;
            c.steps
                .push((t, epoch, 1.2 / (1.0 + 0.2 * t as f64), Some(lr(t - 1))));
        }
        for e in 1..=3u64 {
            c.epochs.push(EpochEnd {
                epoch: e,
                step: 4 * e,
                train_loss: Some(1.0 / e as f64),
                valid: Some(Valid {
                    loss: Some(1.1 / e as f64),
                    accuracy: Some(0.5 + 0.1 * e as f64),
                    macro_f1: Some(0.4 + 0.1 * e as f64),
                }),
            });
        }
        c
    }

    #[test]
    fn the_chart_has_axes_labels_legend_and_epochs() {
        let dir = std::env::temp_dir().join(format!("rnnkit-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("metrics.jsonl");
        let c = made_up();
        let mut text = String::new();
        for &(t, e, loss, lr) in &c.steps {
            text += &format!(
                "{}\n",
                serde_json::json!({"step": t, "epoch": e, "loss": loss, "lr": lr})
            );
            if let Some(end) = c.epochs.iter().find(|x| x.step == t) {
                let v = end.valid.unwrap();
                let valid = serde_json::json!({"loss": v.loss, "accuracy": v.accuracy,
                    "macro_f1": v.macro_f1, "confusion": [[1, 0], [0, 1]], "examples": 2});
                text += &format!(
                    "{}\n",
                    serde_json::json!({"epoch": e, "step": t,
                    "train_loss": end.train_loss, "valid": valid})
                );
            }
        }
        std::fs::write(&log, text).unwrap();
        // serde_json reads a float back to within an ulp.
        let read = Curves::read_log(&log).unwrap();
        assert_eq!(format!("{:.9?}", read), format!("{:.9?}", c));
        let svg_path = dir.join("metrics.svg");
        write_chart(&svg_path, &log, "fine-tuning test").unwrap();
        let texts = texts(&std::fs::read_to_string(&svg_path).unwrap());
        for want in [
            "fine-tuning test",
            "step",
            "loss (cross-entropy)",
            "validation accuracy, macro-F1",
            "learning rate",
            "train loss (each step)",
            "train loss (epoch mean)",
            "valid loss",
            "valid accuracy (right axis)",
            "valid macro-F1 (right axis)",
            "learning rate (top layer group)",
            "epoch 1",
            "epoch 3",
        ] {
            assert!(
                texts.iter().any(|t| t == want),
                "{want} missing from {texts:?}"
            );
        }
        if let Ok(keep) = std::env::var("RNNKIT_CHART_SAMPLE") {
            std::fs::copy(&svg_path, keep).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_log_and_a_run_without_validation_still_draw() {
        assert!(texts(&Curves::default().to_svg("empty").unwrap()).contains(&"step".to_string()));
        let mut c = made_up();
        for e in &mut c.epochs {
            e.valid = None;
        }
        let svg = c.to_svg("no validation").unwrap();
        let texts = texts(&svg);
        assert!(
            texts.contains(&"train loss (epoch mean)".to_string()),
            "{texts:?}"
        );
        // Only what was recorded is in the legend; no right axis without validation.
        assert!(!texts.iter().any(|t| t.starts_with("valid")), "{texts:?}");
        if let Ok(keep) = std::env::var("RNNKIT_CHART_SAMPLE") {
            std::fs::write(format!("{keep}.no-valid.svg"), svg).unwrap();
        }
    }
}
