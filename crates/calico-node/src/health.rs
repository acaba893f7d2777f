//! Readiness/liveness probes as upstream's flags: `-bird-ready` (every Calico BGP session
//! Established), `-felix-ready` / `-felix-live` (Felix's health endpoint).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// `birdc -s <ctl> show protocols` → (name, state info) of every BGP protocol.
pub async fn bgp_sessions(ctl: &Path) -> Result<Vec<(String, String)>> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("birdc")
            .arg("-s")
            .arg(ctl)
            .args(["show", "protocols"])
            .output(),
    )
    .await
    .context("birdc: timed out")?
    .context("birdc")?;
    if !out.status.success() {
        bail!(
            "unable to connect to BIRDv4 socket: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if let Some(row) = bgp_row(&cols) {
            v.push(row);
        }
    }
    Ok(v)
}

/// `Name Proto Table State Since Info` → (name, info) for BGP rows. `Since` is one token
/// (`hh:mm:ss.sss`) or two (`yyyy-mm-dd hh:mm:ss`), depending on BIRD's timeformat.
fn bgp_row(cols: &[&str]) -> Option<(String, String)> {
    if cols.len() < 5 || cols[1] != "BGP" {
        return None;
    }
    let mut info_at = 5;
    if cols.len() > 5 && cols[5].contains(':') && !cols[4].contains(':') {
        info_at = 6;
    }
    let info = cols.get(info_at..).map(|c| c.join(" ")).unwrap_or_default();
    Some((cols[0].to_string(), info))
}

fn http_status(addr: &str, path: &str) -> Result<u16> {
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad HTTP answer from {addr}{path}"))
}

/// Runs the probe flags; Ok when every requested probe passes.
pub async fn check_flags(args: &[String]) -> Result<()> {
    let run_dir = std::env::var("CALICO_RUN_DIR").unwrap_or_else(|_| "/var/run/calico".into());
    let host = std::env::var("FELIX_HEALTHHOST").unwrap_or_else(|_| "localhost".into());
    let port = std::env::var("FELIX_HEALTHPORT").unwrap_or_else(|_| "9099".into());
    for a in args {
        match a.trim_start_matches('-') {
            "bird-ready" => {
                let sessions = bgp_sessions(&Path::new(&run_dir).join("bird.ctl"))
                    .await
                    .context("BIRD is not ready")?;
                let down: Vec<String> = sessions
                    .iter()
                    .filter(|(_, info)| !info.starts_with("Established"))
                    .map(|(n, _)| n.clone())
                    .collect();
                if !down.is_empty() {
                    bail!(
                        "BIRD is not ready: BGP not established with {}",
                        down.join(",")
                    );
                }
            }
            "felix-ready" | "felix-live" => {
                let path = if a.contains("ready") {
                    "/readiness"
                } else {
                    "/liveness"
                };
                let code = http_status(&format!("{host}:{port}"), path)
                    .context("calico/node is not ready: Felix is not ready")?;
                if !(200..300).contains(&code) {
                    bail!("calico/node is not ready: Felix is not ready: {path} returned {code}");
                }
            }
            other => bail!("unknown flag -{other} (want -bird-ready, -felix-ready, -felix-live)"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_rows_with_both_time_formats() {
        let row = |l: &str| bgp_row(&l.split_whitespace().collect::<Vec<_>>());
        assert_eq!(
            row("Mesh_10_99_0_2 BGP --- up 09:01:00.123 Established"),
            Some(("Mesh_10_99_0_2".into(), "Established".into()))
        );
        assert_eq!(
            row("Node_10_0_0_9 BGP --- start 2026-11-22 09:01:00 Active Socket: refused"),
            Some(("Node_10_0_0_9".into(), "Active Socket: refused".into()))
        );
        assert_eq!(row("kernel1 Kernel master4 up 09:01:00.123"), None);
    }
}
