//! The fault run (`make chaos`, `emostream-load --start-stack --chaos`): while the viewers tap
//! (retrying like the page, with their idempotency keys), faults are applied to the local stack
//! on a schedule: function instances killed with SIGKILL, the Kafka-wire broker restarted or
//! frozen, the MongoDB-wire server restarted, and the connections between the functions and
//! MongoDB stalled, slowed or cut (through [`emostream_local::network::FaultProxy`]). The run's
//! report then says, per stream, the taps the viewers consider sent and the taps counted.
//!
//! Servers are restarted with SIGTERM (`local/servers.sh restart`), never killed: a single
//! unreplicated server may lose what it acknowledged but had not made durable, which no client
//! can make up for; MSK and a MongoDB replica set replicate before they acknowledge
//! (`acks=all`, write concern majority), so that is not a fault this pipeline would meet. The
//! broker is frozen rather than restarted by default (see [`EXTRA`]).

use crate::run::{RunReport, StreamTaps};
use emostream_local::network::FaultProxy;
use emostream_local::stack::LocalStack;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL to every running instance of the function (logical id), as a crash would.
    KillFunction(&'static str),
    /// SIGKILL to every running instance of every function.
    KillAllFunctions,
    /// The broker stopped (SIGTERM) and started again on its port and data.
    RestartBroker,
    /// The broker frozen (SIGSTOP) for a while: connections stay open, nothing answers.
    FreezeBroker(Duration),
    /// The MongoDB server stopped (SIGTERM) and started again.
    RestartMongo,
    /// Every connection to MongoDB passes nothing for a while, kept open.
    StallMongo(Duration),
    /// Every open connection to MongoDB closed at once.
    CutMongoConnections,
    /// Every chunk to and from MongoDB held `delay` for a while.
    SlowMongo { delay: Duration, lasting: Duration },
}

impl Fault {
    /// The fault's short name, for `--faults`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::KillFunction("AggregateFunction") => "kill-aggregate",
            Fault::KillFunction("IngestFunction") => "kill-ingest",
            Fault::KillFunction(_) => "kill-notify",
            Fault::KillAllFunctions => "kill-all",
            Fault::RestartBroker => "restart-broker",
            Fault::FreezeBroker(_) => "freeze-broker",
            Fault::RestartMongo => "restart-mongo",
            Fault::StallMongo(_) => "stall-mongo",
            Fault::CutMongoConnections => "cut-mongo",
            Fault::SlowMongo { .. } => "slow-mongo",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::KillFunction(id) => write!(f, "kill -9 every {id} instance"),
            Fault::KillAllFunctions => write!(f, "kill -9 every function instance"),
            Fault::RestartBroker => write!(f, "restart the broker (SIGTERM, start)"),
            Fault::FreezeBroker(d) => write!(f, "freeze the broker for {} s", d.as_secs()),
            Fault::RestartMongo => write!(f, "restart MongoDB (SIGTERM, start)"),
            Fault::StallMongo(d) => write!(f, "stall MongoDB connections for {} s", d.as_secs()),
            Fault::CutMongoConnections => write!(f, "cut every MongoDB connection"),
            Fault::SlowMongo { delay, lasting } => write!(
                f,
                "delay MongoDB traffic {} ms per chunk for {} s",
                delay.as_millis(),
                lasting.as_secs()
            ),
        }
    }
}

/// The faults in the order a run applies them, then again from the first.
pub const CYCLE: [Fault; 9] = [
    Fault::KillFunction("AggregateFunction"),
    Fault::FreezeBroker(Duration::from_secs(8)),
    Fault::KillFunction("IngestFunction"),
    Fault::StallMongo(Duration::from_secs(10)),
    Fault::KillFunction("NotifyFunction"),
    Fault::RestartMongo,
    Fault::CutMongoConnections,
    Fault::SlowMongo {
        delay: Duration::from_millis(200),
        lasting: Duration::from_secs(15),
    },
    Fault::KillAllFunctions,
];

