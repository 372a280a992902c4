//! The `training-collector` binary: parses arguments, sets up logging, dispatches to the
//! library. Every behaviour lives in a library module; this file only connects them.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use training_collector::config::{Config, ConfigError, ConfigSource};
use training_collector::daemon::{self, Control, ControlChannel};
use training_collector::export::input::time_bound_micros;
use training_collector::export::{Format, SplitBy};
use training_collector::metrics::{self, Metrics};
use training_collector::record::{Feedback, Relevance};
use training_collector::{datadir, spool, training};

/// jemalloc rather than glibc malloc: ingest allocates per line on worker threads and frees
/// on the daemon's thread, where glibc's arena locks cost ~10% of the CPU. (mimalloc was as
/// fast but kept export's peak RSS at ~100 MiB against jemalloc's ~45 MiB.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: one arena for all threads. With one arena per
/// thread, what the daemon thread frees of the workers' allocations sat in the workers'
/// arenas: 1M ingest peaked at ~170 MiB; with one (threads still cache small sizes), 86 MiB,
/// and no slower.
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a NUL-terminated static string; jemalloc only reads it.
    unsafe { &*c"narenas:1".as_ptr() },
);

/// For the commands that export: freed pages are given back to the system over about a
/// second rather than jemalloc's ten. A first export at 100,000 examples peaked at ~64 MiB,
/// the last few MiB pages it had freed and kept for reuse; with 1 s, 56-62 MiB, no slower
/// (with 0: ~50 MiB, 20% slower, every free page handed back and faulted in again). The
/// daemon keeps the default: with 1 s for every command, one paired run of ingests took
/// more CPU (median 1.34 -> 1.63 s at 100,000), not worth it next to the service.
fn give_back_freed_memory_sooner() {
    let ms: isize = 1000;
    // The one arena (`narenas:1`), and the default of arenas made later (jemalloc's arena for
    // huge allocations is made on first use).
    for name in [c"arena.0.dirty_decay_ms", c"arenas.dirty_decay_ms"] {
        // SAFETY: these take an ssize_t; the name is NUL-terminated, the new value's pointer
        // and size match it; nothing is read back.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                (&ms as *const isize).cast_mut().cast(),
                std::mem::size_of::<isize>(),
            )
        };
        if rc != 0 {
            // Only memory at stake: go on with the default.
            tracing::debug!(rc, "jemalloc: cannot set {name:?}");
        }
    }
}

const DEFAULT_CONFIG: &str = "./config.toml";

