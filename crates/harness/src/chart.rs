//! SVG line charts, for any experiment: panels stacked vertically, each
//! with its own series, sharing one x axis. SVG only (no font or system
//! libraries), through plotters.

use std::path::Path;

use plotters::prelude::*;

/// One named line.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart panel.
#[derive(Clone, Debug)]
pub struct Panel {
    pub caption: String,
    pub y_desc: String,
    /// A logarithmic y axis (latencies).
    pub log_y: bool,
    /// Bars instead of lines: at each x (a category, such as a worker's
    /// id: whole numbers), one bar per series, side by side.
    pub bars: bool,
    pub series: Vec<Series>,
}

/// A chart: panels stacked, one x axis, an optional vertical marker (the
/// moment of a fault, say). Series keep their colour across panels, by
/// position, and the first panel carries the legend.
#[derive(Clone, Debug)]
pub struct Chart {
    pub x_desc: String,
    pub marker_x: Option<f64>,
    pub panels: Vec<Panel>,
}

/// Writes each `(file name, chart)` into `dir` as SVG, each through a
/// temporary file and a rename, like every other result file.
pub fn write_files(dir: &Path, charts: &[(String, Chart)]) -> std::io::Result<()> {
    for (name, chart) in charts {
        let tmp = dir.join(format!(".{name}.tmp"));
        write_svg(&tmp, chart)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(())
}

/// Draws `chart` into an SVG file at `path`.
pub fn write_svg(path: &Path, chart: &Chart) -> Result<(), Box<dyn std::error::Error>> {
    let all = || {
        chart
            .panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let xs = || all().map(|p| p.0).chain(chart.marker_x);
    let (low, high) = (
        xs().fold(f64::INFINITY, f64::min),
        xs().fold(f64::NEG_INFINITY, f64::max),
    );
    // A margin on both sides, so points at the ends are not on the frame,
    // and bars (up to half a unit either side of their x) fit.
    let bars = chart.panels.iter().any(|p| p.bars);
    let margin = match (bars, high > low) {
        (true, _) => 0.6,
        (false, true) => (high - low) * 0.05,
        (false, false) => 0.5,
    };
    let (x_min, x_max) = if low.is_finite() {
        (low - margin, high + margin)
    } else {
        (0.0, 1.0)
    };
    let height = 350 * chart.panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((chart.panels.len().max(1), 1));
    let palette = |i: usize| Palette99::pick(i).to_rgba();
    for (index, (panel, area)) in chart.panels.iter().zip(areas.iter()).enumerate() {
        let y_max = panel
            .series
            .iter()
            .flat_map(|s| &s.points)
            .map(|p| p.1)
            .fold(1.0, f64::max);
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&panel.caption, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50);
        // The two axis kinds are different types in plotters, hence a macro.
        macro_rules! draw {
            ($y_range:expr, $y_low:expr, $y_high:expr) => {{
                let mut ctx = builder.build_cartesian_2d(x_min..x_max, $y_range)?;
                ctx.configure_mesh()
                    .x_desc(chart.x_desc.as_str())
                    .y_desc(panel.y_desc.as_str())
                    .draw()?;
                if let Some(x) = chart.marker_x {
                    ctx.draw_series(LineSeries::new(
                        [(x, $y_low), (x, $y_high)],
                        BLACK.stroke_width(1),
                    ))?;
                }
                let width = 0.8 / panel.series.len().max(1) as f64;
                for (i, series) in panel.series.iter().enumerate() {
                    let color = palette(i);
                    let drawn = if panel.bars {
                        let left = |x: f64| x - 0.4 + width * i as f64;
                        ctx.draw_series(series.points.iter().map(|&(x, y)| {
                            Rectangle::new(
                                [(left(x), $y_low), (left(x) + width, y)],
                                color.filled(),
                            )
                        }))?
                    } else {
                        ctx.draw_series(LineSeries::new(
                            series.points.iter().copied(),
                            color.stroke_width(2),
                        ))?
                    };
                    if index == 0 {
                        drawn.label(series.name.clone()).legend(move |(x, y)| {
                            PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                    }
                    // A dot on each point, so a series of one point shows.
                    if !panel.bars {
                        ctx.draw_series(
                            series
                                .points
                                .iter()
                                .map(|&point| Circle::new(point, 3, color.filled())),
                        )?;
                    }
                }
                if index == 0 {
                    ctx.configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK)
                        .position(SeriesLabelPosition::LowerLeft)
                        .draw()?;
                }
            }};
        }
        if panel.log_y {
            draw!((0.1..y_max * 1.5).log_scale(), 0.1, y_max * 1.5);
        } else {
            draw!(0.0..y_max * 1.1, 0.0, y_max * 1.1);
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_every_series_named() {
        let path = std::env::temp_dir().join(format!("harness-chart-{}.svg", std::process::id()));
        let series = |name: &str| Series {
            name: name.into(),
            points: vec![(-1.0, 5.0), (0.0, 1.0), (1.0, 4.0)],
        };
        let chart = Chart {
            x_desc: "seconds".into(),
            marker_x: Some(0.0),
            panels: vec![
                Panel {
                    caption: "ok per window".into(),
                    y_desc: "ok".into(),
                    log_y: false,
                    bars: false,
                    series: vec![series("kill"), series("panic")],
                },
                Panel {
                    caption: "p99".into(),
                    y_desc: "ms".into(),
                    log_y: true,
                    bars: true,
                    series: vec![series("kill"), series("panic")],
                },
            ],
        };
        write_svg(&path, &chart).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("<svg"));
        assert!(svg.contains("kill") && svg.contains("panic") && svg.contains("ok per window"));
    }
}
