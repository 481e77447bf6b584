//! The fuzzing loop of one target: run the seeds, then until the time box closes pick a
//! corpus entry, mutate it, run it under `catch_unwind`, time it, and keep it when it
//! shows a feature no earlier input showed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::corpus;
use crate::features::{Feature, Features, KEYS_PER_GROUP, VALUES_PER_KEY};
use crate::mutate::Mutator;
use crate::panics;
use crate::rng::Rng;
use crate::targets::Target;

/// A worker that found a failure (and reported it) exits with this.
pub const EXIT_FAILURE: i32 = 1;
/// A worker whose run outlived the hard limit (the watchdog's verdict) exits with this;
/// the supervisor reports the input it left in the current-input file.
pub const EXIT_HANG: i32 = 3;

/// Entries kept in memory per target.
const MAX_CORPUS: usize = 20_000;
/// Time spent shrinking a panicking input.
const MINIMIZE_BUDGET: Duration = Duration::from_secs(10);

pub struct Settings {
    pub seconds: f64,
    pub seed: u64,
    /// A single run longer than this (twice in a row) is a hang.
    pub hang: Duration,
    /// Stop after this many executions (tests).
    pub max_execs: Option<u64>,
    /// Each input is written here before it runs, so that the supervisor can report it
    /// when the process dies (stack overflow, abort, out of memory, watchdog).
    pub current: Option<PathBuf>,
    /// Print the summary and failures.
    pub verbose: bool,
    /// Write the grown corpus here at the end (to refresh the committed seeds).
    pub save_corpus: Option<PathBuf>,
    /// Options to repeat in the printed commands (a non-default stack or budget).
    pub flags: String,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub execs: u64,
    pub elapsed: Duration,
    pub seeds: usize,
    pub corpus: usize,
    pub features: usize,
    pub slowest: Duration,
    /// The slowest input, saved when it took over a quarter of the hang budget.
    pub slowest_input: Option<PathBuf>,
    /// Runs slower than the budget once but not when repeated.
    pub slow_once: u64,
    /// Panics the code under test caught itself (e.g. the PromQL guard around
    /// promql-parser): location → (count, saved input).
    pub contained: Vec<(String, u64, Option<PathBuf>)>,
    /// What failed (already printed), if anything.
    pub failure: Option<String>,
}

impl Summary {
    pub fn execs_per_second(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The input of the run in progress, written before the run starts.
struct CurrentInput {
    file: File,
    buffer: Vec<u8>,
}

impl CurrentInput {
    fn create(path: &Path) -> std::io::Result<CurrentInput> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(CurrentInput {
            file: File::create(path)?,
            buffer: Vec::new(),
        })
    }

    /// One `pwrite`: the length, then the bytes (a shorter input leaves stale bytes
    /// after it, which the length excludes).
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.buffer.clear();
        self.buffer
            .extend_from_slice(&(data.len() as u64).to_le_bytes());
        self.buffer.extend_from_slice(data);
        self.file.write_all_at(&self.buffer, 0)
    }
}

/// The input a dead worker left behind.
pub fn read_current(path: &Path) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let (len, rest) = bytes.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    rest.get(..len).map(<[u8]>::to_vec)
}

/// Ends the process when one run outlives `limit` (a run that never returns cannot be
/// caught any other way).
struct Watchdog {
    started: Arc<Mutex<Option<Instant>>>,
}

impl Watchdog {
    fn spawn(target: &'static str, limit: Duration) -> Watchdog {
        let started: Arc<Mutex<Option<Instant>>> = Arc::default();
        let watched = started.clone();
        let spawned = std::thread::Builder::new()
            .name("fuzz-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(50));
                let since = watched.lock().ok().and_then(|started| *started);
                if let Some(since) = since {
                    if since.elapsed() > limit {
                        eprintln!(
                            "vigil-fuzz: {target}: HANG: one run has not returned after {:.1} s",
                            since.elapsed().as_secs_f64()
                        );
                        let _ = std::io::stderr().flush();
                        std::process::exit(EXIT_HANG);
                    }
                }
            });
        if let Err(err) = spawned {
            eprintln!("vigil-fuzz: cannot start the watchdog: {err}");
        }
        Watchdog { started }
    }

    fn set(&self, value: Option<Instant>) {
        if let Ok(mut started) = self.started.lock() {
            *started = value;
        }
    }
}

