//! emostream's load generator: simulated viewers over several streams tap at a profile's rate
//! and batch their taps like the web page; WebSocket listeners watch the same streams. It prints
//! accepted reactions per second, ingest latency, tap-to-screen latency, pushes per listener,
//! the projected AWS cost, and checks at the end that the stored counts equal the accepted
//! reactions exactly.

pub mod cost;
pub mod drain;
pub mod listeners;
pub mod plot;
pub mod profile;
pub mod report;
pub mod run;
pub mod verify;
pub mod viewers;
