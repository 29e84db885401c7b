//! EventBridge schedules, emulated ("Creating an Amazon EventBridge rule that runs on a
//! schedule", and SAM's `Schedule` event source): each `Type: Schedule` event of the template
//! invokes its function at its rate with its input. EventBridge's first invocation comes within
//! one period of the rule's creation; here it comes at once, so a local stack starts in the
//! state every deployed stack is in after its first minute (notify's sweeper running, the
//! finalize tick done once). Like EventBridge, a failed invocation is not retried here: the
//! next one comes at the next period.

use crate::lambda::FunctionPool;
use crate::template::ScheduledEvent;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior, interval_at};

/// Starts invoking `function` every `every` with `event`'s input, until the task is aborted.
pub fn start(
    event: ScheduledEvent,
    every: Duration,
    function: Arc<FunctionPool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = interval_at(Instant::now(), every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = function.invoke(&event.input).await {
                tracing::warn!(schedule = %event.logical_id, %error, "scheduled invocation failed");
            }
        }
    })
}
