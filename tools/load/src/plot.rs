//! The PNG plot of a run: tap-to-screen p50 and p99 per second, with the goals drawn as
//! dashed lines, so a latency spike (a cold start, a hiccup of the machine) shows where it
//! happened, which the whole-run percentiles hide. When the notify trigger's lag was sampled
//! (`--start-stack`), a second panel under it shows that lag on the same time axis, so a
//! latency that grows can be told from a trigger falling behind.

use crate::lag::LagSample;
use crate::run::SecondLatency;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The tap-to-screen goals of the performance issue, drawn for reference.
const P50_GOAL_MS: f64 = 250.0;
const P99_GOAL_MS: f64 = 600.0;

/// Picks one figure of a second, for one line of the plot.
type Figure = fn(&SecondLatency) -> f64;

/// The lag panel's line.
const LAG_COLOR: RGBColor = RGBColor(0, 128, 0);

/// The image's width, the latency panel's height and the lag panel's (when there is one).
const WIDTH: u32 = 1200;
const LATENCY_HEIGHT: u32 = 600;
const LAG_HEIGHT: u32 = 300;

/// Fonts tried for the labels, in order, before asking fontconfig.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
];

/// Why the plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: no measured second has a tap-to-screen figure")]
    NoData,
    #[error(
        "no TrueType font for the plot's labels (tried {tried} and `fc-match sans-serif`); \
         install one, e.g. `apt-get install fonts-dejavu-core`"
    )]
    NoFont { tried: String },
    #[error("drawing the plot to {path}: {reason}")]
    Draw { path: PathBuf, reason: String },
}

/// Writes the plot of `seconds` to `path`, titled `title`: PNG, 1200×600, or 1200×900 with
/// the panel of the notify trigger's `lag` under it when there are lag samples.
pub fn write_latency_plot(
    path: &Path,
    title: &str,
    seconds: &[SecondLatency],
    lag: &[LagSample],
) -> Result<(), PlotError> {
    if seconds.is_empty() {
        return Err(PlotError::NoData);
    }
    register_label_font()?;
    draw(path, title, seconds, lag).map_err(|error| PlotError::Draw {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// Draws the chart; every drawing error is reported the same way by the caller.
fn draw<'a>(
    path: &'a Path,
    title: &str,
    seconds: &[SecondLatency],
    lag: &[LagSample],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    // One time axis for both panels: the lag is sampled from before the warm-up to the end of
    // the settling, the latency only in the measured part.
    let all_seconds = seconds
        .iter()
        .map(|s| s.second)
        .chain(lag.iter().map(|s| s.second));
    let first_second = all_seconds.clone().min().unwrap_or(0);
    let last_second = all_seconds.max().unwrap_or(0) + 1;
    let highest = seconds.iter().map(|s| s.p99_ms).fold(P99_GOAL_MS, f64::max);

    let height = if lag.is_empty() {
        LATENCY_HEIGHT
    } else {
        LATENCY_HEIGHT + LAG_HEIGHT
    };
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (latency_area, lag_area) = root.split_vertically(LATENCY_HEIGHT);
    let mut chart = ChartBuilder::on(&latency_area)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        // Headroom above the highest line keeps the legend clear of the data.
        .build_cartesian_2d(first_second..last_second, 0.0..highest * 1.4)?;
    chart
        .configure_mesh()
        .x_desc("second since the run began (latency of the measured part: warm-up left out)")
        .y_desc("tap-to-screen latency (ms)")
        .label_style(("sans-serif", 16))
        .draw()?;

    let series: [(&str, RGBColor, Figure); 2] =
        [("p50", BLUE, |s| s.p50_ms), ("p99", RED, |s| s.p99_ms)];
    for (label, color, figure) in series {
        let points = seconds.iter().map(|s| (s.second, figure(s)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    for (label, color, goal) in [
        ("p50 goal", BLUE, P50_GOAL_MS),
        ("p99 goal", RED, P99_GOAL_MS),
    ] {
        chart
            .draw_series(DashedLineSeries::new(
                [(first_second, goal), (last_second, goal)],
                8,
                6,
                color.mix(0.5).stroke_width(1),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.mix(0.5)));
    }
    draw_legend(&mut chart)?;
    if !lag.is_empty() {
        draw_lag(&lag_area, first_second..last_second, lag)?;
    }
    root.present()?;
    Ok(())
}

/// A panel's legend, in its upper right corner.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// The lag panel: records the notify trigger was behind, each second it was sampled.
fn draw_lag<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    seconds: std::ops::Range<u64>,
    lag: &[LagSample],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let highest = lag.iter().map(|s| s.records).max().unwrap_or(0);
    // Headroom as above; a lag that stays at 0 still gets a readable axis.
    let top = (highest + highest / 4).max(10);
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(seconds, 0..top)?;
    chart
        .configure_mesh()
        .x_desc("second since the run began")
        .y_desc("notify lag (records)")
        .label_style(("sans-serif", 16))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            lag.iter().map(|s| (s.second, s.records)),
            LAG_COLOR.stroke_width(2),
        ))?
        .label("records behind")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], LAG_COLOR.stroke_width(2)));
    draw_legend(&mut chart)?;
    Ok(())
}

/// Registers a system TrueType font as `sans-serif` once per process: the pure-Rust glyph
/// renderer needs the font's bytes and does not search the system itself.
fn register_label_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let found = FONT_CANDIDATES
                .iter()
                .map(PathBuf::from)
                .chain(fontconfig_sans_serif())
                .find_map(|path| std::fs::read(path).ok());
            let bytes = found.ok_or_else(|| FONT_CANDIDATES.join(", "))?;
            register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(bytes.into_boxed_slice()),
            )
            .map_err(|_| "the font found is not a valid TrueType font".to_owned())
        })
        .clone()
        .map_err(|tried| PlotError::NoFont { tried })
}

/// The file fontconfig picks for `sans-serif`, when fontconfig is installed.
fn fontconfig_sans_serif() -> Option<PathBuf> {
    let output = std::process::Command::new("fc-match")
        .args(["--format=%{file}", "sans-serif"])
        .output()
        .ok()?;
    let path = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    }

    #[test]
    fn a_run_is_plotted_as_a_png() {
        let dir = std::env::temp_dir().join(format!("emostream-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.png");
        let seconds: Vec<SecondLatency> = (0..60)
            .map(|second| SecondLatency {
                second,
                p50_ms: 190.0 + (second % 7) as f64,
                p99_ms: if second == 20 { 900.0 } else { 290.0 },
            })
            .collect();
        write_latency_plot(&path, "steady at 5000 reactions/s", &seconds, &[]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), (1200, 600));
        // A blank image compresses to almost nothing; lines, labels and legend do not.
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
        // With the trigger's lag, sampled from before the warm-up: a second panel below.
        let lag: Vec<LagSample> = (0..75)
            .map(|second| LagSample {
                second,
                records: if (30..35).contains(&second) {
                    400
                } else {
                    second % 3
                },
            })
            .collect();
        let with_lag = dir.join("latency-and-lag.png");
        write_latency_plot(&with_lag, "steady at 5000 reactions/s", &seconds, &lag).unwrap();
        let with_lag = std::fs::read(&with_lag).unwrap();
        assert_eq!(png_size(&with_lag), (1200, 900));
        assert!(with_lag.len() > bytes.len(), "{} bytes", with_lag.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_run_is_refused() {
        let path = std::env::temp_dir().join("emostream-never-written.png");
        assert!(matches!(
            write_latency_plot(&path, "empty", &[], &[]),
            Err(PlotError::NoData)
        ));
        assert!(!path.exists());
    }
}
