//! `calicoctl node status` (reference §4.6): is a Calico process running, and the BGP peers
//! BIRD reports over its control socket (`$CALICO_RUN_DIR/bird.ctl`, default
//! `/var/run/calico/bird.ctl`; `--run-dir` overrides), in upstream's table.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

/// `calicoctl node <command>`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// View the status of Calico on this node.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Directory holding bird.ctl / bird6.ctl (default $CALICO_RUN_DIR, else /var/run/calico).
    #[arg(long = "run-dir")]
    pub run_dir: Option<PathBuf>,
}

/// One BGP peer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub address: String,
    pub peer_type: &'static str,
    pub state: String,
    pub since: String,
    pub info: String,
}

/// Errors reading BIRD's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct BirdParseError(pub String);

impl std::fmt::Display for BirdParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses the reply to `show protocols` (after the `0001` greeting): `2002` header, `1002`
/// first row, ` `-prefixed continuation rows, `0000` end. Keeps Calico BGP peers only.
pub fn parse_show_protocols(reply: &str, v6: bool) -> Result<Vec<PeerRow>, BirdParseError> {
    let mut rows = Vec::new();
    let mut ended = false;
    for line in reply.lines() {
        let (code, rest) = if let Some(rest) = line.strip_prefix(' ') {
            ("", rest)
        } else if line.len() >= 4 && line[..4].bytes().all(|b| b.is_ascii_digit()) {
            (&line[..4], line.get(5..).unwrap_or(""))
        } else {
            return Err(BirdParseError(format!(
                "unexpected line from BIRD: {line:?}"
            )));
        };
        match code {
            "0001" => {}
            "2002" => {
                let cols: Vec<&str> = rest.split_whitespace().collect();
                if cols != ["Name", "Proto", "Table", "State", "Since", "Info"] {
                    return Err(BirdParseError(format!(
                        "unexpected header from BIRD: {rest:?}"
                    )));
                }
            }
            "1002" | "" => {
                if let Some(r) = parse_row(rest, v6) {
                    rows.push(r);
                }
            }
            "0000" => {
                ended = true;
                break;
            }
            c if c.starts_with('8') || c.starts_with('9') => {
                return Err(BirdParseError(format!("BIRD error {c}: {rest}")));
            }
            _ => {}
        }
    }
    if !ended {
        return Err(BirdParseError("incomplete answer from BIRD".into()));
    }
    Ok(rows)
}

fn parse_row(line: &str, v6: bool) -> Option<PeerRow> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.len() < 5 || cols[1] != "BGP" {
        return None;
    }
    let name = cols[0];
    let (prefix, rest) = name.split_once('_')?;
    let peer_type = match prefix {
        "Global" => "global",
        "Node" => "node specific",
        "Mesh" => "node-to-node mesh",
        _ => return None,
    };
    // Names carry `_port_<n>` for non-default ports; the address is what comes before.
    let addr_part = rest.split("_port_").next().unwrap_or(rest);
    let address = addr_part.replace('_', if v6 { ":" } else { "." });
    // Since is one token (time) or two (date + time) depending on BIRD's timeformat.
    let mut idx = 4;
    let mut since = cols[idx].to_string();
    if cols.len() > idx + 1 && cols[idx + 1].contains(':') && !cols[idx].contains(':') {
        idx += 1;
        since = format!("{} {}", since, cols[idx]);
    }
    let info = cols.get(idx + 1..).map(|c| c.join(" ")).unwrap_or_default();
    Some(PeerRow {
        address,
        peer_type,
        state: cols[3].to_string(),
        since,
        info,
    })
}

/// Upstream's tablewriter table: headers centred, cells left-aligned.
pub fn render_table(rows: &[PeerRow]) -> String {
    let headers = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.address.clone(),
                r.peer_type.to_string(),
                r.state.clone(),
                r.since.clone(),
                r.info.clone(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &cells {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = sep.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w - h.len();
        let left = pad / 2;
        let _ = write!(
            out,
            "| {}{}{} ",
            " ".repeat(left),
            h,
            " ".repeat(pad - left)
        );
    }
    out.push_str("|\n");
    out.push_str(&sep);
    for r in &cells {
        for (c, w) in r.iter().zip(&widths) {
            let _ = write!(out, "| {c:<w$} ");
        }
        out.push_str("|\n");
    }
    out.push_str(&sep);
    out
}

/// Sends `show protocols` over the control socket and returns the raw reply.
fn query_bird(ctl: &Path) -> std::io::Result<String> {
    let stream = UnixStream::connect(ctl)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    (&stream).write_all(b"show protocols\n")?;
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let end = line.starts_with("0000") || line.starts_with('8') || line.starts_with('9');
        reply.push_str(&line);
        if end {
            break;
        }
    }
    Ok(reply)
}

