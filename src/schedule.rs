//! Running a [`Plan`]: jobs start when what they are built against is done, at most `parallel`
//! at a time. A failed job blocks its dependents; independent jobs go on, unless `fail_fast`,
//! which stops starting jobs and cancels the running ones (dropping their futures, which removes
//! their containers).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use crate::plan::{Plan, Status};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobOutcome {
    /// Built, tested and published.
    Built,
    /// Already published with the same key.
    Skipped,
    /// Failed (or refused: a conflict).
    Failed,
    /// Not run: something it is built against failed, conflicts or was blocked.
    Blocked,
    /// Not run or stopped because another job failed under `--fail-fast`.
    Cancelled,
}

impl JobOutcome {
    /// The outcome as printed.
    pub fn name(self) -> &'static str {
        match self {
            JobOutcome::Built => "built",
            JobOutcome::Skipped => "skipped",
            JobOutcome::Failed => "failed",
            JobOutcome::Blocked => "blocked",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// What a successful job made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Made {
    /// The artifact's size in bytes.
    pub size: u64,
    /// Its sha256, hex.
    pub sha256: String,
    /// Where it is.
    pub location: String,
}

/// One job's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// The runtime.
    pub runtime: String,
    /// The version.
    pub version: String,
    /// How it ended.
    pub outcome: JobOutcome,
    /// How long it ran.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// What it made (built jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub made: Option<Made>,
    /// Why it failed, was blocked or skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every job, in plan order.
    pub jobs: Vec<JobReport>,
    /// Wall time of the run.
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// The sum of the jobs' durations.
    #[serde(serialize_with = "secs")]
    pub job_time: Duration,
    /// `job_time / (wall × parallel)`: how busy the parallel slots were.
    pub efficiency: f64,
}

impl Report {
    /// Whether every job was built or skipped.
    pub fn ok(&self) -> bool {
        self.jobs
            .iter()
            .all(|j| matches!(j.outcome, JobOutcome::Built | JobOutcome::Skipped))
    }
}

/// What a job is given to run with.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The job's index in the plan.
    pub index: usize,
    /// `{jobs}` for it: the cores divided among the builds running now (at least 1).
    pub make_jobs: usize,
}

type JobFuture<'a, E> =
    Pin<Box<dyn Future<Output = (usize, Duration, Result<Made, E>)> + Send + 'a>>;