/// Faults run only when named with `--faults`: they measure the local servers rather than
/// emostream. The local Kafka-wire broker acknowledges records before they are durable, and a
/// SIGTERM restart under load loses some it acknowledged (measured: 195 of 50,290 records
/// acknowledged by 8 producers in the 5 s around a restart). MSK acknowledges `acks=all` only
/// once the in-sync replicas have the record, so a broker restart there loses none.
pub const EXTRA: [Fault; 1] = [Fault::RestartBroker];

/// Every fault there is: [`CYCLE`] and [`EXTRA`].
pub fn all_faults() -> impl Iterator<Item = &'static Fault> {
    CYCLE.iter().chain(EXTRA.iter())
}

/// Refuses fault names that are not [`Fault::name`]s, saying which there are.
pub fn check_names(names: &[String]) -> Result<(), String> {
    let known: Vec<&str> = all_faults().map(Fault::name).collect();
    match names.iter().find(|name| !known.contains(&name.as_str())) {
        Some(unknown) => Err(format!(
            "--faults: no fault is named {unknown:?}; the faults are {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// The run's faults: one every `every`, from `every` on, cycling through [`CYCLE`], or through
/// the faults named in `only` when it names any, the last at least `every` before `duration`
/// ends (so the pipeline has that long to recover while still under load).
pub fn schedule(duration: Duration, every: Duration, only: &[String]) -> Vec<(Duration, Fault)> {
    let cycle: Vec<&Fault> = if only.is_empty() {
        CYCLE.iter().collect()
    } else {
        all_faults()
            .filter(|fault| only.iter().any(|name| name == fault.name()))
            .collect()
    };
    let mut faults = Vec::new();
    if every.is_zero() || cycle.is_empty() {
        return faults;
    }
    let mut at = every;
    while at + every <= duration {
        faults.push((at, cycle[faults.len() % cycle.len()].clone()));
        at += every;
    }
    faults
}

/// What a fault did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Seconds from the start of the run.
    pub at_s: f64,
    /// When it was applied, ms since the epoch.
    pub at_ms: i64,
    pub fault: String,
    /// How long applying it took (a restart: until the server answered again).
    pub took_s: f64,
    /// What it did, or why it could not be applied.
    pub result: String,
    /// Whether it killed ingest's instances: a request in flight in one is answered 500 by API
    /// Gateway, as in AWS for a crashed invocation.
    pub kills_ingest: bool,
}

/// How long after ingest's instances are killed a 500 is taken for the answer to a request that
/// was in flight in one of them.
pub const CRASH_ANSWER_WINDOW_MS: i64 = 2_000;

/// What the faults act on.
pub struct Targets<'a> {
    pub stack: &'a LocalStack,
    /// The proxy between the functions and MongoDB.
    pub mongo: &'a FaultProxy,
    /// `local/servers.sh` and its state directory (`EMOSTREAM_SERVERS`).
    pub servers_script: PathBuf,
    pub servers_state: PathBuf,
}

impl<'a> Targets<'a> {
    /// The targets of a run started from the repository root under `local/servers.sh run`
    /// (whose state directory `EMOSTREAM_SERVERS` names).
    pub fn of_this_run(stack: &'a LocalStack, mongo: &'a FaultProxy) -> Result<Self, String> {
        Ok(Self {
            stack,
            mongo,
            servers_script: std::fs::canonicalize("local/servers.sh").map_err(|e| {
                format!("--chaos runs from the repository root (local/servers.sh: {e})")
            })?,
            servers_state: std::env::var_os("EMOSTREAM_SERVERS")
                .map(PathBuf::from)
                .ok_or("--chaos needs EMOSTREAM_SERVERS (run under local/servers.sh run)")?,
        })
    }

    /// Applies `schedule`, each fault at its time from `started`; returns what each did.
    pub async fn run(&self, schedule: &[(Duration, Fault)], started: Instant) -> Vec<FaultRecord> {
        let mut records = Vec::new();
        for (at, fault) in schedule {
            tokio::time::sleep_until((started + *at).into()).await;
            let applied = Instant::now();
            let at_ms = reactions::clock::now_ms();
            let result = self
                .apply(fault)
                .await
                .unwrap_or_else(|error| format!("NOT APPLIED: {error}"));
            let record = FaultRecord {
                at_s: applied.duration_since(started).as_secs_f64(),
                at_ms,
                kills_ingest: matches!(
                    fault,
                    Fault::KillFunction("IngestFunction") | Fault::KillAllFunctions
                ),
                fault: fault.to_string(),
                took_s: applied.elapsed().as_secs_f64(),
                result,
            };
            eprintln!(
                "fault at {:.0} s: {} ({}; {:.1} s)",
                record.at_s, record.fault, record.result, record.took_s
            );
            records.push(record);
        }
        records
    }

    async fn apply(&self, fault: &Fault) -> Result<String, String> {
        match fault {
            Fault::KillFunction(id) => {
                let pool = self
                    .stack
                    .function(id)
                    .ok_or_else(|| format!("the stack has no {id}"))?;
                Ok(format!("{} instances killed", pool.kill_instances()))
            }
            Fault::KillAllFunctions => {
                let killed: usize = self
                    .stack
                    .functions
                    .values()
                    .map(|pool| pool.kill_instances())
                    .sum();
                Ok(format!("{killed} instances killed"))
            }
            Fault::RestartBroker => self.servers(&["kafka"]).await,
            Fault::FreezeBroker(lasting) => {
                self.servers(&["kafka", "--freeze", &lasting.as_secs().to_string()])
                    .await
            }
            Fault::RestartMongo => self.servers(&["mongo"]).await,
            Fault::StallMongo(lasting) => {
                self.mongo.stall(true);
                tokio::time::sleep(*lasting).await;
                self.mongo.stall(false);
                Ok("stalled, then passing again".into())
            }
            Fault::CutMongoConnections => {
                self.mongo.cut_connections();
                Ok("connections closed".into())
            }
            Fault::SlowMongo { delay, lasting } => {
                self.mongo.delay(*delay);
                tokio::time::sleep(*lasting).await;
                self.mongo.delay(Duration::ZERO);
                Ok("delayed, then passing at full speed".into())
            }
        }
    }

    /// `local/servers.sh restart STATE kafka|mongo [...]`.
    async fn servers(&self, args: &[&str]) -> Result<String, String> {
        let output = tokio::process::Command::new(&self.servers_script)
            .arg("restart")
            .arg(&self.servers_state)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("{}: {e}", self.servers_script.display()))?;
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if output.status.success() {
            Ok(said.trim_start_matches("[servers] ").to_owned())
        } else {
            Err(said)
        }
    }
}

/// What a fault run comes to, against its goals: counted = sent for every stream, no window
/// grown after its `final` state, no 5xx from ingest but 503, no invocation timed out.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub faults: Vec<FaultRecord>,
    pub streams: Vec<StreamTaps>,
    pub windows_grown_after_final: u64,
    /// Answers with a 5xx other than 503 within [`CRASH_ANSWER_WINDOW_MS`] of killing ingest's
    /// instances: API Gateway's 500 for a request whose instance was killed under it.
    pub crash_answers: u64,
    /// Any other answer with a 5xx other than 503.
    pub answers_5xx_not_503: u64,
    /// Invocations that ran into their function's timeout, over every function.
    pub invocations_timed_out: u64,
}