enum Verdict {
    Ok,
    Panic(String),
    Hang(Duration),
}

struct Runner<'t> {
    target: &'t Target,
    hang: Duration,
    current: Option<CurrentInput>,
    watchdog: Option<Watchdog>,
    features: Features,
    slowest: Duration,
    slowest_input: Vec<u8>,
    slow_once: u64,
    contained: Vec<(String, u64, Option<PathBuf>)>,
}

impl Runner<'_> {
    fn timed(&mut self, input: &[u8]) -> (Result<(), String>, Duration, bool) {
        if let Some(current) = &mut self.current {
            if let Err(err) = current.write(input) {
                eprintln!("vigil-fuzz: cannot write the current input: {err}");
            }
        }
        if let Some(watchdog) = &self.watchdog {
            watchdog.set(Some(Instant::now()));
        }
        let (result, elapsed, contained) = run_one(self.target, input, &mut self.features);
        if let Some(watchdog) = &self.watchdog {
            watchdog.set(None);
        }
        (result, elapsed, contained)
    }

    fn exec(&mut self, input: &[u8]) -> Verdict {
        let (result, elapsed, panicked) = self.timed(input);
        if let Err(message) = result {
            return Verdict::Panic(message);
        }
        if panicked {
            self.record_contained(input);
        }
        if elapsed > self.slowest {
            self.slowest = elapsed;
            self.slowest_input = input.to_vec();
        }
        if elapsed > self.hang {
            // Once may be the machine; twice in a row is the input.
            let (result, again, _) = self.timed(input);
            if let Err(message) = result {
                return Verdict::Panic(message);
            }
            if again > self.hang {
                return Verdict::Hang(elapsed.min(again));
            }
            self.slow_once += 1;
        }
        Verdict::Ok
    }

    fn record_contained(&mut self, input: &[u8]) {
        let message = panics::last();
        let location = panics::location(&message).to_string();
        if let Some(entry) = self.contained.iter_mut().find(|(l, _, _)| *l == location) {
            entry.1 += 1;
            return;
        }
        let saved = corpus::save_crash(&format!("contained-{}", self.target.name), input).ok();
        self.contained.push((location, 1, saved));
        if let Some((_, _, Some(path))) = self.contained.last() {
            eprintln!(
                "vigil-fuzz: {}: a panic the code under test caught itself (not a failure): {message}\n  input: {}",
                self.target.name,
                corpus::display(path)
            );
        }
    }

    /// Drops chunks of a panicking input while it still panics at the same place.
    fn minimize(&mut self, input: &[u8], location: &str) -> Vec<u8> {
        let deadline = Instant::now() + MINIMIZE_BUDGET;
        let mut best = input.to_vec();
        let mut chunk = (best.len() / 2).max(1);
        while Instant::now() < deadline {
            let mut at = 0;
            let mut progressed = false;
            while at < best.len() && Instant::now() < deadline {
                let end = (at + chunk).min(best.len());
                let candidate: Vec<u8> = best[..at].iter().chain(&best[end..]).copied().collect();
                let (result, _, _) = self.timed(&candidate);
                match result {
                    Err(message) if panics::location(&message) == location => {
                        best = candidate;
                        progressed = true;
                    }
                    _ => at += chunk,
                }
            }
            if !progressed {
                if chunk == 1 {
                    break;
                }
                chunk /= 2;
            }
        }
        best
    }
}

/// The features seen so far, with the number of keys of each group and of values of
/// each key.
#[derive(Default)]
struct Seen {
    features: HashSet<Feature>,
    keys: HashSet<(u64, u64)>,
    keys_per_group: HashMap<u64, u32>,
    values_per_key: HashMap<(u64, u64), u32>,
}

impl Seen {
    /// Records `features`; true when one of them is new, within the caps
    /// ([`KEYS_PER_GROUP`], [`VALUES_PER_KEY`]).
    fn novel(&mut self, features: &[Feature]) -> bool {
        let mut novel = false;
        for &feature in features {
            let (group, key, _) = feature;
            if self.features.contains(&feature) {
                continue;
            }
            if !self.keys.contains(&(group, key)) {
                let keys = self.keys_per_group.entry(group).or_default();
                if *keys >= KEYS_PER_GROUP {
                    continue;
                }
                *keys += 1;
                self.keys.insert((group, key));
            }
            let values = self.values_per_key.entry((group, key)).or_default();
            if *values < VALUES_PER_KEY {
                *values += 1;
                self.features.insert(feature);
                novel = true;
            }
        }
        novel
    }
}