/// Turns an LLM service's JSON-lines interaction logs into curated fine-tuning data.
///
/// Tails the logs named in config.toml, captures every interaction as a scored, tagged
/// training example, applies feedback and corrections from the spool directory, and builds
/// training sets in the formats TRL, Axolotl and OpenAI-style trainers read.
#[derive(Debug, Parser)]
#[command(name = "training-collector", version, about, long_about)]
struct Cli {
    /// The config file [default: ./config.toml]. Only when neither this option nor
    /// TRAINING_COLLECTOR_CONFIG names one and ./config.toml does not exist is the bundled
    /// default configuration used; a named file that is missing is an error.
    #[arg(
        long,
        global = true,
        env = "TRAINING_COLLECTOR_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd Type=notify). SIGTERM/SIGINT flush and
    /// exit 0, SIGHUP reloads the config, SIGUSR1 flushes now.
    Run,
    /// Validate the config and print the effective configuration (exit 2 on an error,
    /// naming the file, line and column).
    CheckConfig,
    /// Counts of captured examples, corrections, feedback and rejected lines.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build the curated training set from every segment and print a JSON report.
    Export {
        /// prompt-response, messages, prompt-completion, prompt-completion-messages, alpaca,
        /// dpo, dpo-messages, openai-dpo, kto or kto-messages [default: export.format in the
        /// config, prompt-response unless set].
        #[arg(long)]
        format: Option<Format>,
        /// Lowest domain relevance kept: high, medium or low [default: export.min_quality,
        /// medium unless set].
        #[arg(long, value_name = "high|medium|low")]
        min_quality: Option<Relevance>,
        /// Lowest auto_score kept, 0 to 1 (corrections count as 1) [default:
        /// export.min_score, 0 unless set].
        #[arg(long, value_name = "X", value_parser = score)]
        min_score: Option<f64>,
        /// Only examples and corrections with this tag (repeatable: any of them; replaces
        /// export.tags). Case is ignored; a tag that no record has and domain.tags does not
        /// name is an error.
        #[arg(long = "tag", value_name = "TAG", value_parser = not_blank)]
        tags: Vec<String>,
        /// At most this many lines in all, the best first (corrections, then thumbs up, then
        /// by auto_score, then newer); 0 = all [default: export.max_examples, 0 unless set].
        #[arg(long, value_name = "N")]
        max_examples: Option<u64>,
        /// Leave out examples and corrections with this tag (repeatable; besides
        /// export.exclude_tags). Case is ignored; an unknown tag is an error, as for --tag.
        #[arg(long = "exclude-tag", value_name = "TAG", value_parser = not_blank)]
        exclude_tags: Vec<String>,
        /// Leave correction records and verified_correction examples out (overrides
        /// export.include_corrections).
        #[arg(long)]
        no_corrections: bool,
        /// Output file [default: export.output in the config, under data_dir]; the
        /// validation, ids and manifest files go beside it.
        #[arg(long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Fraction of prompts written to <stem>.val.jsonl, at least 0 and below 1 [default:
        /// export.val_fraction, 0 (no validation file) unless set]. No file is written when
        /// no line falls in validation.
        #[arg(long, value_name = "X")]
        val_fraction: Option<f64>,
        /// What keeps lines on one side of the split: prompt or user (all of one user's
        /// lines, and corrections of them, on one side) [default: export.split_by, prompt
        /// unless set].
        #[arg(long, value_name = "prompt|user")]
        split_by: Option<SplitBy>,
        /// Also write <stem>.ids.txt beside each output file: line N holds the id of the
        /// example (or correction) line N was made from (as export.ids_file does).
        #[arg(long)]
        ids: bool,
        /// Neither read nor write the prepared cache (state/export-cache): prepare every
        /// segment afresh, as the first export does.
        #[arg(long)]
        no_cache: bool,
        /// Leave out examples that share a run of export.decontaminate_ngram words (12 unless
        /// set) with a text of this evaluation set (JSON lines, any shape; repeatable; besides
        /// export.decontaminate).
        #[arg(long, value_name = "PATH")]
        decontaminate: Vec<PathBuf>,
        /// Only examples and corrections timestamped at or after this time (RFC 3339, or a
        /// date: its midnight UTC).
        #[arg(long, value_name = "TIME", value_parser = time_bound_micros)]
        since: Option<i64>,
        /// Only those timestamped before this time.
        #[arg(long, value_name = "TIME", value_parser = time_bound_micros)]
        until: Option<i64>,
    },
    /// Is there enough curated data to train? Prints {"ready","current","required"};
    /// exit 0 when ready, 1 when not.
    Ready {
        /// Override training.min_examples.
        #[arg(long)]
        min_examples: Option<usize>,
    },
    /// The weekly check: export; when ready run training.sync_command, then
    /// training.train_command; else print "Need more data: N/M".
    TrainCheck,
    /// Record a thumbs up/down for an example id or the service's request id.
    Feedback {
        /// Example id (train_...) or the service's request id.
        #[arg(value_parser = not_blank)]
        id: String,
        /// positive or negative.
        #[arg(value_parser = feedback_value)]
        value: Feedback,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Record a correction of an answer.
    Correct {
        /// The question, as the original example has it.
        #[arg(long, value_parser = not_blank)]
        prompt: String,
        /// The answer being corrected, as the original example has it.
        #[arg(long, value_parser = not_blank)]
        response: String,
        /// The right answer.
        #[arg(long, value_parser = not_blank)]
        corrected: String,
        #[arg(long)]
        reason: Option<String>,
        /// The original's example id or request id, when known.
        #[arg(long, value_parser = not_blank)]
        id: Option<String>,
        #[arg(long)]
        corrector: Option<String>,
    },
}

/// `--min-score`: an `auto_score`, 0 to 1.
fn score(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("must be a number from 0 to 1, not {s:?}")),
    }
}