fn calico_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm"))
            .is_ok_and(|c| matches!(c.trim(), "calico-felix" | "calico-node"))
    })
}

/// `calicoctl node status`. Returns the exit code.
pub fn status(args: &StatusArgs, env_run_dir: Option<&str>) -> anyhow::Result<i32> {
    if !calico_running() {
        println!("Calico process is not running.");
        return Ok(1);
    }
    println!("Calico process is running.");
    let dir = args
        .run_dir
        .clone()
        .or_else(|| env_run_dir.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/calico"));
    for (v6, sock, label) in [(false, "bird.ctl", "IPv4"), (true, "bird6.ctl", "IPv6")] {
        println!();
        println!("{label} BGP status");
        let path = dir.join(sock);
        if v6 && !path.exists() {
            println!("No IPv6 peers found.");
            continue;
        }
        let reply = query_bird(&path).map_err(|e| {
            anyhow::anyhow!(
                "Error querying BIRD: unable to connect to BIRDv{} socket: {}: {e}",
                if v6 { 6 } else { 4 },
                path.display()
            )
        })?;
        let rows = parse_show_protocols(&reply, v6)
            .map_err(|e| anyhow::anyhow!("Error querying BIRD: {e}"))?;
        if rows.is_empty() {
            println!("No {label} peers found.");
        } else {
            print!("{}", render_table(&rows));
        }
    }
    println!();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "0001 BIRD 2.0.12 ready.\n\
2002-Name       Proto      Table      State  Since         Info\n\
1002-device1    Device     ---        up     10:00:01.123  \n \
kernel1    Kernel     master4    up     10:00:01.123  \n \
Mesh_10_99_0_2 BGP        ---        up     10:00:02.456  Established   \n \
Node_10_99_0_254 BGP        ---        start  10:00:01.123  Active        Socket: Connection refused\n \
Global_10_0_0_9_port_1179 BGP        ---        start  10:00:01.123  Connect       \n \
Local_Workload_10_0_0_1 BGP   ---        up     10:00:01.123  Established\n\
0000 \n";

    #[test]
    fn parses_calico_bgp_rows_only() {
        let rows = parse_show_protocols(REPLY, false).unwrap();
        assert_eq!(
            rows,
            vec![
                PeerRow {
                    address: "10.99.0.2".into(),
                    peer_type: "node-to-node mesh",
                    state: "up".into(),
                    since: "10:00:02.456".into(),
                    info: "Established".into()
                },
                PeerRow {
                    address: "10.99.0.254".into(),
                    peer_type: "node specific",
                    state: "start".into(),
                    since: "10:00:01.123".into(),
                    info: "Active Socket: Connection refused".into()
                },
                PeerRow {
                    address: "10.0.0.9".into(),
                    peer_type: "global",
                    state: "start".into(),
                    since: "10:00:01.123".into(),
                    info: "Connect".into()
                },
            ]
        );
    }

    #[test]
    fn v6_names_and_bad_replies() {
        let r = "2002-Name Proto Table State Since Info\n1002-Mesh_fd00__2 BGP --- up 10:00 Established\n0000\n";
        assert_eq!(parse_show_protocols(r, true).unwrap()[0].address, "fd00::2");
        assert!(parse_show_protocols("2002-Name Proto\n0000\n", false).is_err());
        assert!(parse_show_protocols("1002-x BGP --- up 1 y\n", false).is_err());
        assert!(parse_show_protocols("9001 syntax error\n", false).is_err());
    }

    #[test]
    fn table_matches_upstream_layout() {
        let rows = parse_show_protocols(REPLY, false).unwrap();
        let t = render_table(&rows[..1]);
        assert_eq!(
            t,
            "+--------------+-------------------+-------+--------------+-------------+\n\
| PEER ADDRESS |     PEER TYPE     | STATE |    SINCE     |    INFO     |\n\
+--------------+-------------------+-------+--------------+-------------+\n\
| 10.99.0.2    | node-to-node mesh | up    | 10:00:02.456 | Established |\n\
+--------------+-------------------+-------+--------------+-------------+\n"
        );
    }
}
