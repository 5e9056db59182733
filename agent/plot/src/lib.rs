//! Charts for the WedSync Edge simulation report.
//!
//! A [`Chart`] is a set of time series ([`Series`]) plus annotations: vertical [`Marker`]s
//! (e.g. scaling decisions) and shaded [`Span`]s (e.g. a region outage or a wedding). This
//! crate draws it with [`plotters`] to an SVG file and a PNG file of 1000×500 pixels
//! ([`write()`]), or to memory ([`svg_string`], [`png_bytes`]).
//!
//! The PNG text is rasterised from a font embedded in the crate (DejaVu Sans, see
//! `fonts/LICENSE-DejaVu.txt`), registered with plotters' `ab_glyph` backend, so charts render
//! with their titles, axes and legends on machines without any system fonts, fontconfig or
//! freetype. The SVG names the generic `sans-serif` family and leaves the font to the viewer.
//!
//! Long series are thinned before drawing, keeping the minimum and the maximum of each bucket
//! of points, so spikes stay visible and an SVG of a few series of tens of thousands of points
//! stays small.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt::Display;
use std::fs;
use std::iter;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::coord::Shift;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Width of every chart, in pixels.
pub const WIDTH: u32 = 1000;
/// Height of every chart, in pixels.
pub const HEIGHT: u32 = 500;

/// The family the embedded font is registered under, and that the SVG names.
const FONT_FAMILY: &str = "sans-serif";
/// DejaVu Sans; its licence is `fonts/LICENSE-DejaVu.txt`.
static DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// Points drawn at most per solid or step series (before a step series is expanded).
const MAX_DRAWN_POINTS: usize = 4000;
/// Points drawn at most per dashed series: every dash is its own SVG element, so a long,
/// jagged dashed line would otherwise make a large file. Dashed lines are for baselines.
const MAX_DASHED_POINTS: usize = 600;
/// More markers than this are drawn without their labels, which would only overlap.
const MAX_LABELLED_MARKERS: usize = 30;

/// Series colours, in order; a chart with more series reuses them.
const PALETTE: [RGBColor; 8] = [
    RGBColor(214, 39, 40),   // red
    RGBColor(31, 119, 180),  // blue
    RGBColor(44, 160, 44),   // green
    RGBColor(255, 127, 14),  // orange
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(23, 190, 207),  // teal
];
/// Span shading colours, in order (drawn translucent).
const SPAN_PALETTE: [RGBColor; 3] = [RGBColor(255, 160, 0), RGBColor(120, 120, 120), RGBColor(70, 130, 180)];
/// Colour of the marker lines and their labels.
const MARKER_COLOR: RGBColor = RGBColor(190, 30, 45);
/// Colours of upward and downward ticks.
const TICK_UP: RGBColor = RGBColor(190, 30, 45);
const TICK_DOWN: RGBColor = RGBColor(31, 119, 180);
/// Colour of span labels.
const ANNOTATION_TEXT: RGBColor = RGBColor(60, 60, 60);

/// One line on a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name shown in the legend; an empty name leaves the series out of the legend.
    pub name: String,
    /// The `(x, y)` points. They need not be sorted: they are drawn in order of `x`.
    pub points: Vec<(f64, f64)>,
    /// How the line is drawn.
    pub style: LineStyle,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineStyle {
    /// A solid line through the points.
    #[default]
    Solid,
    /// A dashed line through the points, for baselines.
    Dashed,
    /// A staircase: each value holds until the next point (and the last one to the right
    /// edge of the chart), for capacity.
    Step,
}

/// A vertical marker at `x` (e.g. a scaling decision), with a short label (may be empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where the marker stands on the x axis.
    pub x: f64,
    /// Short text drawn along the top of the marker; empty for none.
    pub label: String,
}