/// An argument that names or holds something: a blank one is a usage error (exit 2, nothing
/// spooled), not an event the daemon would refuse later, out of the user's sight.
fn not_blank(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty or blank".into())
    } else {
        Ok(s.to_string())
    }
}

/// `feedback`'s value, refused at parsing like any other bad argument.
fn feedback_value(s: &str) -> Result<Feedback, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whether the operator named the file (by option or environment), however it is spelt:
    // only the unnamed default may fall back to the bundled config.
    let explicit = cli.config.is_some();
    let path = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let (config, source) = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            note(&format!("error: {e}"));
            if let ConfigError::Invalid { .. } = e {
                note("(run `training-collector check-config` after fixing it)");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log_level);
    if matches!(
        cli.command,
        Command::Export { .. } | Command::Ready { .. } | Command::TrainCheck
    ) {
        give_back_freed_memory_sooner();
        if let Err(e) = end_exports_cleanly_on_signals() {
            note(&format!("warning: {}", error_chain(&e)));
        }
    }
    // `ready` answers 0 or 1; an error must not read as "not ready" to a wrapper script.
    let error_code = if matches!(cli.command, Command::Ready { .. }) {
        2
    } else {
        1
    };
    let result = dispatch(cli.command, config, source);
    // An interrupted export's signal handler removes its files and then ends the process by
    // the signal: what failed for want of them is no error to report, nor a status to exit
    // with first.
    while training_collector::export::interrupted() {
        std::thread::park();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            note(&format!("error: {}", error_chain(&e)));
            ExitCode::from(error_code)
        }
    }
}

/// Writes a command's output to stdout. A reader that has gone away (`stats | head -1`:
/// EPIPE) is not an error: what the command did stands (a feedback event is spooled, an
/// export written), and so does its exit code, as for a reader that read it all.
///
/// SIGPIPE stays ignored (Rust's default), for every command: restoring its default action
/// would let a closed stdout or stderr kill `run`, the daemon, whose log writes to a closed
/// stderr are dropped instead. `println!` would panic on EPIPE (exit 101).
fn out(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("cannot write to stdout"),
    }
}

