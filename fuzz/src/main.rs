//! `vigil-fuzz`: a small corpus-driven mutation fuzzer on stable Rust for every parser a
//! client can reach (see `targets/`).
//!
//! ```text
//! vigil-fuzz all [--seconds 60]           every target in turn, N seconds each
//! vigil-fuzz <target> [--seconds N]       one target
//! vigil-fuzz run <target> <file|dir>...   replay inputs (a crash, a corpus directory;
//!                                         VIGIL_FUZZ_FEATURES=1 lists what each reached)
//! vigil-fuzz list                         the targets
//! vigil-fuzz gen-seeds                    rewrite corpus/remote_write/ (binary seeds)
//!   --seed S        the PRNG seed (printed; default: from the clock)
//!   --hang-ms M     a run slower than this, twice, is a hang (default 2000)
//!   --stack-mib N   stack of the thread running the targets (default 64, the server's)
//!   --save-corpus D write each target's grown corpus to D/<target>/ at the end
//! ```
//!
//! Each target is fuzzed in a child process (`__worker`) that writes every input to a
//! file before running it, so an input that kills the process (stack overflow, abort,
//! out of memory, a run that never returns) is still reported. A failure is written to
//! `fuzz/crashes/<target>-<hash>` with the command that reruns it; the exit status is
//! non-zero.

mod corpus;
mod features;
mod fuzzer;
mod mutate;
mod panics;
mod rng;
mod seeds;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fuzzer::{Settings, EXIT_FAILURE, EXIT_HANG};
use targets::{Target, TARGETS};

/// A run slower than this (twice in a row) is a hang.
const DEFAULT_HANG_MS: u64 = 2000;
/// The stack of the thread running the targets: the server's runtime threads get
/// 64 MiB (`src/main.rs`, `EVAL_STACK_BYTES`) for the recursion over expression trees
/// the entry guards allow (a 1,000-operator `1+1+…` needs more than 2 MiB in the dev
/// profile).
const DEFAULT_STACK_MIB: usize = 64;

struct Options {
    seconds: f64,
    seed: Option<u64>,
    hang_ms: u64,
    stack_mib: usize,
    max_execs: Option<u64>,
    current: Option<PathBuf>,
    save_corpus: Option<PathBuf>,
    positional: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seconds: 60.0,
        seed: None,
        hang_ms: DEFAULT_HANG_MS,
        stack_mib: DEFAULT_STACK_MIB,
        max_execs: None,
        current: None,
        save_corpus: None,
        positional: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, text: String| -> Result<u64, String> {
            text.parse()
                .map_err(|_| format!("{name}: not a number: {text:?}"))
        };
        match arg.as_str() {
            "--seconds" => {
                let text = value("--seconds")?;
                options.seconds = text
                    .parse()
                    .map_err(|_| format!("--seconds: not a number: {text:?}"))?;
            }
            "--seed" => options.seed = Some(number("--seed", value("--seed")?)?),
            "--hang-ms" => options.hang_ms = number("--hang-ms", value("--hang-ms")?)?,
            "--stack-mib" => {
                options.stack_mib = number("--stack-mib", value("--stack-mib")?)? as usize
            }
            "--max-execs" => {
                options.max_execs = Some(number("--max-execs", value("--max-execs")?)?)
            }
            "--current" => options.current = Some(PathBuf::from(value("--current")?)),
            "--save-corpus" => options.save_corpus = Some(PathBuf::from(value("--save-corpus")?)),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => options.positional.push(arg.clone()),
        }
    }
    Ok(options)
}

const USAGE: &str = "usage: vigil-fuzz all|<target> [--seconds N] [--seed S] [--hang-ms M] [--stack-mib N] [--save-corpus DIR]\n       vigil-fuzz run <target> <file|dir>...\n       vigil-fuzz list | gen-seeds";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let options = match parse_options(&args[1..]) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("vigil-fuzz: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let code = match command.as_str() {
        "list" => {
            for target in TARGETS {
                println!("{}", target.name);
            }
            0
        }
        "gen-seeds" => match seeds::write_remote_write(&corpus::corpus_dir("remote_write")) {
            Ok(n) => {
                println!("vigil-fuzz: wrote {n} remote_write seeds");
                0
            }
            Err(err) => {
                eprintln!("vigil-fuzz: {err}");
                1
            }
        },
        "run" => replay(&options),
        "__worker" => worker(&options),
        "all" => supervise(TARGETS.iter().collect(), &options),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            0
        }
        name => match targets::find(name) {
            Some(target) => supervise(vec![target], &options),
            None => {
                eprintln!("vigil-fuzz: unknown target {name:?}\n{USAGE}");
                2
            }
        },
    };
    targets::cleanup();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn settings(options: &Options, seed: u64, verbose: bool) -> Settings {
    Settings {
        seconds: options.seconds,
        seed,
        hang: Duration::from_millis(options.hang_ms),
        max_execs: options.max_execs,
        current: options.current.clone(),
        verbose,
        save_corpus: options.save_corpus.clone(),
        flags: flags(options),
    }
}