/// A shaded x-interval (e.g. a region outage or a wedding), with a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Start of the interval on the x axis.
    pub from: f64,
    /// End of the interval on the x axis (may be given before `from`; the two are ordered).
    pub to: f64,
    /// Text drawn at the top left of the shaded area; empty for none.
    pub label: String,
}

/// A chart: title, axis labels, series and annotations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Title drawn above the plot.
    pub title: String,
    /// Label of the x axis, e.g. "minutes since start".
    pub x_label: String,
    /// Label of the y axis, e.g. "requests/s".
    pub y_label: String,
    /// Draw the y axis on a logarithmic scale (for latencies). Points with `y <= 0` are then
    /// left out.
    pub log_y: bool,
    /// The lines, drawn in order with the colours of a fixed palette.
    pub series: Vec<Series>,
    /// Vertical markers; those outside the x range of the series are not drawn.
    pub markers: Vec<Marker>,
    /// Shaded intervals, clipped to the x range of the series.
    pub spans: Vec<Span>,
    /// Small up or down triangles along the bottom of the plot (e.g. each scaling decision):
    /// unlike markers, hundreds of them in a burst stay readable.
    pub ticks: Vec<Tick>,
}

/// A small triangle on the x axis at `x`, pointing up or down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// Where it stands on the x axis.
    pub x: f64,
    /// Points up (true) or down.
    pub up: bool,
}

/// Why a chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The chart has no series, or none of its series has a point.
    #[error("chart {title:?} has no data points")]
    Empty {
        /// Title of the chart.
        title: String,
    },
    /// A series has a NaN or infinite coordinate.
    #[error("series {series:?} has a non-finite point at index {index}: ({x}, {y})")]
    NonFinite {
        /// Name of the series.
        series: String,
        /// Index of the point in [`Series::points`].
        index: usize,
        /// The point's x.
        x: f64,
        /// The point's y.
        y: f64,
    },
    /// A marker or a span has a NaN or infinite x coordinate.
    #[error("{what} has a non-finite x coordinate")]
    NonFiniteAnnotation {
        /// Which annotation, e.g. `marker "scale up"`.
        what: String,
    },
    /// The chart has a logarithmic y axis but no point with a positive y, so nothing could be
    /// drawn on it.
    #[error("chart {title:?} has a logarithmic y axis but no point with y > 0 to draw")]
    NoPositiveValues {
        /// Title of the chart.
        title: String,
    },
    /// The plotters drawing backend failed.
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    /// Encoding the PNG failed.
    #[error("encoding the PNG failed: {0}")]
    Encode(String),
    /// The embedded font could not be registered with plotters.
    #[error("registering the embedded font failed: {0}")]
    Font(String),
    /// Writing an output file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Writes `chart` to `<stem>.svg` and `<stem>.png` (stem is a path without extension); returns
/// both paths, SVG first.
///
/// The extensions are appended, so a stem such as `out/latency.eu` gives `out/latency.eu.svg`.
/// The parent directory must exist.
pub fn write(chart: &Chart, stem: &Path) -> Result<(PathBuf, PathBuf), PlotError> {
    let svg = with_suffix(stem, ".svg");
    let png = with_suffix(stem, ".png");
    write_svg(chart, &svg)?;
    write_png(chart, &png)?;
    Ok((svg, png))
}

/// Writes `chart` as an SVG document of [`WIDTH`]×[`HEIGHT`] to `path`.
pub fn write_svg(chart: &Chart, path: &Path) -> Result<(), PlotError> {
    let svg = svg_string(chart)?;
    fs::write(path, svg).map_err(|source| PlotError::Io { path: path.to_path_buf(), source })
}

/// Writes `chart` as a PNG image of [`WIDTH`]×[`HEIGHT`] to `path` (whatever its extension).
pub fn write_png(chart: &Chart, path: &Path) -> Result<(), PlotError> {
    let png = png_bytes(chart)?;
    fs::write(path, png).map_err(|source| PlotError::Io { path: path.to_path_buf(), source })
}