/// Runs one input: `Err` with the panic's message when it panicked (or when the code
/// under test caught a panic of this workspace's own code); the time it took; whether
/// a panic elsewhere (the standard library, a dependency) was caught by the code under
/// test.
pub fn run_one(
    target: &Target,
    input: &[u8],
    features: &mut Features,
) -> (Result<(), String>, Duration, bool) {
    features.clear();
    let before = panics::count();
    let start = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input, features)));
    let elapsed = start.elapsed();
    let panicked = panics::count() != before;
    match result {
        Err(_) => (Err(panics::last()), elapsed, false),
        Ok(()) if panicked => {
            let message = panics::last();
            if panics::in_our_code(&message) {
                (
                    Err(format!("{message} (caught by the code under test)")),
                    elapsed,
                    false,
                )
            } else {
                (Ok(()), elapsed, true)
            }
        }
        Ok(()) => (Ok(()), elapsed, false),
    }
}

/// Fuzzes one target under `settings`; failures are printed (and written to
/// `crashes/`) as they are found, the first one ends the run.
pub fn fuzz(target: &'static Target, settings: &Settings) -> Summary {
    let setup = Instant::now();
    (target.init)();
    let mut summary = Summary::default();
    let seeds = match corpus::seeds(target.name) {
        Ok(seeds) => seeds,
        Err(err) => {
            let message = format!("cannot read the corpus of {}: {err}", target.name);
            eprintln!("vigil-fuzz: {message}");
            summary.failure = Some(message);
            return summary;
        }
    };
    if settings.verbose {
        println!(
            "vigil-fuzz: {}: seed {}, {} seed inputs, {:.1} s (setup {:.2} s)",
            target.name,
            settings.seed,
            seeds.len(),
            settings.seconds,
            setup.elapsed().as_secs_f64()
        );
    }
    let mut runner = Runner {
        target,
        hang: settings.hang,
        current: settings
            .current
            .as_deref()
            .and_then(|path| CurrentInput::create(path).ok()),
        watchdog: settings
            .current
            .as_ref()
            .map(|_| Watchdog::spawn(target.name, hard_limit(settings.hang))),
        features: Features::default(),
        slowest: Duration::ZERO,
        slowest_input: Vec::new(),
        slow_once: 0,
        contained: Vec::new(),
    };
    let mut seen = Seen::default();
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut known: HashSet<u64> = HashSet::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(settings.seconds.max(0.0));
    for (path, data) in &seeds {
        summary.execs += 1;
        let verdict = runner.exec(data);
        if let Some(failure) = report(&mut runner, settings, verdict, data, Some(path)) {
            summary.failure = Some(failure);
            break;
        }
        seen.novel(runner.features.hashes());
        if known.insert(xxhash_rust::xxh3::xxh3_64(data)) {
            corpus.push(data.clone());
        }
    }
    summary.seeds = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut rng = Rng::new(settings.seed);
    while summary.failure.is_none()
        && Instant::now() < deadline
        && settings.max_execs.is_none_or(|max| summary.execs < max)
    {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let input = {
            let mut mutator = Mutator {
                rng: &mut rng,
                dict: target.dict,
                nest: target.nest,
                max_len: target.max_len,
            };
            match target.mutate {
                Some(mutate) => mutate(&mut mutator, &corpus[a], &corpus[b]),
                None => mutator.mutate(&corpus[a], &corpus[b]),
            }
        };
        summary.execs += 1;
        let verdict = runner.exec(&input);
        if let Some(failure) = report(&mut runner, settings, verdict, &input, None) {
            summary.failure = Some(failure);
            break;
        }
        if seen.novel(runner.features.hashes())
            && corpus.len() < MAX_CORPUS
            && known.insert(xxhash_rust::xxh3::xxh3_64(&input))
        {
            corpus.push(input);
        }
    }
    summary.elapsed = start.elapsed();
    if let Some(dir) = &settings.save_corpus {
        let saved = std::fs::create_dir_all(dir).and_then(|()| {
            corpus.iter().try_for_each(|entry| {
                let name = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(entry));
                std::fs::write(dir.join(name), entry)
            })
        });
        if let Err(err) = saved {
            eprintln!(
                "vigil-fuzz: cannot save the corpus in {}: {err}",
                dir.display()
            );
        }
    }
    summary.corpus = corpus.len();
    summary.features = seen.features.len();
    summary.slowest = runner.slowest;
    if runner.slowest > settings.hang / 4 {
        summary.slowest_input =
            corpus::save_crash(&format!("slow-{}", target.name), &runner.slowest_input).ok();
    }
    summary.slow_once = runner.slow_once;
    summary.contained = runner.contained;
    if settings.verbose {
        print_summary(target.name, settings.seed, &summary);
    }
    summary
}