/// The options that change what a run does, as flags to repeat in printed commands.
fn flags(options: &Options) -> String {
    let mut flags = String::new();
    if options.hang_ms != DEFAULT_HANG_MS {
        flags += &format!(" --hang-ms {}", options.hang_ms);
    }
    if options.stack_mib != DEFAULT_STACK_MIB {
        flags += &format!(" --stack-mib {}", options.stack_mib);
    }
    flags
}

/// Runs `body` on a thread with the targets' stack size.
fn on_big_stack<T: Send>(stack_mib: usize, body: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("fuzz".into())
            .stack_size(stack_mib.max(1) << 20)
            .spawn_scoped(scope, body)
            .expect("cannot start the fuzzing thread");
        match handle.join() {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    })
}

/// In the child: fuzz one target, report, exit 0 or [`EXIT_FAILURE`].
fn worker(options: &Options) -> i32 {
    let Some(target) = options.positional.first().and_then(|n| targets::find(n)) else {
        eprintln!("vigil-fuzz: __worker needs a target");
        return 2;
    };
    panics::install(true);
    let settings = settings(options, options.seed.unwrap_or(1), true);
    let summary = on_big_stack(options.stack_mib, || fuzzer::fuzz(target, &settings));
    if summary.failure.is_some() {
        EXIT_FAILURE
    } else {
        0
    }
}

/// Fuzzes each target in a child process; reports what a dead child left behind.
fn supervise(targets: Vec<&'static Target>, options: &Options) -> i32 {
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
    });
    println!(
        "vigil-fuzz: seed {seed}, {} s per target, hang budget {} ms",
        options.seconds, options.hang_ms
    );
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("vigil-fuzz: cannot find my own executable: {err}");
            return 1;
        }
    };
    let mut results = Vec::new();
    for target in targets {
        let current =
            corpus::crashes_dir().join(format!(".current-{}-{}", target.name, std::process::id()));
        let mut command = std::process::Command::new(&exe);
        command
            .arg("__worker")
            .arg(target.name)
            .args(["--seconds", &options.seconds.to_string()])
            .args(["--seed", &seed.to_string()])
            .args(["--hang-ms", &options.hang_ms.to_string()])
            .args(["--stack-mib", &options.stack_mib.to_string()])
            .arg("--current")
            .arg(&current);
        if let Some(max) = options.max_execs {
            command.args(["--max-execs", &max.to_string()]);
        }
        if let Some(dir) = &options.save_corpus {
            command.arg("--save-corpus").arg(dir.join(target.name));
        }
        let outcome = match command.spawn() {
            Ok(child) => wait_worker(child, options),
            Err(err) => Err(format!("cannot start a worker: {err}")),
        };
        let ok = match outcome {
            Ok(0) => true,
            Ok(EXIT_FAILURE) => false,
            Ok(code) => {
                left_behind(
                    target.name,
                    &current,
                    &format!("exit status {code}"),
                    seed,
                    options,
                );
                false
            }
            Err(status) => {
                left_behind(target.name, &current, &status, seed, options);
                false
            }
        };
        let _ = std::fs::remove_file(&current);
        results.push((target.name, ok));
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    if failed.is_empty() {
        println!(
            "vigil-fuzz: all {} target(s) ok (seed {seed})",
            results.len()
        );
        0
    } else {
        eprintln!("vigil-fuzz: FAILED: {} (seed {seed})", failed.join(", "));
        1
    }
}

/// The worker's exit code, or how it died.
fn wait_worker(mut child: std::process::Child, options: &Options) -> Result<i32, String> {
    let started = Instant::now();
    // Setup, the seeds, the time box, a last run up to the watchdog's limit, minimizing.
    let limit = Duration::from_secs_f64(options.seconds.max(0.0))
        + fuzzer::hard_limit(Duration::from_millis(options.hang_ms)) * 2
        + Duration::from_secs(180);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return status.code().ok_or_else(|| {
                    use std::os::unix::process::ExitStatusExt as _;
                    match status.signal() {
                        Some(signal) => format!("killed by signal {signal}"),
                        None => status.to_string(),
                    }
                })
            }
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still running after {} s, killed",
                    started.elapsed().as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(err) => return Err(format!("cannot wait for the worker: {err}")),
        }
    }
}

/// A worker died: report the input it was running.
fn left_behind(name: &str, current: &std::path::Path, how: &str, seed: u64, options: &Options) {
    let what = if how == format!("exit status {EXIT_HANG}") {
        "HANG (the watchdog ended the run)".to_string()
    } else {
        format!("CRASH: the worker died ({how}: a stack overflow, an abort or out of memory)")
    };
    eprintln!("vigil-fuzz: {name}: {what}");
    match fuzzer::read_current(current) {
        Some(input) => match corpus::save_crash(name, &input) {
            Ok(path) => eprintln!(
                "  input: {}\n  rerun: cargo run -p vigil-fuzz -- run {name} {}{}",
                corpus::display(&path),
                corpus::display(&path),
                flags(options)
            ),
            Err(err) => eprintln!("  the input could not be saved: {err}"),
        },
        None => eprintln!("  no input recorded (it died before running one)"),
    }
    eprintln!(
        "  fuzz again: cargo run -p vigil-fuzz -- {name} --seconds {} --seed {seed}{}",
        options.seconds,
        flags(options)
    );
}