/// Draws into an in-memory SVG string (for tests and for embedding).
pub fn svg_string(chart: &Chart) -> Result<String, PlotError> {
    ensure_font()?;
    let prepared = prepare(chart)?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        render(&root, &prepared, false)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

/// Draws into an in-memory PNG file (for embedding, e.g. in an HTML report).
pub fn png_bytes(chart: &Chart) -> Result<Vec<u8>, PlotError> {
    ensure_font()?;
    let prepared = prepare(chart)?;
    let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        render(&root, &prepared, true)?;
        root.present().map_err(draw_err)?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&rgb, WIDTH, HEIGHT, image::ColorType::Rgb8)
        .map_err(|e| PlotError::Encode(e.to_string()))?;
    Ok(png)
}

/// Registers the embedded font with plotters, once per process; later calls return the first
/// call's outcome.
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "the embedded DejaVu Sans is not a font ab_glyph can read".to_owned())
        })
        .clone()
        .map_err(PlotError::Font)
}

fn draw_err<E: Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A validated chart with its axis ranges and the points to draw.
struct Prepared<'a> {
    chart: &'a Chart,
    /// Per series, the points to draw: sorted, filtered for the log axis, thinned and, for
    /// step series, expanded to a staircase.
    drawn: Vec<Vec<(f64, f64)>>,
    x: (f64, f64),
    y: (f64, f64),
}

fn prepare(chart: &Chart) -> Result<Prepared<'_>, PlotError> {
    for s in &chart.series {
        if let Some((index, &(x, y))) = s.points.iter().enumerate().find(|(_, (x, y))| !x.is_finite() || !y.is_finite())
        {
            return Err(PlotError::NonFinite { series: s.name.clone(), index, x, y });
        }
    }
    if let Some(m) = chart.markers.iter().find(|m| !m.x.is_finite()) {
        return Err(PlotError::NonFiniteAnnotation { what: format!("marker {:?}", m.label) });
    }
    if chart.ticks.iter().any(|t| !t.x.is_finite()) {
        return Err(PlotError::NonFiniteAnnotation { what: "a tick".to_owned() });
    }
    if let Some(s) = chart.spans.iter().find(|s| !s.from.is_finite() || !s.to.is_finite()) {
        return Err(PlotError::NonFiniteAnnotation { what: format!("span {:?}", s.label) });
    }

    let all_points = || chart.series.iter().flat_map(|s| s.points.iter().copied());
    let Some(x) = min_max(all_points().map(|(x, _)| x)) else {
        return Err(PlotError::Empty { title: chart.title.clone() });
    };
    let x = widen_if_flat(x);

    let usable: Vec<Vec<(f64, f64)>> = chart
        .series
        .iter()
        .map(|s| {
            let mut points: Vec<(f64, f64)> =
                s.points.iter().copied().filter(|&(_, y)| !chart.log_y || y > 0.0).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        })
        .collect();
    let Some((y_min, y_max)) = min_max(usable.iter().flatten().map(|&(_, y)| y)) else {
        return Err(PlotError::NoPositiveValues { title: chart.title.clone() });
    };
    let y = if chart.log_y {
        (y_min / 2.0, finite(y_max * 1.6))
    } else {
        let (lo, hi) = (y_min.min(0.0), y_max.max(0.0));
        let room = finite(hi - lo) * 0.08;
        match (lo < 0.0, hi > 0.0) {
            (false, false) => (0.0, 1.0),
            (neg, pos) => (if neg { finite(lo - room) } else { lo }, if pos { finite(hi + room) } else { hi }),
        }
    };

    let drawn = chart
        .series
        .iter()
        .zip(&usable)
        .map(|(s, points)| match s.style {
            LineStyle::Solid => downsample(points, MAX_DRAWN_POINTS),
            LineStyle::Dashed => downsample(points, MAX_DASHED_POINTS),
            LineStyle::Step => staircase(&downsample(points, MAX_DRAWN_POINTS), x.1),
        })
        .collect();
    Ok(Prepared { chart, drawn, x, y })
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Gives a zero-width range some width, so a single x value still makes an axis.
fn widen_if_flat((lo, hi): (f64, f64)) -> (f64, f64) {
    if hi > lo {
        return (lo, hi);
    }
    let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
    (lo - pad, hi + pad)
}