/// The watchdog's limit: a run still going after this is reported as a hang at once.
pub fn hard_limit(hang: Duration) -> Duration {
    (hang * 5).max(Duration::from_secs(10))
}

pub fn print_summary(name: &str, seed: u64, summary: &Summary) {
    println!(
        "vigil-fuzz: {name}: {} execs in {:.1} s ({:.0}/s), corpus {} -> {}, {} features, slowest run {} ms{}{}{}, seed {seed}: {}",
        summary.execs,
        summary.elapsed.as_secs_f64(),
        summary.execs_per_second(),
        summary.seeds,
        summary.corpus,
        summary.features,
        summary.slowest.as_millis(),
        match &summary.slowest_input {
            Some(path) => format!(" ({})", corpus::display(path)),
            None => String::new(),
        },
        if summary.slow_once > 0 {
            format!(" ({} slow once, not on rerun)", summary.slow_once)
        } else {
            String::new()
        },
        if summary.contained.is_empty() {
            String::new()
        } else {
            format!(
                ", contained panics: {}",
                summary
                    .contained
                    .iter()
                    .map(|(location, count, _)| format!("{count}x at {location}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        if summary.failure.is_some() { "FAILED" } else { "ok" }
    );
}

/// Prints and saves a failure; `None` when the verdict is fine.
fn report(
    runner: &mut Runner<'_>,
    settings: &Settings,
    verdict: Verdict,
    input: &[u8],
    seed_path: Option<&Path>,
) -> Option<String> {
    let name = runner.target.name;
    let (what, minimized) = match verdict {
        Verdict::Ok => return None,
        Verdict::Panic(message) => {
            let location = panics::location(&message).to_string();
            let minimized = runner.minimize(input, &location);
            (format!("PANIC: {message}"), Some(minimized))
        }
        Verdict::Hang(elapsed) => (
            format!(
                "HANG: one run took {} ms (twice), over the budget of {} ms",
                elapsed.as_millis(),
                settings.hang.as_millis()
            ),
            None,
        ),
    };
    let saved = corpus::save_crash(name, input);
    let mut text = format!("vigil-fuzz: {name}: {what}\n");
    match (&saved, seed_path) {
        (_, Some(seed)) => text += &format!("  input: {} (a seed input)\n", corpus::display(seed)),
        (Ok(path), None) => text += &format!("  input: {}\n", corpus::display(path)),
        (Err(err), None) => text += &format!("  input could not be saved: {err}\n"),
    }
    let rerun_path = seed_path
        .map(Path::to_path_buf)
        .or_else(|| saved.as_ref().ok().cloned());
    if let Some(minimized) = minimized.filter(|m| m.len() < input.len()) {
        if let Ok(path) = corpus::save_crash(&format!("{name}-min"), &minimized) {
            text += &format!(
                "  minimized ({} of {} bytes): {}\n",
                minimized.len(),
                input.len(),
                corpus::display(&path)
            );
        }
    }
    if let Some(path) = rerun_path {
        text += &format!(
            "  rerun: cargo run -p vigil-fuzz -- run {name} {}{}\n",
            corpus::display(&path),
            settings.flags
        );
    }
    text += &format!(
        "  fuzz again: cargo run -p vigil-fuzz -- {name} --seconds {} --seed {}{}\n  keep it as a regression: move it to fuzz/regressions/{name}/",
        settings.seconds, settings.seed, settings.flags
    );
    if settings.verbose {
        eprintln!("{text}");
    }
    Some(text)
}