/// `run <target> <file|dir>...`: each input once, with the default panic output.
fn replay(options: &Options) -> i32 {
    let Some((name, paths)) = options.positional.split_first() else {
        eprintln!("{USAGE}");
        return 2;
    };
    let Some(target) = targets::find(name) else {
        eprintln!("vigil-fuzz: unknown target {name:?}");
        return 2;
    };
    panics::install(false);
    let hang = Duration::from_millis(options.hang_ms);
    on_big_stack(options.stack_mib, || {
        (target.init)();
        let mut failed = 0;
        for path in paths {
            let path = PathBuf::from(path);
            let inputs = if path.is_dir() {
                corpus::files(&path)
            } else {
                std::fs::read(&path).map(|data| vec![(path.clone(), data)])
            };
            let inputs = match inputs {
                Ok(inputs) => inputs,
                Err(err) => {
                    eprintln!("vigil-fuzz: {}: {err}", path.display());
                    failed += 1;
                    continue;
                }
            };
            for (path, data) in inputs {
                let mut features = features::Features::named();
                let (result, elapsed, contained) = fuzzer::run_one(target, &data, &mut features);
                let verdict = match result {
                    Err(message) => {
                        failed += 1;
                        format!("PANIC: {message}")
                    }
                    Ok(()) if elapsed > hang => {
                        failed += 1;
                        format!(
                            "HANG: {} ms, over the budget of {} ms",
                            elapsed.as_millis(),
                            hang.as_millis()
                        )
                    }
                    Ok(()) if contained => {
                        format!("ok, after a panic it caught itself: {}", panics::last())
                    }
                    Ok(()) => "ok".to_string(),
                };
                println!(
                    "{}: {verdict} ({} bytes, {} ms, {} features)",
                    path.display(),
                    data.len(),
                    elapsed.as_millis(),
                    features.hashes().len()
                );
                if std::env::var_os("VIGIL_FUZZ_FEATURES").is_some() {
                    for name in features.names() {
                        println!("    {name}");
                    }
                }
            }
        }
        i32::from(failed > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed and regression input goes through its target without a
    /// panic and within the hang budget (a crash found by fuzzing stays fixed once its
    /// input is under `regressions/<target>/`).
    #[test]
    fn corpus_and_regressions_replay_cleanly() {
        panics::install(false);
        let failures = on_big_stack(64, || {
            let mut failures = Vec::new();
            for dir in ["corpus", "regressions"] {
                if let Ok(entries) = std::fs::read_dir(corpus::root().join(dir)) {
                    for entry in entries.flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if targets::find(&name).is_none() {
                            failures.push(format!("{dir}/{name}: no such target"));
                        }
                    }
                }
            }
            for target in TARGETS {
                (target.init)();
                let seeds = corpus::seeds(target.name).expect("the corpus is readable");
                if corpus::files(&corpus::corpus_dir(target.name))
                    .expect("the corpus is readable")
                    .len()
                    < 5
                {
                    failures.push(format!("{}: fewer than 5 seeds", target.name));
                }
                for (path, data) in seeds {
                    let mut features = features::Features::default();
                    let (result, elapsed, _) = fuzzer::run_one(target, &data, &mut features);
                    if let Err(message) = result {
                        failures.push(format!("{}: {message}", path.display()));
                    } else if elapsed > Duration::from_secs(10) {
                        failures.push(format!("{}: took {elapsed:?}", path.display()));
                    }
                }
            }
            failures
        });
        targets::cleanup();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The committed remote_write seeds are what `gen-seeds` writes.
    #[test]
    fn remote_write_seeds_are_generated() {
        for (name, data) in seeds::remote_write() {
            let path = corpus::corpus_dir("remote_write").join(name);
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == data,
                "{} differs from `vigil-fuzz gen-seeds`'s output",
                path.display()
            );
        }
    }

    /// A short, seeded run of every target finds nothing and grows the corpus.
    #[test]
    fn short_fuzz_of_every_target() {
        panics::install(true);
        for target in TARGETS {
            let settings = Settings {
                seconds: 20.0,
                seed: 42,
                hang: Duration::from_secs(10),
                max_execs: Some(150),
                current: None,
                verbose: false,
                save_corpus: None,
                flags: String::new(),
            };
            let summary = on_big_stack(64, || fuzzer::fuzz(target, &settings));
            assert!(
                summary.failure.is_none(),
                "{}: {:?}",
                target.name,
                summary.failure
            );
            assert!(
                summary.execs >= 150,
                "{}: {} execs",
                target.name,
                summary.execs
            );
            assert!(summary.features > 0, "{}", target.name);
        }
        targets::cleanup();
    }
}