/// Clamps an overflowed bound back into the finite range.
fn finite(v: f64) -> f64 {
    v.clamp(f64::MIN, f64::MAX)
}

/// Thins `points` to at most `max_points`, keeping the first and the last point and, of each
/// bucket of consecutive points in between, the lowest and the highest (in their order), so
/// a lone spike survives. Returns the points unchanged when there are no more than
/// `max_points`.
fn downsample(points: &[(f64, f64)], max_points: usize) -> Vec<(f64, f64)> {
    let (Some(&first), Some(&last)) = (points.first(), points.last()) else {
        return Vec::new();
    };
    if points.len() <= max_points || max_points < 4 {
        return points.to_vec();
    }
    let inner = &points[1..points.len() - 1];
    let buckets = (max_points - 2) / 2;
    let bucket_len = inner.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max_points);
    out.push(first);
    for bucket in inner.chunks(bucket_len) {
        let (mut lo, mut hi) = (0, 0);
        for (i, p) in bucket.iter().enumerate() {
            if p.1 < bucket[lo].1 {
                lo = i;
            }
            if p.1 > bucket[hi].1 {
                hi = i;
            }
        }
        out.push(bucket[lo.min(hi)]);
        if lo != hi {
            out.push(bucket[lo.max(hi)]);
        }
    }
    out.push(last);
    out
}

/// Turns points (sorted by x) into a staircase: each y holds until the next point's x, and the
/// last one until `x_end`.
fn staircase(points: &[(f64, f64)], x_end: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2 + 1);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            let prev_y = out.last().map_or(y, |&(_, py): &(f64, f64)| py);
            out.push((x, prev_y));
        }
        out.push((x, y));
    }
    if let Some(&(x, y)) = out.last()
        && x < x_end
    {
        out.push((x_end, y));
    }
    out
}

/// Formats an axis tick value compactly: `0`, `12000`, `2.5`, `0.004`, `1.5e7`.
fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".to_owned();
    }
    if !(1e-3..1e7).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = if a >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}") };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// Draws the chart onto `root`. `segmented` draws solid lines as separate two-point segments:
/// the bitmap backend joins thick polylines with unbounded inner miters, which paint long
/// stray spikes at sharp turns (a lone spike in the data); the SVG viewer joins them properly.
fn render<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    p: &Prepared<'_>,
    segmented: bool,
) -> Result<(), PlotError> {
    root.fill(&WHITE).map_err(draw_err)?;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(&p.chart.title, (FONT_FAMILY, 22).into_font().color(&BLACK))
        .margin(14)
        .x_label_area_size(50)
        .y_label_area_size(78);
    let x_range = p.x.0..p.x.1;
    if p.chart.log_y {
        let ctx = builder.build_cartesian_2d(x_range, (p.y.0..p.y.1).log_scale()).map_err(draw_err)?;
        draw_body(ctx, p, segmented)
    } else {
        let ctx = builder.build_cartesian_2d(x_range, p.y.0..p.y.1).map_err(draw_err)?;
        draw_body(ctx, p, segmented)
    }
}

