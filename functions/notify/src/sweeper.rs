//! The sweeper: a scheduled invocation (every minute) that, for about a minute, makes the
//! pushes owed to streams whose slot has opened, every [`SWEEP_EVERY`]. Batches sweep too, but
//! when no batch comes (every stream's taps stopped, or one partition went quiet) the last
//! states would otherwise wait for the next tap; with the sweeper they reach every viewer
//! within one interval and a sweep (final states held back for a newer state's push within two
//! intervals and a sweep). Sweepers started by overlapping ticks hand over: the
//! newest takes the turn and the older one stops at its next check, so at most one sweeps.

use crate::fanout::FanoutReport;
use crate::push::{ActiveAudiences, sweep};
use crate::{Notify, NotifyError, fanout_metrics};
use reactions::clock::now_ms;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// How often the sweeper looks for owed streams whose slot is open, at the longest: it wakes
/// sooner when an owed stream's slot opens sooner.
pub const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// The shortest pause between two sweeps, so a slot that stays open but cannot be taken does
/// not keep the sweeper spinning.
const SWEEP_PAUSE: Duration = Duration::from_millis(2);

/// How often the sweeper checks that it still has the turn.
const TURN_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What one sweeper invocation did; also its response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// Sweeps made.
    pub sweeps: usize,
    /// Sweeps that failed (MongoDB unreachable): logged, and the next one tries again.
    pub failed_sweeps: usize,
    /// Whether a newer sweeper took the turn before this one's time was up.
    pub handed_over: bool,
    #[serde(flatten)]
    pub fanout: FanoutReport,
}

impl Notify {
    /// One sweep: pushes the streams owed a push whose slot is open now.
    pub async fn sweep_once(&self) -> Result<FanoutReport, NotifyError> {
        let active = ActiveAudiences::default();
        Ok(sweep(&self.push_targets(), self.push_policy(), &active).await?)
    }

    /// How long to wait before the next sweep: until the first owed stream's slot opens, at
    /// most [`SWEEP_EVERY`]. A slot that was open already when the last sweep began, which took
    /// nothing, cannot be taken (a stored id that is not a stream's, a failing MongoDB): the
    /// wait is then for the first slot opening after that sweep began, so it neither spins nor
    /// holds the others back.
    async fn until_next_sweep(&self, swept_at_ms: i64, took_any: bool) -> Duration {
        let mut next = self.slots.next_owed_due(now_ms(), None).await;
        if let Ok(Some(due_ms)) = next
            && due_ms <= swept_at_ms
            && !took_any
        {
            next = self.slots.next_owed_due(now_ms(), Some(swept_at_ms)).await;
        }
        match next {
            Ok(Some(due_ms)) => {
                let wait = u64::try_from(due_ms.saturating_sub(now_ms())).unwrap_or(0);
                Duration::from_millis(wait).clamp(SWEEP_PAUSE, SWEEP_EVERY)
            }
            Ok(None) => SWEEP_EVERY,
            Err(error) => {
                tracing::warn!(%error, "cannot read when the next owed slot opens");
                SWEEP_EVERY
            }
        }
    }

    /// Sweeps for `SWEEP_FOR_MS`, or until a newer sweeper takes the turn.
    pub async fn run_sweeper(&self) -> Result<SweepSummary, NotifyError> {
        let started = Instant::now();
        let run_for = self.config.sweep_for;
        let holder = format!("{:032x}", rand::random::<u128>());
        let until_ms = now_ms().saturating_add(i64::try_from(run_for.as_millis()).unwrap_or(0));
        self.slots.take_sweeper_turn(&holder, until_ms).await?;
        let mut summary = SweepSummary::default();
        let mut turn_checked = Instant::now();
        let targets = self.push_targets();
        let policy = self.push_policy();
        let active = ActiveAudiences::default();
        while started.elapsed() < run_for {
            if turn_checked.elapsed() >= TURN_CHECK_EVERY {
                turn_checked = Instant::now();
                match self.slots.holds_sweeper_turn(&holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        summary.handed_over = true;
                        break;
                    }
                    Err(error) => tracing::warn!(%error, "cannot check the sweeper's turn"),
                }
            }
            let swept_at_ms = now_ms();
            let took_any = match sweep(&targets, policy, &active).await {
                Ok(report) => {
                    summary.fanout.add(&report);
                    report.swept > 0
                }
                Err(error) => {
                    summary.failed_sweeps += 1;
                    tracing::warn!(%error, "sweep failed; trying again");
                    false
                }
            };
            summary.sweeps += 1;
            tokio::time::sleep(self.until_next_sweep(swept_at_ms, took_any).await).await;
        }
        let report = &summary.fanout;
        tracing::info!(
            sweeps = summary.sweeps,
            failed_sweeps = summary.failed_sweeps,
            handed_over = summary.handed_over,
            swept = report.swept,
            posts = report.posts,
            delivered = report.delivered,
            "sweeper done"
        );
        fanout_metrics(report)
            .count("FailedSweeps", summary.failed_sweeps as u64)
            .emit();
        Ok(summary)
    }
}
