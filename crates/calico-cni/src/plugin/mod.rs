//! The plugins' request handling: read the environment and stdin, run the command, print the
//! result or the CNI error JSON, exit.

mod calico;
mod context;
mod ipam;
mod k8s;
mod net;
pub mod timing;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use crate::spec::version::version_result;
use crate::spec::{CniError, Command, ErrorCode, NetConf, Request, SpecVersion};

pub use context::Context;

/// Which binary is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Calico,
    CalicoIpam,
}

/// Process entry point shared by both binaries.
pub fn entry(binary: Binary) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some((first, rest)) = args.split_first()
        && first == net::DELETE_LINK_ARG
    {
        return net::delete_link_helper(rest);
    }
    let env: BTreeMap<String, String> = std::env::vars().collect();
    timing::init(env.get(timing::TIMING_ENV).map(String::as_str));
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = cni_version_of(&stdin);
    timing::mark("stdin");
    let outcome = match read {
        Err(e) => Err(CniError::new(
            ErrorCode::Io,
            "failed to read network configuration",
            e.to_string(),
        )),
        Ok(_) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                timing::mark("runtime");
                let outcome = rt.block_on(run(binary, &env, &stdin));
                timing::mark("close");
                drop(rt);
                timing::mark("runtime_drop");
                outcome
            }
            Err(e) => Err(CniError::plugin("failed to start runtime", e.to_string())),
        },
    };
    let mut out = std::io::stdout().lock();
    let code = match outcome {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(code = e.code.code(), error = %e, "request failed");
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    };
    drop(out);
    timing::report(env.get("CNI_COMMAND").map_or("", String::as_str));
    code
}

/// The request's `cniVersion`, read leniently (for error results and VERSION).
fn cni_version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| SpecVersion::parse(v).is_ok())
        .unwrap_or_default()
}

/// Runs one request. `Ok(Some(json))` is printed on stdout.
pub async fn run(
    binary: Binary,
    env: &BTreeMap<String, String>,
    stdin: &[u8],
) -> Result<Option<serde_json::Value>, CniError> {
    let req = Request::from_env(env)?;
    if req.command == Command::Version {
        return Ok(Some(version_result(&cni_version_of(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    timing::mark("parse");
    let version = conf.version();
    match req.command {
        Command::Check if !version.has_check() => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("CHECK is not supported by cniVersion {version}"),
                "CHECK requires cniVersion 0.4.0 or later",
            ));
        }
        Command::Gc | Command::Status if !version.has_gc_and_status() => {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("{:?} is not supported by cniVersion {version}", req.command),
                "GC and STATUS require cniVersion 1.1.0",
            ));
        }
        _ => {}
    }
    context::init_logging(&conf, binary);
    timing::mark("logging");
    let span = tracing::info_span!("cni", command = ?req.command, container = %req.container_id);
    let _enter = span.enter();
    match binary {
        Binary::Calico => calico::run(&req, &conf, env).await,
        Binary::CalicoIpam => ipam::run(&req, &conf, env).await,
    }
}
