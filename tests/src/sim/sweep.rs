//! Many seeds at once: which ones (from the environment), on every core, stopping at the first
//! failure unless asked to keep going.
//!
//! `TETHER_SIM_SEED=s` replays one seed; otherwise the test's own count variable (e.g.
//! `TETHER_SIM_SEEDS`) or its default gives seeds `0..n`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant as WallInstant;

/// The seeds to run.
pub fn seeds(count_var: &str, default: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("TETHER_SIM_SEED") {
        return vec![s.parse().expect("TETHER_SIM_SEED is a u64")];
    }
    let n = std::env::var(count_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (0..n).collect()
}

/// What a sweep found, sorted by seed.
#[derive(Debug)]
pub struct Sweep<T> {
    pub results: Vec<(u64, Result<T, String>)>,
    pub secs: f64,
    pub threads: usize,
}

/// Runs `run` for every seed on all cores. With `keep_going` false, threads stop taking seeds
/// after the first failure (one report is enough to start from).
pub fn run<T: Send>(
    seeds: &[u64],
    keep_going: bool,
    run: impl Fn(u64) -> Result<T, String> + Sync,
) -> Sweep<T> {
    let started = WallInstant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(0);
    let per_thread: Vec<Vec<(u64, Result<T, String>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(&seed) = seeds.get(k) else { break };
                        let r = run(seed);
                        let failed = r.is_err();
                        out.push((seed, r));
                        if failed && !keep_going {
                            next.store(u64::MAX / 2, Ordering::Relaxed);
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut results: Vec<_> = per_thread.into_iter().flatten().collect();
    results.sort_by_key(|(seed, _)| *seed);
    Sweep {
        results,
        secs: started.elapsed().as_secs_f64(),
        threads,
    }
}

impl<T> Sweep<T> {
    /// The lowest failing seed and its report.
    pub fn first_failure(&self) -> Option<(u64, &str)> {
        self.results
            .iter()
            .find_map(|(seed, r)| r.as_ref().err().map(|e| (*seed, e.as_str())))
    }

    pub fn failed(&self) -> Vec<u64> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(s, _)| *s)
            .collect()
    }

    pub fn passed(&self) -> impl Iterator<Item = &T> {
        self.results.iter().filter_map(|(_, r)| r.as_ref().ok())
    }

    /// One line: seeds, time, rate.
    pub fn summary(&self) -> String {
        format!(
            "{} seeds in {:.1} s ({:.1} seeds/s on {} threads)",
            self.results.len(),
            self.secs,
            self.results.len() as f64 / self.secs,
            self.threads
        )
    }
}
