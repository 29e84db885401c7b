//! emostream's load generator: simulated viewers over several streams tap at a profile's rate
//! and batch their taps like the web page; WebSocket listeners watch the same streams. It prints
//! accepted reactions per second, ingest latency, tap-to-screen latency, pushes per listener,
//! the projected AWS cost, and checks at the end that the stored counts equal the accepted
//! reactions exactly. Audiences may be spread over the streams like a platform's (a few large
//! streams, many small), with tap-to-screen figures per stream and, on a stack it started
//! itself, the notify trigger's lag once a second.

pub mod audiences;
pub mod chaos;
pub mod cost;
pub mod drain;
pub mod lag;
pub mod listeners;
pub mod moment_check;
pub mod per_stream;
pub mod plot;
pub mod profile;
pub mod repair;
pub mod report;
pub mod run;
pub mod verify;
pub mod viewers;

/// A progress bar of `length` drawn with indicatif's `template` (the plain bar if the template
/// does not parse).
pub fn progress_bar(length: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(length);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