impl Verdict {
    pub fn of(report: &RunReport, faults: Vec<FaultRecord>, stack: &LocalStack) -> Self {
        let kills: Vec<i64> = faults
            .iter()
            .filter(|f| f.kills_ingest)
            .map(|f| f.at_ms)
            .collect();
        let crash_answers = report
            .answers_5xx_not_503_at_ms
            .iter()
            .filter(|&&at| {
                kills
                    .iter()
                    .any(|&kill| (kill..=kill + CRASH_ANSWER_WINDOW_MS).contains(&at))
            })
            .count() as u64;
        Self {
            streams: report.stream_taps.clone(),
            windows_grown_after_final: report.windows_grown_after_final,
            crash_answers,
            answers_5xx_not_503: report.answers_5xx_not_503_at_ms.len() as u64 - crash_answers,
            faults,
            invocations_timed_out: stack
                .functions
                .values()
                .map(|pool| pool.stats.timeouts.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// The goals missed, each said in a line.
    pub fn missed(&self) -> Vec<String> {
        let mut missed = Vec::new();
        for s in &self.streams {
            if s.counted < s.sent {
                missed.push(format!(
                    "stream {}: {} taps LOST ({} sent, {} counted)",
                    s.stream,
                    s.sent - s.counted,
                    s.sent,
                    s.counted
                ));
            } else if s.counted > s.sent + s.abandoned {
                missed.push(format!(
                    "stream {}: {} taps COUNTED TWICE ({} sent, {} in requests given up, {} counted)",
                    s.stream,
                    s.counted - s.sent - s.abandoned,
                    s.sent,
                    s.abandoned,
                    s.counted
                ));
            } else if s.abandoned > 0 {
                missed.push(format!(
                    "stream {}: {} taps in requests given up unanswered: whether they are counted cannot be told",
                    s.stream, s.abandoned
                ));
            }
        }
        let mut count = |n: u64, what: &str| {
            if n > 0 {
                missed.push(format!("{n} {what}"));
            }
        };
        count(
            self.windows_grown_after_final,
            "window states larger than the window's final state",
        );
        count(
            self.answers_5xx_not_503,
            "answers from ingest with a 5xx other than 503",
        );
        count(
            self.invocations_timed_out,
            "invocations ran into their timeout",
        );
        count(
            self.faults
                .iter()
                .filter(|f| f.result.starts_with("NOT APPLIED"))
                .count() as u64,
            "faults could not be applied",
        );
        missed
    }

    pub fn print(&self) {
        println!("faults                 {} applied:", self.faults.len());
        for fault in &self.faults {
            println!(
                "  {:>5.0} s  {} ({}; {:.1} s)",
                fault.at_s, fault.fault, fault.result, fault.took_s
            );
        }
        println!("taps per stream        sent / counted / difference (in requests given up)");
        for stream in &self.streams {
            println!(
                "  stream {:<3}  {} / {} / {} ({})",
                stream.stream,
                stream.sent,
                stream.counted,
                i128::from(stream.counted) - i128::from(stream.sent),
                stream.abandoned
            );
        }
        println!(
            "fault goals            windows grown after final {}, 5xx other than 503 {} (besides {} answers 500 to requests whose ingest instance was killed), invocations timed out {}",
            self.windows_grown_after_final,
            self.answers_5xx_not_503,
            self.crash_answers,
            self.invocations_timed_out
        );
        let missed = self.missed();
        if missed.is_empty() {
            println!("fault run              every goal met");
        } else {
            println!("fault run              goals MISSED:");
            for line in missed {
                println!("  {line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_cycle_every_interval_and_stop_before_the_end() {
        let faults = schedule(Duration::from_secs(600), Duration::from_secs(30), &[]);
        assert_eq!(faults.len(), 19);
        assert_eq!(faults[0], (Duration::from_secs(30), CYCLE[0].clone()));
        assert_eq!(faults[9].1, CYCLE[0]);
        assert_eq!(faults[18].0, Duration::from_secs(570));
        assert!(schedule(Duration::from_secs(10), Duration::from_secs(30), &[]).is_empty());
        assert!(schedule(Duration::from_secs(10), Duration::ZERO, &[]).is_empty());
        let only = ["restart-broker".to_owned(), "slow-mongo".to_owned()];
        let chosen = schedule(Duration::from_secs(130), Duration::from_secs(30), &only);
        let names: Vec<&str> = chosen.iter().map(|(_, f)| f.name()).collect();
        assert_eq!(names, ["slow-mongo", "restart-broker", "slow-mongo"]);
        let names: Vec<&str> = all_faults().map(Fault::name).collect();
        let mut distinct = names.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), CYCLE.len() + EXTRA.len(), "{names:?}");
        assert!(!CYCLE.contains(&Fault::RestartBroker));
        assert_eq!(
            Fault::SlowMongo {
                delay: Duration::from_millis(200),
                lasting: Duration::from_secs(15)
            }
            .to_string(),
            "delay MongoDB traffic 200 ms per chunk for 15 s"
        );
    }
}