/// Runs the jobs of `plan` whose status is `build`, at most `parallel` at a time, each through
/// `run`. `cores` is divided among running builds for `{jobs}`.
pub async fn execute<'a, E, F, Fut>(
    plan: &'a Plan,
    parallel: usize,
    cores: usize,
    fail_fast: bool,
    run: F,
) -> (Report, Vec<(usize, E)>)
where
    F: Fn(Slot) -> Fut,
    Fut: Future<Output = Result<Made, E>> + Send + 'a,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let parallel = parallel.max(1);
    let n = plan.jobs.len();
    let mut outcome: Vec<Option<JobOutcome>> = vec![None; n];
    let mut reason: Vec<Option<String>> = vec![None; n];
    let mut made: HashMap<usize, Made> = HashMap::new();
    let mut durations = vec![Duration::ZERO; n];
    let mut errors = Vec::new();
    for (i, j) in plan.jobs.iter().enumerate() {
        match j.status {
            Status::Skip => outcome[i] = Some(JobOutcome::Skipped),
            Status::Conflict => outcome[i] = Some(JobOutcome::Failed),
            Status::Blocked => outcome[i] = Some(JobOutcome::Blocked),
            // Not made for that architecture: nothing to build, and not a failure.
            Status::Unsupported => outcome[i] = Some(JobOutcome::Skipped),
            Status::Build => continue,
        }
        reason[i] = Some(j.reason.clone());
    }
    let mut running: FuturesUnordered<JobFuture<'a, E>> = FuturesUnordered::new();
    let mut active: HashSet<usize> = HashSet::new();
    let mut stopping = false;
    loop {
        if !stopping {
            // Block what cannot run any more (in plan order, so blocking cascades).
            for i in 0..n {
                if outcome[i].is_some() {
                    continue;
                }
                let bad = plan.jobs[i].deps.iter().copied().find(|&d| {
                    matches!(
                        outcome[d],
                        Some(JobOutcome::Failed | JobOutcome::Blocked | JobOutcome::Cancelled)
                    )
                });
                if let Some(d) = bad {
                    outcome[i] = Some(JobOutcome::Blocked);
                    reason[i] = Some(format!(
                        "{} {}",
                        plan.jobs[d].name(),
                        outcome[d].map_or("", JobOutcome::name)
                    ));
                }
            }
            // Start what is ready, while there is room.
            for i in 0..n {
                if active.len() >= parallel {
                    break;
                }
                let ready = outcome[i].is_none()
                    && !active.contains(&i)
                    && plan.jobs[i].deps.iter().all(|&d| {
                        matches!(outcome[d], Some(JobOutcome::Built | JobOutcome::Skipped))
                    });
                if !ready {
                    continue;
                }
                let make_jobs = (cores / (active.len() + 1)).max(1);
                let fut = run(Slot {
                    index: i,
                    make_jobs,
                });
                let t0 = Instant::now();
                running.push(Box::pin(async move {
                    let r = fut.await;
                    (i, t0.elapsed(), r)
                }));
                active.insert(i);
            }
        }
        let Some((i, took, result)) = running.next().await else {
            break;
        };
        active.remove(&i);
        durations[i] = took;
        match result {
            Ok(m) => {
                outcome[i] = Some(JobOutcome::Built);
                made.insert(i, m);
            }
            Err(e) => {
                outcome[i] = Some(JobOutcome::Failed);
                reason[i] = Some(e.to_string());
                errors.push((i, e));
                if fail_fast && !stopping {
                    stopping = true;
                    // Cancel the running jobs: dropping them removes their containers.
                    drop(std::mem::take(&mut running));
                    for j in active.drain() {
                        outcome[j] = Some(JobOutcome::Cancelled);
                        reason[j] = Some("cancelled by --fail-fast".into());
                    }
                }
            }
        }
    }
    for i in 0..n {
        if outcome[i].is_none() {
            outcome[i] = Some(JobOutcome::Cancelled);
            reason[i] = Some("not started: --fail-fast".into());
        }
    }
    let wall = started.elapsed();
    let job_time: Duration = durations.iter().sum();
    let jobs = plan
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| JobReport {
            runtime: j.recipe.runtime.to_string(),
            version: j.recipe.version.to_string(),
            outcome: outcome[i].expect("every job ends"),
            duration: durations[i],
            made: made.remove(&i),
            reason: reason[i].take(),
        })
        .collect();
    let efficiency = if wall.is_zero() {
        0.0
    } else {
        job_time.as_secs_f64() / (wall.as_secs_f64() * parallel as f64)
    };
    (
        Report {
            jobs,
            wall,
            job_time,
            efficiency,
        },
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Job;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn plan(deps: &[&[usize]], statuses: &[Status]) -> Plan {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("1.0.0.toml");
        std::fs::write(
            &file,
            "[source]\nurl = \"https://example.invalid/x.tar.gz\"\nsha256 = \"5f2b9d8e1c3a4b6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d\"\n",
        )
        .unwrap();
        let jobs = deps
            .iter()
            .zip(statuses)
            .enumerate()
            .map(|(i, (d, s))| {
                let version = format!("1.0.{i}").parse().unwrap();
                let recipe = crate::recipe::load(
                    &"demo".parse().unwrap(),
                    &version,
                    None,
                    &file,
                    &crate::recipe::LoadOptions::jobs(1),
                )
                .unwrap();
                Job {
                    recipe,
                    key: crate::plan::BuildKey::new(format!("{i}")),
                    deps: d.to_vec(),
                    requires: Vec::new(),
                    status: *s,
                    reason: String::new(),
                    selected: true,
                }
            })
            .collect();
        Plan { jobs }
    }

    fn outcomes(r: &Report) -> Vec<&'static str> {
        r.jobs.iter().map(|j| j.outcome.name()).collect()
    }

    #[tokio::test]
    async fn failures_block_dependents_and_the_rest_goes_on() {
        // 0 fails; 1 needs 0; 2 needs 1; 3 is independent; 4 needs 3; 5 is skipped.
        let p = plan(
            &[&[], &[0], &[1], &[], &[3], &[]],
            &[
                Status::Build,
                Status::Build,
                Status::Build,
                Status::Build,
                Status::Build,
                Status::Skip,
            ],
        );
        let order = Mutex::new(Vec::new());
        let (report, errors) = execute(&p, 2, 2, false, |slot| {
            order.lock().unwrap().push(slot.index);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if slot.index == 0 {
                    Err("boom".to_string())
                } else {
                    Ok(Made::default())
                }
            }
        })
        .await;
        assert_eq!(
            outcomes(&report),
            ["failed", "blocked", "blocked", "built", "built", "skipped"]
        );
        assert_eq!(report.jobs[1].reason.as_deref(), Some("demo 1.0.0 failed"));
        assert_eq!(report.jobs[2].reason.as_deref(), Some("demo 1.0.1 blocked"));
        assert_eq!(errors.len(), 1);
        assert!(!report.ok());
        let order = order.into_inner().unwrap();
        assert!(order.iter().position(|&i| i == 3) < order.iter().position(|&i| i == 4));
    }

    #[tokio::test]
    async fn runs_at_most_parallel_jobs_at_once_and_shares_cores() {
        let p = plan(&[&[], &[], &[], &[], &[]], &[Status::Build; 5]);
        let now = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let shares = Mutex::new(Vec::new());
        let (report, _) = execute(&p, 2, 4, false, |slot| {
            shares.lock().unwrap().push(slot.make_jobs);
            let (now, peak) = (&now, &peak);
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(Made::default())
            }
        })
        .await;
        assert!(report.ok());
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert!(
            shares
                .into_inner()
                .unwrap()
                .iter()
                .all(|&s| (1..=4).contains(&s))
        );
        assert!(report.efficiency > 0.5, "{}", report.efficiency);
    }

    #[tokio::test]
    async fn fail_fast_cancels_running_jobs_and_starts_no_more() {
        let p = plan(&[&[], &[], &[], &[]], &[Status::Build; 4]);
        let dropped = std::sync::Arc::new(AtomicUsize::new(0));
        struct OnDrop(std::sync::Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (report, _) = execute(&p, 2, 2, true, |slot| {
            let guard = OnDrop(dropped.clone());
            async move {
                let _guard = guard;
                if slot.index == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err("boom".to_string());
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Made::default())
            }
        })
        .await;
        assert_eq!(
            outcomes(&report),
            ["failed", "cancelled", "cancelled", "cancelled"]
        );
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "both started jobs were dropped"
        );
        assert!(report.wall < Duration::from_secs(5));
    }
}