fn draw_body<'a, DB, Y>(
    mut ctx: ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    p: &Prepared<'_>,
    segmented: bool,
) -> Result<(), PlotError>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let (x0, x1) = p.x;
    let (y0, y1) = p.y;

    ctx.configure_mesh()
        .x_desc(p.chart.x_label.as_str())
        .y_desc(p.chart.y_label.as_str())
        .axis_desc_style((FONT_FAMILY, 16))
        .label_style((FONT_FAMILY, 13))
        .x_labels(10)
        .y_labels(8)
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()
        .map_err(draw_err)?;

    // Spans first, so the lines are drawn over them.
    for (i, span) in p.chart.spans.iter().enumerate() {
        let (from, to) = (span.from.min(span.to).max(x0), span.from.max(span.to).min(x1));
        if from > to {
            continue;
        }
        let color = SPAN_PALETTE[i % SPAN_PALETTE.len()];
        ctx.draw_series(iter::once(Rectangle::new([(from, y0), (to, y1)], color.mix(0.18).filled())))
            .map_err(draw_err)?;
        if !span.label.is_empty() {
            let style = (FONT_FAMILY, 13).into_font().color(&ANNOTATION_TEXT);
            ctx.draw_series(iter::once(EmptyElement::at((from, y1)) + Text::new(span.label.clone(), (4, 4), style)))
                .map_err(draw_err)?;
        }
    }

    for (i, (series, points)) in p.chart.series.iter().zip(&p.drawn).enumerate() {
        let style = PALETTE[i % PALETTE.len()].stroke_width(2);
        if let [only] = points.as_slice() {
            // A line needs two points; show a lone one as a dot.
            ctx.draw_series(iter::once(Circle::new(*only, 3, style.filled()))).map_err(draw_err)?;
        }
        let points_vec = points;
        let points = points.iter().copied();
        if series.style == LineStyle::Dashed {
            let anno = ctx.draw_series(DashedLineSeries::new(points, 8, 5, style)).map_err(draw_err)?;
            if !series.name.is_empty() {
                anno.label(series.name.as_str())
                    .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, style));
            }
        } else {
            let anno = if segmented {
                let segments = points_vec.windows(2).map(|w| PathElement::new(w.to_vec(), style));
                ctx.draw_series(segments).map_err(draw_err)?
            } else {
                ctx.draw_series(LineSeries::new(points, style)).map_err(draw_err)?
            };
            if !series.name.is_empty() {
                anno.label(series.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
        }
    }

    let label_markers = p.chart.markers.len() <= MAX_LABELLED_MARKERS;
    for marker in p.chart.markers.iter().filter(|m| m.x >= x0 && m.x <= x1) {
        ctx.draw_series(iter::once(PathElement::new(vec![(marker.x, y0), (marker.x, y1)], MARKER_COLOR.mix(0.6))))
            .map_err(draw_err)?;
        if label_markers && !marker.label.is_empty() {
            let style = (FONT_FAMILY, 12).into_font().transform(FontTransform::Rotate90).color(&MARKER_COLOR);
            ctx.draw_series(iter::once(
                EmptyElement::at((marker.x, y1)) + Text::new(marker.label.clone(), (-4, 6), style),
            ))
            .map_err(draw_err)?;
        }
    }

    for tick in p.chart.ticks.iter().filter(|t| t.x >= x0 && t.x <= x1) {
        // Pixel offsets from the foot of the plot (y grows downwards).
        let (shape, color) = if tick.up {
            (vec![(-4, -1), (4, -1), (0, -9)], TICK_UP)
        } else {
            (vec![(-4, -9), (4, -9), (0, -1)], TICK_DOWN)
        };
        ctx.draw_series(iter::once(EmptyElement::at((tick.x, y0)) + Polygon::new(shape, color.mix(0.75).filled())))
            .map_err(draw_err)?;
    }

    if p.chart.series.iter().any(|s| !s.name.is_empty()) {
        ctx.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font((FONT_FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.35))
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    fn series(name: &str, style: LineStyle, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.to_owned(), points, style }
    }

    fn two_series_chart() -> Chart {
        Chart {
            title: "Requests during the Saturday peak".to_owned(),
            x_label: "minutes since start".to_owned(),
            y_label: "requests/s".to_owned(),
            log_y: false,
            series: vec![
                series(
                    "eu-west demand",
                    LineStyle::Solid,
                    (0..=120).map(|m| (m as f64, 200.0 + 150.0 * (m as f64 / 15.0).sin())).collect(),
                ),
                series("capacity", LineStyle::Step, vec![(0.0, 300.0), (30.0, 450.0), (75.0, 380.0)]),
                series("baseline", LineStyle::Dashed, vec![(0.0, 220.0), (120.0, 220.0)]),
            ],
            markers: vec![
                Marker { x: 30.0, label: "scale up to 6".to_owned() },
                Marker { x: 75.0, label: "scale down to 5".to_owned() },
            ],
            spans: vec![Span { from: 40.0, to: 60.0, label: "eu-west outage".to_owned() }],
            ticks: vec![Tick { x: 30.0, up: true }, Tick { x: 75.0, up: false }],
        }
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("wedsync-plot-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn svg_has_title_series_names_axis_labels_and_annotations() {
        let svg = svg_string(&two_series_chart()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in [
            "Requests during the Saturday peak",
            "eu-west demand",
            "capacity",
            "baseline",
            "minutes since start",
            "requests/s",
            "scale up to 6",
            "scale down to 5",
            "eu-west outage",
        ] {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
        assert!(svg.contains("<polyline"), "no line drawn");
        assert!(svg.contains("font-family=\"sans-serif\""));
    }

    #[test]
    fn svg_text_is_escaped() {
        let mut chart = two_series_chart();
        chart.title = "p99 < 200ms & rising".to_owned();
        let svg = svg_string(&chart).unwrap();
        assert!(svg.contains("p99 &lt; 200ms &amp; rising"));
    }

    #[test]
    fn write_creates_svg_and_png_of_the_right_size_with_lines() {
        let dir = TempDir::new();
        let (svg_path, png_path) = write(&two_series_chart(), &dir.0.join("peak.eu")).unwrap();
        assert_eq!(svg_path, dir.0.join("peak.eu.svg"));
        assert_eq!(png_path, dir.0.join("peak.eu.png"));
        assert!(fs::read_to_string(&svg_path).unwrap().contains("eu-west demand"));

        let png = fs::read(&png_path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let first = *img.get_pixel(0, 0);
        let differing = img.pixels().filter(|&&p| p != first).count();
        assert!(differing > 5_000, "only {differing} pixels differ from the background");
        // The first series' red is on the image.
        let red = img.pixels().filter(|p| p.0 == [214, 39, 40]).count();
        assert!(red > 100, "only {red} pixels of the first series' colour");
    }

    #[test]
    fn png_renders_text_with_the_embedded_font() {
        let mut chart = two_series_chart();
        let with_title = image::load_from_memory(&png_bytes(&chart).unwrap()).unwrap().to_rgb8();
        chart.title = String::new();
        let without = image::load_from_memory(&png_bytes(&chart).unwrap()).unwrap().to_rgb8();
        // The caption is the only difference, in the top band of the image; its glyphs are dark.
        let dark_in_band = |img: &image::RgbImage| {
            (0..WIDTH)
                .flat_map(|x| (0..30).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0[0] < 100)
                .count()
        };
        assert!(dark_in_band(&with_title) > 200, "the title drew {} dark pixels", dark_in_band(&with_title));
        assert_eq!(dark_in_band(&without), 0);
    }

    #[test]
    fn empty_charts_are_errors() {
        let chart = Chart { title: "nothing".to_owned(), ..Chart::default() };
        assert!(matches!(svg_string(&chart), Err(PlotError::Empty { ref title }) if title == "nothing"));
        let chart = Chart {
            series: vec![series("a", LineStyle::Solid, vec![]), series("b", LineStyle::Step, vec![])],
            ..Chart::default()
        };
        assert!(matches!(svg_string(&chart), Err(PlotError::Empty { .. })));
        assert!(matches!(png_bytes(&chart), Err(PlotError::Empty { .. })));
    }

    #[test]
    fn non_finite_points_name_the_series() {
        let mut chart = two_series_chart();
        chart.series[1].points.push((80.0, f64::NAN));
        let err = svg_string(&chart).unwrap_err();
        assert!(matches!(err, PlotError::NonFinite { ref series, index: 3, .. } if series == "capacity"), "{err:?}");
        assert!(err.to_string().contains("\"capacity\""), "{err}");

        let mut chart = two_series_chart();
        chart.series[0].points[5].0 = f64::INFINITY;
        assert!(
            matches!(png_bytes(&chart), Err(PlotError::NonFinite { ref series, index: 5, .. }) if series == "eu-west demand")
        );

        let mut chart = two_series_chart();
        chart.markers.push(Marker { x: f64::NAN, label: "bad".to_owned() });
        let err = svg_string(&chart).unwrap_err();
        assert!(matches!(err, PlotError::NonFiniteAnnotation { .. }) && err.to_string().contains("bad"), "{err}");

        let mut chart = two_series_chart();
        chart.ticks.push(Tick { x: f64::INFINITY, up: false });
        let err = png_bytes(&chart).unwrap_err();
        assert!(matches!(err, PlotError::NonFiniteAnnotation { .. }) && err.to_string().contains("tick"), "{err}");
    }

    #[test]
    fn log_axis_without_positive_values_is_a_clear_error() {
        let chart = Chart {
            title: "p99 latency".to_owned(),
            log_y: true,
            series: vec![series("p99", LineStyle::Solid, vec![(0.0, 0.0), (1.0, -3.0)])],
            ..Chart::default()
        };
        let err = svg_string(&chart).unwrap_err();
        assert!(matches!(err, PlotError::NoPositiveValues { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("logarithmic") && msg.contains("p99 latency"), "{msg}");
    }

    #[test]
    fn log_axis_drops_non_positive_points_and_draws_the_rest() {
        let chart = Chart {
            title: "p99 latency".to_owned(),
            x_label: "minutes since start".to_owned(),
            y_label: "ms".to_owned(),
            log_y: true,
            series: vec![
                series("p99", LineStyle::Solid, vec![(0.0, 0.0), (1.0, 12.0), (2.0, 400.0), (3.0, 35.0)]),
                series("p50", LineStyle::Solid, vec![(0.0, -1.0)]),
            ],
            ..Chart::default()
        };
        let p = prepare(&chart).unwrap();
        assert_eq!(p.drawn[0], vec![(1.0, 12.0), (2.0, 400.0), (3.0, 35.0)]);
        assert!(p.drawn[1].is_empty());
        assert_eq!(p.y.0, 6.0);
        assert!(p.y.1 > 400.0);
        assert_eq!(p.x, (0.0, 3.0));
        assert!(svg_string(&chart).unwrap().contains("p99"));
        assert!(png_bytes(&chart).is_ok());
    }

    #[test]
    fn linear_axis_starts_at_zero_with_headroom() {
        let chart = two_series_chart();
        let p = prepare(&chart).unwrap();
        assert_eq!(p.x, (0.0, 120.0));
        assert_eq!(p.y.0, 0.0);
        assert!(p.y.1 > 450.0 && p.y.1 < 520.0, "{:?}", p.y);
    }

    #[test]
    fn downsample_keeps_a_lone_spike() {
        let mut points: Vec<(f64, f64)> = (0..20_000).map(|i| (i as f64, 10.0)).collect();
        points[12_345].1 = 987.0;
        let drawn = downsample(&points, MAX_DRAWN_POINTS);
        assert!(drawn.len() <= MAX_DRAWN_POINTS, "{}", drawn.len());
        assert!(drawn.contains(&(12_345.0, 987.0)));
        assert_eq!(drawn.first(), Some(&(0.0, 10.0)));
        assert_eq!(drawn.last(), Some(&(19_999.0, 10.0)));
        assert!(drawn.windows(2).all(|w| w[0].0 < w[1].0), "order kept");

        // And a dip, through the whole pipeline.
        points[12_345].1 = 10.0;
        points[777].1 = -50.0;
        let chart = Chart { series: vec![series("s", LineStyle::Step, points)], ..Chart::default() };
        let p = prepare(&chart).unwrap();
        assert!(p.drawn[0].contains(&(777.0, -50.0)));
        assert!(p.y.0 < -50.0);
    }

    #[test]
    fn downsample_leaves_short_series_alone() {
        let points: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, (i * i) as f64)).collect();
        assert_eq!(downsample(&points, MAX_DRAWN_POINTS), points);
        assert!(downsample(&[], 10).is_empty());
    }

    #[test]
    fn step_series_hold_their_value_until_the_next_point() {
        assert_eq!(
            staircase(&[(0.0, 3.0), (10.0, 5.0), (20.0, 4.0)], 30.0),
            vec![(0.0, 3.0), (10.0, 3.0), (10.0, 5.0), (20.0, 5.0), (20.0, 4.0), (30.0, 4.0)]
        );
        assert_eq!(staircase(&[(0.0, 3.0)], 0.0), vec![(0.0, 3.0)]);
    }

    #[test]
    fn points_are_drawn_in_x_order() {
        let chart = Chart {
            series: vec![series("s", LineStyle::Solid, vec![(2.0, 1.0), (0.0, 5.0), (1.0, 3.0)])],
            ..Chart::default()
        };
        assert_eq!(prepare(&chart).unwrap().drawn[0], vec![(0.0, 5.0), (1.0, 3.0), (2.0, 1.0)]);
    }

    #[test]
    fn svg_of_four_long_series_stays_small() {
        // Jagged data is the worst case for the thinning (and for the dashed line).
        let noisy = |seed: u64, scale: f64| -> Vec<(f64, f64)> {
            let mut state = seed;
            (0..20_000)
                .map(|i| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (i as f64 * 0.01, scale * ((state >> 33) as f64 / (1u64 << 31) as f64))
                })
                .collect()
        };
        let chart = Chart {
            title: "four long series".to_owned(),
            x_label: "minutes since start".to_owned(),
            y_label: "requests/s".to_owned(),
            log_y: false,
            series: vec![
                series("a", LineStyle::Solid, noisy(1, 1000.0)),
                series("b", LineStyle::Solid, noisy(2, 800.0)),
                series("c", LineStyle::Step, noisy(3, 600.0)),
                series("d", LineStyle::Dashed, noisy(4, 400.0)),
            ],
            markers: (0..50).map(|i| Marker { x: i as f64 * 4.0, label: format!("decision {i}") }).collect(),
            spans: vec![Span { from: 50.0, to: 80.0, label: "wedding".to_owned() }],
            ticks: (0..400).map(|i| Tick { x: f64::from(i) * 0.5, up: i % 3 != 0 }).collect(),
        };
        let svg = svg_string(&chart).unwrap();
        assert!(svg.len() < 1_500_000, "SVG is {} bytes", svg.len());
        // More than 30 markers: lines but no labels.
        assert!(!svg.contains("decision 7"));
        assert!(svg.contains("wedding"));
        assert!(png_bytes(&chart).is_ok());
    }

    #[test]
    fn write_png_into_a_missing_directory_is_an_io_error() {
        let dir = TempDir::new();
        let path = dir.0.join("missing").join("chart.png");
        let err = write_png(&two_series_chart(), &path).unwrap_err();
        assert!(matches!(err, PlotError::Io { path: ref p, .. } if *p == path), "{err:?}");
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(12000.0), "12000");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(40.0), "40");
        assert_eq!(fmt_tick(0.004), "0.004");
        assert_eq!(fmt_tick(15_000_000.0), "1.5e7");
    }
}
