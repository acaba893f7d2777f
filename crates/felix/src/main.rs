//! `calico-felix`: the Felix agent. Configuration from `FELIX_*` environment variables and the
//! datastore (see `docs/dev/CONTRACTS.md` §1); runs in the network namespace it is started in.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use calico_datastore::config::{DatastoreConfig, connect};
use felix::agent::{self, Exit, LogLevelSetter, RESTART_EXIT_CODE, Startup};
use tokio::sync::watch;
use tracing::{error, info};

fn env_get<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// Upstream severities (`Debug`, `Info`, `Warning`, `Error`, `Fatal`, `Panic`, `None`) as a
/// tracing filter.
fn filter_for(severity: &str) -> tracing_subscriber::EnvFilter {
    let level = match severity.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "warning" | "warn" => "warn",
        "error" | "fatal" | "panic" => "error",
        "none" => "off",
        _ => "info",
    };
    tracing_subscriber::EnvFilter::new(level)
}

/// Sets up logging to stderr or `FELIX_LOGFILEPATH`; returns the live level setter (`RUST_LOG`,
/// when set, wins and is not changed).
fn init_tracing(env: &BTreeMap<String, String>) -> anyhow::Result<Option<LogLevelSetter>> {
    let from_rust_log = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").ok();
    let fixed = from_rust_log.is_some();
    let filter = from_rust_log
        .unwrap_or_else(|| filter_for(env_get(env, "FELIX_LOGSEVERITYSCREEN").unwrap_or("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let setter: LogLevelSetter =
        match env_get(env, "FELIX_LOGFILEPATH").filter(|p| !p.eq_ignore_ascii_case("none")) {
            Some(path) => {
                if let Some(dir) = std::path::Path::new(path).parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("log directory {}", dir.display()))?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("log file {path}"))?;
                let builder = builder
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter_reloading();
                let handle = builder.reload_handle();
                builder.init();
                Box::new(move |sev: &str| {
                    let _ = handle.reload(filter_for(sev));
                })
            }
            None => {
                let builder = builder.with_writer(std::io::stderr).with_filter_reloading();
                let handle = builder.reload_handle();
                builder.init();
                Box::new(move |sev: &str| {
                    let _ = handle.reload(filter_for(sev));
                })
            }
        };
    Ok((!fixed).then_some(setter))
}

async fn shutdown_signal(tx: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    let _ = tx.send(true);
}

async fn run(
    env: BTreeMap<String, String>,
    set_log_level: Option<LogLevelSetter>,
) -> anyhow::Result<Exit> {
    let ds = DatastoreConfig::load(None, &env).context("datastore configuration")?;
    let kv = connect(&ds).await.context("datastore connection")?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(shutdown_signal(tx));
    let exit = agent::run(
        Startup {
            env,
            kv,
            readiness_gates: Vec::new(),
            set_log_level,
        },
        rx,
    )
    .await?;
    Ok(exit)
}

/// jemalloc, with background threads purging freed pages: the initial listing of a large
/// cluster is transient, and glibc's heap kept its high-water mark as RSS for good.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let env = DatastoreConfig::process_env();
    let set_log_level = match init_tracing(&env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("calico-felix: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "allocator background purging unavailable; freed memory is returned lazily");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(env, set_log_level)) {
        Ok(Exit::Shutdown) => {
            info!("felix stopped");
            ExitCode::SUCCESS
        }
        Ok(Exit::RestartRequired(why)) => {
            error!(reason = %why, exit_code = RESTART_EXIT_CODE, "felix exiting so that its supervisor restarts it");
            ExitCode::from(u8::try_from(RESTART_EXIT_CODE).unwrap_or(1))
        }
        Err(e) => {
            error!("felix failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
