//! The PNG plot of a run: tap-to-screen p50 and p99 per second, with the goals drawn as
//! dashed lines, so a latency spike (a cold start, a hiccup of the machine) shows where it
//! happened, which the whole-run percentiles hide.

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

/// Writes the plot of `seconds` to `path` (PNG, 1200×600), titled `title`.
pub fn write_latency_plot(
    path: &Path,
    title: &str,
    seconds: &[SecondLatency],
) -> Result<(), PlotError> {
    if seconds.is_empty() {
        return Err(PlotError::NoData);
    }
    register_label_font()?;
    draw(path, title, seconds).map_err(|error| PlotError::Draw {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// Draws the chart; every drawing error is reported the same way by the caller.
fn draw<'a>(
    path: &'a Path,
    title: &str,
    seconds: &[SecondLatency],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let first_second = seconds.iter().map(|s| s.second).min().unwrap_or(0);
    let last_second = seconds.iter().map(|s| s.second).max().unwrap_or(0) + 1;
    let highest = seconds.iter().map(|s| s.p99_ms).fold(P99_GOAL_MS, f64::max);

    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        // Headroom above the highest line keeps the legend clear of the data.
        .build_cartesian_2d(first_second..last_second, 0.0..highest * 1.4)?;
    chart
        .configure_mesh()
        .x_desc("second since the run began (warm-up left out)")
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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
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
        write_latency_plot(&path, "steady at 5000 reactions/s", &seconds).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(png_size(&bytes), (1200, 600));
        // A blank image compresses to almost nothing; lines, labels and legend do not.
        assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_run_is_refused() {
        let path = std::env::temp_dir().join("emostream-never-written.png");
        assert!(matches!(
            write_latency_plot(&path, "empty", &[]),
            Err(PlotError::NoData)
        ));
        assert!(!path.exists());
    }
}
