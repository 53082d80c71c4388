//! PNG charts for digests (daily uptime and cost), rendered in-process.
//!
//! Why the font is bundled: the bot runs in slim containers that have no fonts and no
//! fontconfig, and plotters' default `ttf` feature would link fontconfig/freetype and look
//! fonts up on the system at run time, so a missing package would turn into a missing chart.
//! Instead DejaVu Sans (`assets/fonts/DejaVuSans.ttf`, Bitstream Vera / Arev license, see
//! `assets/fonts/LICENSE-DejaVu.txt`) is compiled in with `include_bytes!` and rasterised by
//! plotters' pure-Rust `ab_glyph` backend: the same pixels on every machine.
//!
//! The PNG is encoded in memory with the `png` crate: plotters' own encoder only writes
//! files and would pull in the whole `image` crate.

use std::sync::OnceLock;

use chrono::{Duration, NaiveDate};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

/// One value per day, e.g. uptime in % or cost in EUR.
#[derive(Debug, Clone, PartialEq)]
pub struct DailySeries {
    /// Shown as the panel title, e.g. "Uptime".
    pub label: String,
    /// Shown on the y axis, e.g. "%" or "EUR".
    pub unit: String,
    /// Days in any order; points whose value is not finite are left out.
    pub points: Vec<(NaiveDate, f64)>,
}

/// The uptime panel: one line per environment, and the SLO they are held to.
#[derive(Debug, Clone, PartialEq)]
pub struct UptimePanel {
    /// Shown as the panel title.
    pub label: String,
    /// One per environment; each line's label names it in the legend.
    pub lines: Vec<DailySeries>,
    /// Drawn as a horizontal line in [`SLO_COLOR`] across the whole panel.
    pub slo_percent: f64,
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
/// plotters asks for fonts by family name; its own labels use "sans-serif".
const FAMILY: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// Environments' lines, in order; none is close to the SLO's red or the cost's orange.
const LINE_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
/// The SLO line.
pub const SLO_COLOR: RGBColor = RGBColor(214, 39, 40);
const COST_COLOR: RGBColor = RGBColor(230, 126, 34);
const GRID_COLOR: RGBColor = RGBColor(225, 225, 225);
/// The uptime axis shows at least 95-100 %, so a day at 99.5 % is not drawn as a cliff.
const UPTIME_FLOOR: f64 = 95.0;

/// Renders the digest chart as PNG bytes: uptime per day, one line per environment with
/// the SLO as a red line across (y axis from min(95, lowest day, SLO) to 100), above cost
/// per day (bars from zero). An empty panel says "no data" instead of failing, so a new
/// service still gets a digest.
pub fn digest_chart(
    title: &str,
    uptime: &UptimePanel,
    cost: &DailySeries,
) -> Result<Vec<u8>, String> {
    ensure_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let body = root.titled(title, (FAMILY, 24)).map_err(draw_error)?;
        let (top, bottom) = body.split_vertically(HEIGHT.saturating_sub(40) / 2);
        draw_uptime(&top, uptime)?;
        draw_cost(&bottom, cost)?;
        root.present().map_err(draw_error)?;
    }
    encode_png(&pixels)
}

/// Registers the bundled font once per process; later calls return the first outcome.
fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the bundled chart font could not be loaded".to_string())
        })
        .clone()
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("drawing the digest chart failed: {e}")
}

/// The finite points of a series, oldest first.
fn clean_points(series: &DailySeries) -> Vec<(NaiveDate, f64)> {
    let mut points: Vec<_> = series
        .points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    points.sort_by_key(|(day, _)| *day);
    points
}

/// Days are plotted as offsets from the first day, half a day of margin on each side so
/// a single day still gets a non-empty axis and bars are not cut in half.
struct DayAxis {
    first: NaiveDate,
    range: std::ops::Range<f64>,
}

impl DayAxis {
    fn new(points: &[(NaiveDate, f64)]) -> Option<DayAxis> {
        let first = points.first()?.0;
        let last = points.last()?.0;
        let span = (last - first).num_days() as f64;
        Some(DayAxis {
            first,
            range: -0.5..span + 0.5,
        })
    }

    fn x(&self, day: NaiveDate) -> f64 {
        (day - self.first).num_days() as f64
    }

