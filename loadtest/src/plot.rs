//! SVG plots of a run: latency CDFs, the per-function slowdown CDF and sweep curves.
//! SVG text is drawn by the viewer, so no font files are needed.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::metrics::PhaseSummary;

/// Most points drawn per line; longer series are thinned evenly.
const MAX_POINTS: usize = 2000;

const SIZE: (u32, u32) = (900, 560);

fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::file(path, format!("cannot draw the plot: {e}"))
}

/// Points of the empirical CDF of sorted `values`, thinned to [`MAX_POINTS`].
fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let step = n.div_ceil(MAX_POINTS).max(1);
    let mut points: Vec<(f64, f64)> = (0..n).step_by(step).map(|i| (sorted[i], (i + 1) as f64 / n as f64)).collect();
    if let Some(&last) = sorted.last() {
        points.push((last, 1.0));
    }
    points
}

/// A CDF per series on a log-scale x axis; series without values are skipped.
pub fn cdf(path: &Path, title: &str, x_label: &str, series: &[(String, Vec<f64>)]) -> Result<()> {
    let all = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return Ok(());
    }
    let (lo, hi) = (lo * 0.9, if hi > lo { hi * 1.1 } else { lo * 2.0 });
    let mut chart = canvas(path, title, ((lo..hi).log_scale(), x_label), (0f64..1.0, "fraction"))?;
    for (i, (label, values)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = cdf_points(values).into_iter().map(|(x, y)| (x.max(lo), y)).collect();
        line(&mut chart, points, i, label, path)?;
    }
    finish(chart, SeriesLabelPosition::LowerRight, path)
}

/// p50 and p99 latency against the offered rate, one point per sweep step.
pub fn sweep(path: &Path, title: &str, phases: &[PhaseSummary]) -> Result<()> {
    let points: Vec<(f64, f64, f64)> = phases
        .iter()
        .filter_map(|p| Some((p.offered_rate?, p.latency_ms.p50?.max(1e-3), p.latency_ms.p99?.max(1e-3))))
        .collect();
    if points.is_empty() {
        return Ok(());
    }
    let x_hi = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.05;
    let y_lo = points.iter().map(|p| p.1).fold(f64::MAX, f64::min) * 0.8;
    let y_hi = points.iter().map(|p| p.2).fold(0.0, f64::max) * 1.25;
    let x = (0f64..x_hi, "offered rate (calls/s)");
    let mut chart = canvas(path, title, x, ((y_lo..y_hi).log_scale(), "latency (ms)"))?;
    for (i, (label, pick)) in [("p50", 1usize), ("p99", 2)].into_iter().enumerate() {
        let points: Vec<(f64, f64)> = points.iter().map(|p| (p.0, if pick == 1 { p.1 } else { p.2 })).collect();
        line(&mut chart, points.clone(), i, label, path)?;
        let c = colour(i);
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(|e| plot_error(path, e))?;
    }
    finish(chart, SeriesLabelPosition::UpperLeft, path)
}

/// A chart drawn into an SVG file.
type Chart<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// A white canvas in `path` with a title and axes, each given as its range and label.
fn canvas<'a, X, Y>(
    path: &'a Path,
    title: &str,
    (x, x_label): (X, &str),
    (y, y_label): (Y, &str),
) -> Result<Chart<'a, X::CoordDescType, Y::CoordDescType>>
where
    X: AsRangedCoord,
    Y: AsRangedCoord,
    X::CoordDescType: ValueFormatter<X::Value>,
    Y::CoordDescType: ValueFormatter<Y::Value>,
{
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(x, y)
        .map_err(|e| plot_error(path, e))?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw().map_err(|e| plot_error(path, e))?;
    Ok(chart)
}

/// Draws series `i` as a line with its legend entry.
fn line<'a, CT>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    points: Vec<(f64, f64)>,
    i: usize,
    label: &str,
    path: &Path,
) -> Result<()>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    let c = colour(i);
    chart
        .draw_series(LineSeries::new(points, c.stroke_width(2)))
        .map_err(|e| plot_error(path, e))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    Ok(())
}

/// Draws the legend at `position` and writes the file.
fn finish<'a, CT: CoordTranslate>(
    mut chart: ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(path, e))?;
    chart.plotting_area().present().map_err(|e| plot_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_points_are_thinned_and_end_at_one() {
        let values: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let points = cdf_points(&values);
        assert!(points.len() <= MAX_POINTS + 1);
        assert_eq!(points.first(), Some(&(1.0, 1e-4)));
        assert_eq!(points.last(), Some(&(10_000.0, 1.0)));
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn plots_are_svg_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdf.svg");
        cdf(&path, "latency", "ms", &[("a".into(), vec![1.0, 2.0, 3.0]), ("b".into(), vec![])]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("latency") && svg.contains("<polyline"), "{svg}");
    }
}