/// A line for the operator on stderr; one that cannot be written is dropped (`eprintln!`
/// would panic on a closed pipe and turn the exit code into 101).
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The error and its causes, each cause once: the library's errors already name their
/// source in their own message (`cannot read X: No such file...`), which `{:#}` would repeat.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // The builder's default reports a failed write with `eprintln!` to the same stderr,
        // which panics when that stderr is a closed pipe: the daemon would die of its log
        // reader going away. A log line that cannot be written is dropped instead.
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    out(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

fn dispatch(command: Command, config: Config, source: ConfigSource) -> Result<ExitCode> {
    if matches!(
        command,
        Command::Run | Command::Export { .. } | Command::Ready { .. } | Command::TrainCheck
    ) {
        datadir::refuse_root_in_anothers_data_dir(&config, matches!(command, Command::Run))?;
    }
    match command {
        Command::Run => run(config, source),
        Command::CheckConfig => {
            note(&format!("config OK: {source}"));
            for warning in training_collector::preflight::warnings(&config) {
                note(&format!("warning: {warning}"));
            }
            out(&config.to_toml())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { json } => {
            let (stats, note_for_operator) = datadir::stats(&config)?;
            if let Some(n) = note_for_operator {
                note(&format!("warning: {n}"));
            }
            if json {
                print_json(&stats)?;
            } else {
                out(&training_collector::stats::render_table(&stats))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            format,
            min_quality,
            min_score,
            tags,
            exclude_tags,
            max_examples,
            no_corrections,
            output,
            val_fraction,
            split_by,
            ids,
            no_cache,
            decontaminate,
            since,
            until,
        } => {
            let req = datadir::ExportRequest {
                format,
                min_quality,
                min_score,
                tags,
                exclude_tags,
                max_examples,
                include_corrections: if no_corrections { Some(false) } else { None },
                output,
                val_fraction,
                ids,
                no_cache,
                decontaminate,
                since,
                until,
                split_by,
                progress: std::io::stderr().is_terminal(),
            };
            let report = datadir::export(&config, &req)?;
            print_json(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ready { min_examples } => {
            let r = training::ready(&config, min_examples)?;
            print_json(&r)?;
            Ok(if r.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::TrainCheck => {
            let outcome = training::train_check(&config)?;
            out(&outcome.report())?;
            Ok(outcome.exit_code())
        }
        Command::Feedback {
            id,
            value,
            comment,
            user,
        } => {
            let event = spool::SpoolEvent::Feedback {
                event_id: Some(spool::new_event_id()),
                id,
                feedback: serde_json::Value::from(value.as_str()),
                comment,
                user,
                timestamp: Some(training_collector::clock::now_rfc3339()),
            };
            write_spool(&config, event)
        }
        Command::Correct {
            prompt,
            response,
            corrected,
            reason,
            id,
            corrector,
        } => {
            let event = spool::SpoolEvent::Correction {
                event_id: Some(spool::new_event_id()),
                original_prompt: prompt,
                original_response: response,
                corrected_response: corrected,
                reason,
                corrector,
                id,
                timestamp: Some(training_collector::clock::now_rfc3339()),
            };
            write_spool(&config, event)
        }
    }
}

fn write_spool(config: &Config, event: spool::SpoolEvent) -> Result<ExitCode> {
    let path = spool::write_events(&config.spool.dir, std::slice::from_ref(&event))?;
    print_json(&serde_json::json!({ "spooled": path, "event": event }))?;
    Ok(ExitCode::SUCCESS)
}

fn run(config: Config, source: ConfigSource) -> Result<ExitCode> {
    // Before anything else: a second daemon must not even take the metrics port.
    let mut lock = training_collector::data_dir_lock::DataDirLock::acquire(&config.data_dir)?;
    let metrics = Arc::new(Metrics::default());
    metrics.set_instance(lock.instance(), &config.data_dir);
    if let Some(addr) = config.metrics.listen.0 {
        let bound = metrics::serve(addr, metrics.clone()).with_context(|| {
            format!(
                "cannot listen for metrics on {addr} (set [metrics] listen = \"\" to turn it off)"
            )
        })?;
        tracing::info!("metrics on http://{bound}/metrics");
        if let Err(e) = lock.record_endpoint(bound) {
            tracing::warn!("cannot record the metrics address in state/daemon.lock (stats asks metrics.listen instead): {e}");
        }
    }
    let channel = ControlChannel::new();
    install_signal_handlers(channel.sender.clone())?;
    daemon::run(config, source, lock, channel, metrics)?;
    Ok(ExitCode::SUCCESS)
}

/// For the commands that export: SIGINT, SIGTERM and SIGHUP remove the export's temporary
/// files and spill directories (an output set being renamed into place is finished first),
/// then end the process as the signal would have, so a shell or systemd sees it interrupted
/// (status 130, 143) rather than finished. Without this the default action ended the
/// process at once, leaving the files for a later export's hourly sweep. A signal the
/// command was started with ignored stays ignored (`nohup`, a script's `cmd &`, `trap ''
/// HUP`), as GNU sort does: a handler would turn the hangup nohup shields it from back into
/// its end.
fn end_exports_cleanly_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let handled: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&sig| !ignored_at_start(sig))
        .collect();
    let mut signals =
        signal_hook::iterator::Signals::new(handled).context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                training_collector::export::remove_own_temporary_files();
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                // Not reached unless the signal could not be raised again.
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}

/// Whether `sig` is ignored in this process (inherited from the parent: exec keeps an
/// ignored disposition).
fn ignored_at_start(sig: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`, a
    // zeroed plain-data struct that outlives the call.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Signals become [`Control`] messages on the daemon's channel (signal-hook's iterator runs
/// on its own thread, so nothing async-signal-unsafe happens in a handler).
fn install_signal_handlers(sender: std::sync::mpsc::Sender<Control>) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let control = match sig {
                    SIGHUP => Control::Reload,
                    SIGUSR1 => Control::Flush,
                    _ => Control::Shutdown,
                };
                tracing::info!(signal = sig, "signal received: {control:?}");
                if sender.send(control).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}