    /// A date for whole-day ticks, nothing for the in-between ticks plotters may choose.
    fn label(&self, x: &f64) -> String {
        let rounded = x.round();
        if (x - rounded).abs() > 1e-6 {
            return String::new();
        }
        Duration::try_days(rounded as i64)
            .and_then(|offset| self.first.checked_add_signed(offset))
            .map(|day| day.format("%b %d").to_string())
            .unwrap_or_default()
    }

    /// At most eight ticks, fewer for short series so ticks stay on whole days.
    fn tick_count(&self) -> usize {
        ((self.range.end - self.range.start) as usize).clamp(1, 8)
    }
}

/// The y range of the uptime panel: min(95, lowest, a point under the SLO) to 100,
/// widened if data exceeds 100.
fn uptime_range(points: &[(NaiveDate, f64)], slo: f64) -> std::ops::Range<f64> {
    let lowest = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let highest = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let low = lowest.floor().min(UPTIME_FLOOR).min((slo - 1.0).floor());
    let high = highest.ceil().max(100.0);
    low..high
}

/// The y range of the cost panel: from zero (or the lowest credit) with headroom on top.
fn cost_range(points: &[(NaiveDate, f64)]) -> std::ops::Range<f64> {
    let lowest = points.iter().map(|p| p.1).fold(0.0, f64::min);
    let highest = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let high = if highest > 0.0 { highest * 1.15 } else { 0.0 };
    // Both are zero only when every value is zero: give the axis a unit of height.
    if high <= lowest {
        lowest..lowest + 1.0
    } else {
        lowest..high
    }
}

fn axis_label(series: &DailySeries) -> String {
    if series.unit.is_empty() {
        series.label.clone()
    } else {
        series.unit.clone()
    }
}

/// Draws the panel title and a centred "no data" note.
fn draw_no_data(area: &DrawingArea<BitMapBackend<'_>, Shift>, label: &str) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let caption = area.titled(label, (FAMILY, 18)).map_err(draw_error)?;
    let style = TextStyle::from((FAMILY, 16).into_font())
        .color(&RGBColor(120, 120, 120))
        .pos(Pos::new(HPos::Center, VPos::Center));
    let (x, y) = ((w / 2) as i32, (h / 2) as i32 - 20);
    caption
        .draw_text("no data", &style, (x, y))
        .map_err(draw_error)
}

/// Days as x values and the mesh both panels share.
fn mesh<'a, 'b: 'a>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    label: &str,
    unit: String,
    axis: &DayAxis,
    y_range: std::ops::Range<f64>,
    decimals: usize,
) -> Result<
    ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    String,
> {
    let mut chart = ChartBuilder::on(area)
        .caption(label, (FAMILY, 18))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(axis.range.clone(), y_range)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_labels(axis.tick_count())
        .x_label_formatter(&|x| axis.label(x))
        .y_labels(6)
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .y_desc(unit)
        .label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(WHITE)
        .bold_line_style(GRID_COLOR)
        .draw()
        .map_err(draw_error)?;
    Ok(chart)
}

/// Each environment's line (with points), then the SLO across the panel, and a legend.
fn draw_uptime(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    panel: &UptimePanel,
) -> Result<(), String> {
    let lines: Vec<(&str, Vec<(NaiveDate, f64)>)> = panel
        .lines
        .iter()
        .map(|l| (l.label.as_str(), clean_points(l)))
        .collect();
    let mut all: Vec<(NaiveDate, f64)> = lines.iter().flat_map(|l| l.1.clone()).collect();
    all.sort_by_key(|(day, _)| *day);
    let Some(axis) = DayAxis::new(&all) else {
        return draw_no_data(area, &panel.label);
    };
    let range = uptime_range(&all, panel.slo_percent);
    let mut chart = mesh(area, &panel.label, "%".into(), &axis, range, 1)?;
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = LINE_COLORS[i % LINE_COLORS.len()];
        let line = points.iter().map(|(day, v)| (axis.x(*day), *v));
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(2)).point_size(3))
            .map_err(draw_error)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    let slo = panel.slo_percent;
    let across = [(axis.range.start, slo), (axis.range.end, slo)];
    chart
        .draw_series(LineSeries::new(across, SLO_COLOR.stroke_width(2)))
        .map_err(draw_error)?
        .label(format!("SLO {slo}%"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], SLO_COLOR.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(GRID_COLOR)
        .label_font((FAMILY, 12))
        .draw()
        .map_err(draw_error)?;
    Ok(())
}

