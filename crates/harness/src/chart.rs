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
    /// A logarithmic x axis (sizes that grow by factors); with a log y
    /// axis, a log-log chart. Points at x <= 0 are not drawn then.
    pub log_x: bool,
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
    let xs = || {
        all()
            .map(|p| p.0)
            .chain(chart.marker_x)
            .filter(|&x| !chart.log_x || x > 0.0)
    };
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
    let (x_min, x_max) = match (low.is_finite(), chart.log_x) {
        // On a log axis the margin is a factor.
        (true, true) => (low / 1.3, high * 1.3),
        (true, false) => (low - margin, high + margin),
        (false, true) => (1.0, 10.0),
        (false, false) => (0.0, 1.0),
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
        // A log y axis starts at 0.1, or lower when a point is lower.
        let y_floor = panel
            .series
            .iter()
            .flat_map(|s| &s.points)
            .map(|p| p.1)
            .filter(|&y| y > 0.0)
            .fold(0.1, |low: f64, y| low.min(y / 1.5));
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(&panel.caption, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50);
        // The two axis kinds are different types in plotters, hence a macro.
        macro_rules! draw {
            ($x_range:expr, $y_range:expr, $y_low:expr, $y_high:expr) => {{
                let mut ctx = builder.build_cartesian_2d($x_range, $y_range)?;
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
                    let points: Vec<(f64, f64)> = series
                        .points
                        .iter()
                        .copied()
                        .filter(|&(x, _)| !chart.log_x || x > 0.0)
                        .collect();
                    let drawn = if panel.bars {
                        let left = |x: f64| x - 0.4 + width * i as f64;
                        ctx.draw_series(points.iter().map(|&(x, y)| {
                            Rectangle::new(
                                [(left(x), $y_low), (left(x) + width, y)],
                                color.filled(),
                            )
                        }))?
                    } else {
                        ctx.draw_series(LineSeries::new(
                            points.iter().copied(),
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
                            points
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
        let (y_log, y_high) = ((y_floor..y_max * 1.5).log_scale(), y_max * 1.5);
        match (chart.log_x, panel.log_y) {
            (false, true) => draw!(x_min..x_max, y_log, y_floor, y_high),
            (false, false) => draw!(x_min..x_max, 0.0..y_max * 1.1, 0.0, y_max * 1.1),
            (true, true) => draw!((x_min..x_max).log_scale(), y_log, y_floor, y_high),
            (true, false) => draw!(
                (x_min..x_max).log_scale(),
                0.0..y_max * 1.1,
                0.0,
                y_max * 1.1
            ),
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
            log_x: false,
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

    #[test]
    fn a_log_log_chart_spans_decades_and_skips_what_it_cannot_place() {
        let path = std::env::temp_dir().join(format!("harness-loglog-{}.svg", std::process::id()));
        let chart = Chart {
            x_desc: "bytes".into(),
            log_x: true,
            marker_x: None,
            panels: vec![Panel {
                caption: "time per message".into(),
                y_desc: "µs".into(),
                log_y: true,
                bars: false,
                series: vec![Series {
                    name: "pipe".into(),
                    // x = 0 has no place on a log axis: left out, not an error.
                    points: vec![(0.0, 1.0), (64.0, 0.02), (16.0 * 1048576.0, 9000.0)],
                }],
            }],
        };
        write_svg(&path, &chart).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(svg.contains("<svg") && svg.contains("pipe"));
        // Decades along x (a linear axis to 16 Mi would tick in millions,
        // and the y axis stops short of 100000).
        assert!(
            svg.contains("100000.0") && svg.contains("10000000.0"),
            "{svg}"
        );
    }
}