fn draw_cost(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    series: &DailySeries,
) -> Result<(), String> {
    let points = clean_points(series);
    let Some(axis) = DayAxis::new(&points) else {
        return draw_no_data(area, &series.label);
    };
    let mut chart = mesh(
        area,
        &series.label,
        axis_label(series),
        &axis,
        cost_range(&points),
        2,
    )?;
    let bars = points.iter().map(|(day, v)| {
        let x = axis.x(*day);
        Rectangle::new([(x - 0.4, 0.0), (x + 0.4, *v)], COST_COLOR.filled())
    });
    chart.draw_series(bars).map_err(draw_error)?;
    Ok(())
}

/// Encodes the RGB pixel buffer as an 8-bit RGB PNG, in memory.
fn encode_png(pixels: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let fail = |e: png::EncodingError| format!("encoding the digest chart as PNG failed: {e}");
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(pixels).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).expect("valid day")
    }

    fn series(label: &str, unit: &str, values: &[f64]) -> DailySeries {
        let points = (1u32..).zip(values).map(|(d, v)| (day(d), *v)).collect();
        DailySeries {
            label: label.into(),
            unit: unit.into(),
            points,
        }
    }

    /// Decodes the PNG and returns (width, height, RGB pixels).
    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        assert!(png_bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
        let frame = reader.next_frame(&mut buf).expect("PNG data");
        assert_eq!(frame.color_type, png::ColorType::Rgb);
        buf.truncate(frame.buffer_size());
        (frame.width, frame.height, buf)
    }

    /// Pixels that are neither white nor grey: the plotted data.
    fn colored_pixels(rgb: &[u8]) -> usize {
        rgb.chunks(3)
            .filter(|p| p[0].abs_diff(p[1]) > 40 || p[1].abs_diff(p[2]) > 40)
            .count()
    }

    fn panel(slo: f64, lines: Vec<DailySeries>) -> UptimePanel {
        UptimePanel {
            label: "Uptime".into(),
            lines,
            slo_percent: slo,
        }
    }

    fn month() -> (UptimePanel, DailySeries) {
        let uptime: Vec<f64> = (0..30).map(|i| 100.0 - f64::from(i % 7) * 0.3).collect();
        let cost: Vec<f64> = (0..30).map(|i| 40.0 + f64::from(i % 5) * 3.5).collect();
        (
            panel(99.5, vec![series("staging", "%", &uptime)]),
            series("Cost", "EUR", &cost),
        )
    }

    /// The row holding the most pixels of `color`, and how many it holds.
    pub(crate) fn longest_row(rgb: &[u8], color: RGBColor) -> (usize, usize) {
        let row = WIDTH as usize * 3;
        rgb.chunks(row)
            .map(|r| {
                r.chunks(3)
                    .filter(|p| p == &[color.0, color.1, color.2])
                    .count()
            })
            .enumerate()
            .max_by_key(|(_, n)| *n)
            .unwrap_or((0, 0))
    }

    #[test]
    fn the_slo_is_a_line_across_the_uptime_panel_at_its_value() {
        let days: Vec<f64> = vec![100.0, 99.9, 100.0, 98.0, 100.0, 100.0, 99.95];
        let lines = vec![
            series("staging", "%", &days),
            series("production", "%", &[100.0; 7]),
        ];
        let cost = series("Cost", "EUR", &[1.0]);
        let at = |slo: f64| {
            let (_, _, rgb) =
                decode(&digest_chart("t", &panel(slo, lines.clone()), &cost).unwrap());
            longest_row(&rgb, SLO_COLOR)
        };
        let (high_row, high_len) = at(99.5);
        let (low_row, low_len) = at(97.0);
        // Across most of the plot (800 px wide, minus axis labels and margins)…
        assert!(high_len > 500 && low_len > 500, "{high_len} {low_len}");
        // …in the top panel, and lower down for a lower SLO: 2.5 points of a 95–100 axis
        // of about 150 px are some 75 px.
        assert!(high_row < 250 && low_row < 250, "{high_row} {low_row}");
        assert!(
            (60..90).contains(&(low_row - high_row)),
            "{high_row} {low_row}"
        );
        // Without an uptime line there is no SLO line either ("no data").
        let (_, _, rgb) = decode(&digest_chart("t", &panel(99.5, vec![]), &cost).unwrap());
        assert_eq!(longest_row(&rgb, SLO_COLOR).1, 0);
        // Each environment has its own colour.
        let (_, _, rgb) = decode(&digest_chart("t", &panel(99.5, lines.clone()), &cost).unwrap());
        for c in &LINE_COLORS[..2] {
            assert!(rgb.chunks(3).filter(|p| p == &[c.0, c.1, c.2]).count() > 200);
        }
        assert_eq!(uptime_range(&[(day(1), 99.0)], 90.0), 89.0..100.0);
    }

    #[test]
    fn renders_a_decodable_png_of_the_expected_size() {
        let (uptime, cost) = month();
        let bytes = digest_chart("api: last 30 days", &uptime, &cost).expect("chart");
        // IHDR: width and height are the first two big-endian u32s after "IHDR".
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(bytes[16..20], WIDTH.to_be_bytes());
        assert_eq!(bytes[20..24], HEIGHT.to_be_bytes());
        let (w, h, rgb) = decode(&bytes);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        // Both the uptime line and the cost bars were drawn (many coloured pixels).
        assert!(colored_pixels(&rgb) > 5_000, "{}", colored_pixels(&rgb));
        // Text was rasterised: dark pixels exist (titles and labels need the font).
        assert!(rgb.chunks(3).any(|p| p.iter().all(|c| *c < 60)));
    }

    #[test]
    fn is_deterministic_for_the_same_input() {
        let (uptime, cost) = month();
        let a = digest_chart("api", &uptime, &cost).expect("chart");
        let b = digest_chart("api", &uptime, &cost).expect("chart");
        assert_eq!(a, b);
        let other = panel(99.5, vec![series("Uptime", "%", &[99.0])]);
        let c = digest_chart("api", &other, &cost).expect("chart");
        assert_ne!(a, c);
    }

    #[test]
    fn empty_series_draw_no_data_panels() {
        let empty = panel(99.5, vec![series("Uptime", "%", &[])]);
        let no_cost = series("Cost", "EUR", &[f64::NAN]);
        let bytes = digest_chart("new service", &empty, &no_cost).expect("chart");
        let (w, h, rgb) = decode(&bytes);
        assert_eq!((w, h), (WIDTH, HEIGHT));
        assert_eq!(colored_pixels(&rgb), 0, "no data drawn in colour");
    }

    #[test]
    fn single_points_and_odd_values_render() {
        let one = panel(99.5, vec![series("Uptime", "%", &[87.5])]);
        let cost = series("Cost", "", &[0.0]);
        let (w, h, rgb) = decode(&digest_chart("", &one, &cost).expect("chart"));
        assert_eq!((w, h), (WIDTH, HEIGHT));
        assert!(colored_pixels(&rgb) > 0, "the single uptime point is drawn");
        let weird = panel(
            99.5,
            vec![series("Uptime", "%", &[f64::INFINITY, 101.0, -3.0])],
        );
        let credits = series("Cost", "EUR", &[-5.0, 12.0, f64::NAN]);
        digest_chart("weird", &weird, &credits).expect("chart");
    }

    #[test]
    fn axis_ranges() {
        let points = |v: &[f64]| -> Vec<_> { (1u32..).zip(v).map(|(d, v)| (day(d), *v)).collect() };
        assert_eq!(uptime_range(&points(&[99.2, 100.0]), 99.5), 95.0..100.0);
        assert_eq!(uptime_range(&points(&[87.4, 99.0]), 99.5), 87.0..100.0);
        assert_eq!(cost_range(&points(&[0.0])), 0.0..1.0);
        assert_eq!(cost_range(&points(&[-2.0, 10.0])), -2.0..11.5);
        let axis = DayAxis::new(&points(&[1.0, 2.0, 3.0])).expect("axis");
        assert_eq!(axis.label(&2.0), "Mar 03");
        assert_eq!(axis.label(&2.5), "");
    }
}
