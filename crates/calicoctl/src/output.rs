//! Rendering resources as upstream calicoctl does: YAML (keys sorted, sequences not indented
//! under their key, as Go's yaml library writes them), JSON (two-space indent, `kind` then
//! `apiVersion` first), and `ps`/`wide`/`custom-columns` tables laid out as upstream's tab writer
//! (minimum width 5 including padding, padding 3).

use std::io::Write;

use calico_model::KindInfo;
use serde_json::{Map, Value};

/// Normalises numbers as Go's JSON encoder writes them: integral floats without a fraction.
pub fn normalize_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && !n.is_i64()
                && !n.is_u64()
                && f.fract() == 0.0
                && f.abs() < 1e21
                && f.abs() < 9.0e15
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// JSON as upstream prints it: `kind`, `apiVersion` first at the top level, two-space indent.
pub fn to_json(v: &Value) -> String {
    let mut v = v.clone();
    normalize_numbers(&mut v);
    let v = type_meta_first(v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

fn type_meta_first(v: Value) -> Value {
    match v {
        Value::Object(mut map) => {
            let mut out = Map::new();
            for k in ["kind", "apiVersion"] {
                if let Some(x) = map.remove(k) {
                    out.insert(k.to_string(), x);
                }
            }
            for (k, x) in map {
                let x = if k == "items" {
                    match x {
                        Value::Array(items) => {
                            Value::Array(items.into_iter().map(type_meta_first).collect())
                        }
                        other => other,
                    }
                } else {
                    x
                };
                out.insert(k, x);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(type_meta_first).collect()),
        other => other,
    }
}

/// YAML as Go's yaml library (via JSON) writes it.
pub fn to_yaml(v: &Value) -> String {
    let mut v = v.clone();
    normalize_numbers(&mut v);
    let mut out = String::new();
    match &v {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn emit_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for k in keys {
        let val = &m[k];
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(k));
        out.push(':');
        match val {
            Value::Object(c) if !c.is_empty() => {
                out.push('\n');
                emit_map(c, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                emit_seq(a, indent, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar_at(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn emit_seq(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Value::Object(c) if !c.is_empty() => {
                // The first key goes on the dash line; the rest align under it.
                let mut inner = String::new();
                emit_map(c, indent + 2, &mut inner);
                out.push_str(inner.trim_start_matches(' '));
            }
            Value::Array(n) if !n.is_empty() => {
                let mut inner = String::new();
                emit_seq(n, indent + 2, &mut inner);
                out.push_str(inner.trim_start_matches(' '));
            }
            other => {
                out.push_str(&scalar_at(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    scalar_at(v, 0)
}

fn scalar_at(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\n') && !s.trim_end_matches('\n').is_empty() => {
            literal_block(s, indent)
        }
        Value::String(s) => yaml_string(s),
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

/// A multi-line string as a literal block (`|` / `|-`).
fn literal_block(s: &str, indent: usize) -> String {
    let header = if s.ends_with('\n') { "|" } else { "|-" };
    let mut out = header.to_string();
    for line in s.trim_end_matches('\n').split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&" ".repeat(indent));
            out.push_str(line);
        }
    }
    out
}

/// A string scalar: plain when YAML would read it back as the same string, double-quoted when
/// plain would read as another type (numbers, booleans, null), single-quoted otherwise.
pub fn yaml_string(s: &str) -> String {
    if s.is_empty() || resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if s.chars().any(|c| c.is_control()) {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y", "Y",
        "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "+.inf", "-.inf", ".nan", ".NaN", ".NAN", "<<",
    ];
    if SPECIAL.contains(&s) || looks_like_timestamp(s) {
        return true;
    }
    let t = s.replace('_', "");
    let body = t.strip_prefix(['+', '-']).unwrap_or(&t);
    if body.is_empty() {
        return false;
    }
    // Integers (decimal, 0x, 0o, 0b, base 60 as YAML 1.1) and floats.
    if body.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    if let Some(h) = body.strip_prefix("0x")
        && !h.is_empty()
        && h.chars().all(|c| c.is_ascii_hexdigit())
    {
        return true;
    }
    if let Some(b) = body.strip_prefix("0b")
        && !b.is_empty()
        && b.chars().all(|c| c == '0' || c == '1')
    {
        return true;
    }
    if body.contains(':')
        && body
            .split(':')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && body.split(':').skip(1).all(|p| p.len() <= 2)
    {
        return true;
    }
    body.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && body.chars().any(|c| c.is_ascii_digit())
        && body.parse::<f64>().is_ok()
}

/// YAML 1.1 timestamps (`2006-1-2`, optionally followed by `T`, `t` or a space and a time),
/// which Go's emitter quotes.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let date_end = s.find(['T', 't', ' ']).unwrap_or(s.len());
    let mut parts = s[5..date_end].split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| (1..=2).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn plain_allowed(s: &str) -> bool {
    let first = s.chars().next().unwrap_or(' ');
    if matches!(
        first,
        '-' | '?'
            | ':'
            | ','
            | '['
            | ']'
            | '{'
            | '}'
            | '#'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) {
        // "-x", "?x" and ":x" are allowed by YAML when not followed by a space, but Go's
        // emitter quotes indicator-leading scalars; do the same.
        return false;
    }
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains('\t') {
        return false;
    }
    true
}

/// Go's `%v` of a float64: shortest digits, exponent notation when the exponent is below -4
/// or at least 6 (`1e+06`), as Go's `%g` with shortest precision.
pub fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..6).contains(&exp) {
        // Shortest mantissa digits, Go-style exponent (at least two digits).
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", e.abs())
    } else {
        let s = format!("{f}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
}

// ---- tables ----

/// How one column's value is read from the resource's JSON.
#[derive(Clone, Copy)]
enum Col {
    Name,
    Namespace,
    /// `{{.Spec.X}}` of a string (empty when absent).
    Str(&'static str),
    /// `{{.Spec.X}}` of a non-pointer bool (`false` when absent).
    Bool(&'static str),
    /// `{{.Spec.X}}` of a `*float64`: Go's `%v` (`1e+06`), `<nil>` when absent.
    Float(&'static str),
    /// `{{join .Spec.X ","}}`.
    Join(&'static str),
    /// Like Str but `Never` when empty.
    Mode(&'static str),
    /// BGPPeer NODE: node, else node selector, else `(global)`.
    PeerNode,
    /// WEP WORKLOAD: workload, else pod.
    Workload,
    /// Node's `spec.bgp.<field>`.
    NodeBgp(&'static str),
    /// `{{joinAndTruncate .Spec.X "," 80}}`.
    JoinTrunc(&'static str),
    /// `{{if .Spec.X}}{{.Spec.X}}{{else}}-{{end}}` of a pointer.
    OrDash(&'static str),
    /// `{{join .Spec.X ","}}` of a map: sorted `k=v`.
    JoinMap(&'static str),
}

struct KindColumns {
    ps: &'static [&'static str],
    wide: &'static [&'static str],
    cols: &'static [(&'static str, Col)],
}

const POLICY_COLS: &[(&str, Col)] = &[
    ("NAME", Col::Name),
    ("NAMESPACE", Col::Namespace),
    ("ORDER", Col::Float("order")),
    ("SELECTOR", Col::Str("selector")),
    ("TIER", Col::Str("tier")),
];
const GLOBAL_POLICY_COLS: &[(&str, Col)] = &[
    ("NAME", Col::Name),
    ("ORDER", Col::Float("order")),
    ("SELECTOR", Col::Str("selector")),
    ("TIER", Col::Str("tier")),
];
const NAME_ONLY: &[(&str, Col)] = &[("NAME", Col::Name)];

fn columns(kind: &str) -> KindColumns {
    match kind {
        "GlobalNetworkPolicy" | "StagedGlobalNetworkPolicy" => KindColumns {
            ps: &["NAME"],
            wide: &["NAME", "ORDER", "SELECTOR"],
            cols: GLOBAL_POLICY_COLS,
        },
        "NetworkPolicy" | "StagedNetworkPolicy" => KindColumns {
            ps: &["NAME", "TIER"],
            wide: &["NAME", "TIER", "ORDER", "SELECTOR"],
            cols: POLICY_COLS,
        },
        "Tier" => KindColumns {
            ps: &["NAME", "ORDER"],
            wide: &["NAME", "ORDER"],
            cols: &[("NAME", Col::Name), ("ORDER", Col::Float("order"))],
        },
        "Profile" => KindColumns {
            ps: &["NAME"],
            wide: &["NAME", "LABELS"],
            cols: &[
                ("NAME", Col::Name),
                ("LABELS", Col::JoinMap("labelsToApply")),
            ],
        },
        "NetworkSet" => KindColumns {
            ps: &["NAME"],
            wide: &["NAME", "NETS"],
            cols: &[
                ("NAME", Col::Name),
                ("NAMESPACE", Col::Namespace),
                ("NETS", Col::JoinTrunc("nets")),
            ],
        },
        "GlobalNetworkSet" => KindColumns {
            ps: &["NAME"],
            wide: &["NAME", "NETS"],
            cols: &[("NAME", Col::Name), ("NETS", Col::JoinTrunc("nets"))],
        },
        "IPReservation" => KindColumns {
            ps: &["NAME"],
            wide: &["NAME", "CIDRS"],
            cols: &[
                ("NAME", Col::Name),
                ("CIDRS", Col::JoinTrunc("reservedCIDRs")),
            ],
        },
        "IPPool" => KindColumns {
            ps: &["NAME", "CIDR", "SELECTOR"],
            wide: &[
                "NAME",
                "CIDR",
                "NAT",
                "IPIPMODE",
                "VXLANMODE",
                "DISABLED",
                "DISABLEBGPEXPORT",
                "SELECTOR",
            ],
            cols: &[
                ("NAME", Col::Name),
                ("CIDR", Col::Str("cidr")),
                ("NAT", Col::Bool("natOutgoing")),
                ("IPIPMODE", Col::Mode("ipipMode")),
                ("VXLANMODE", Col::Mode("vxlanMode")),
                ("DISABLED", Col::Bool("disabled")),
                ("DISABLEBGPEXPORT", Col::Bool("disableBGPExport")),
                ("SELECTOR", Col::Str("nodeSelector")),
            ],
        },
        "BGPPeer" => KindColumns {
            ps: &["NAME", "PEERIP", "NODE", "ASN"],
            wide: &["NAME", "PEERIP", "NODE", "ASN"],
            cols: &[
                ("NAME", Col::Name),
                ("PEERIP", Col::Str("peerIP")),
                ("NODE", Col::PeerNode),
                ("ASN", Col::Str("asNumber")),
            ],
        },
        "BGPConfiguration" => KindColumns {
            ps: &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
            wide: &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
            cols: &[
                ("NAME", Col::Name),
                ("LOGSEVERITY", Col::Str("logSeverityScreen")),
                ("MESHENABLED", Col::OrDash("nodeToNodeMeshEnabled")),
                ("ASNUMBER", Col::OrDash("asNumber")),
            ],
        },
        "HostEndpoint" => KindColumns {
            ps: &["NAME", "NODE"],
            wide: &["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
            cols: &[
                ("NAME", Col::Name),
                ("NODE", Col::Str("node")),
                ("INTERFACE", Col::Str("interfaceName")),
                ("IPS", Col::Join("expectedIPs")),
                ("PROFILES", Col::Join("profiles")),
            ],
        },
        "WorkloadEndpoint" => KindColumns {
            ps: &["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
            wide: &[
                "NAME",
                "WORKLOAD",
                "NODE",
                "NETWORKS",
                "INTERFACE",
                "PROFILES",
                "NATS",
            ],
            cols: &[
                ("NAME", Col::Name),
                ("NAMESPACE", Col::Namespace),
                ("NODE", Col::Str("node")),
                ("ORCHESTRATOR", Col::Str("orchestrator")),
                ("WORKLOAD", Col::Workload),
                ("NETWORKS", Col::Join("ipNetworks")),
                ("NATS", Col::Join("ipNATs")),
                ("PROFILES", Col::Join("profiles")),
                ("INTERFACE", Col::Str("interfaceName")),
            ],
        },
        "Node" => KindColumns {
            ps: &["NAME"],
            wide: &["NAME", "ASN", "IPV4", "IPV6"],
            cols: &[
                ("NAME", Col::Name),
                ("ASN", Col::NodeBgp("asNumber")),
                ("IPV4", Col::NodeBgp("ipv4Address")),
                ("IPV6", Col::NodeBgp("ipv6Address")),
            ],
        },
        _ => KindColumns {
            ps: &["NAME"],
            wide: &["NAME"],
            cols: NAME_ONLY,
        },
    }
}

fn cell(col: Col, v: &Value) -> String {
    let spec = v.get("spec");
    let field = |f: &str| spec.and_then(|s| s.get(f));
    let text = |x: Option<&Value>| match x {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => number_v(n),
        Some(other) => other.to_string(),
    };
    match col {
        Col::Name => text(v.get("metadata").and_then(|m| m.get("name"))),
        Col::Namespace => text(v.get("metadata").and_then(|m| m.get("namespace"))),
        Col::Str(f) => text(field(f)),
        Col::Bool(f) => match field(f) {
            Some(Value::Bool(b)) => b.to_string(),
            _ => "false".to_string(),
        },
        Col::Float(f) => match field(f) {
            None | Some(Value::Null) => "<nil>".to_string(),
            Some(Value::Number(n)) => n.as_f64().map(go_float).unwrap_or_else(|| n.to_string()),
            x => text(x),
        },
        Col::Join(f) => match field(f) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| text(Some(i)))
                .collect::<Vec<_>>()
                .join(","),
            x => text(x),
        },
        Col::Mode(f) => {
            let s = text(field(f));
            if s.is_empty() { "Never".to_string() } else { s }
        }
        Col::PeerNode => {
            let node = text(field("node"));
            let sel = text(field("nodeSelector"));
            if !node.is_empty() {
                node
            } else if !sel.is_empty() {
                sel
            } else {
                "(global)".to_string()
            }
        }
        Col::Workload => {
            let w = text(field("workload"));
            if w.is_empty() { text(field("pod")) } else { w }
        }
        Col::JoinTrunc(f) => {
            let joined = match field(f) {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| text(Some(i)))
                    .collect::<Vec<_>>()
                    .join(","),
                x => text(x),
            };
            if joined.chars().count() > 80 {
                let mut t: String = joined.chars().take(77).collect();
                t.push_str("...");
                t
            } else {
                joined
            }
        }
        Col::OrDash(f) => match field(f) {
            None | Some(Value::Null) => "-".to_string(),
            x => text(x),
        },
        Col::JoinMap(f) => match field(f) {
            Some(Value::Object(m)) => {
                let mut kv: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}={}", text(Some(v))))
                    .collect();
                kv.sort();
                kv.join(",")
            }
            _ => String::new(),
        },
        Col::NodeBgp(f) => match spec.and_then(|s| s.get("bgp")) {
            Some(bgp) if bgp.is_object() => text(bgp.get(f)),
            _ => String::new(),
        },
    }
}

fn number_v(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        n.to_string()
    } else {
        n.as_f64().map(go_float).unwrap_or_else(|| n.to_string())
    }
}

/// Which columns a table shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableStyle {
    Ps,
    Wide,
    Custom(Vec<String>),
}

/// Renders one table (header + one row per item) for one kind, followed by a blank line, as
/// upstream does for each listed object.
pub fn table(
    kind: &KindInfo,
    items: &[Value],
    style: &TableStyle,
    print_namespace: bool,
) -> Result<String, String> {
    let kc = columns(kind.kind);
    let mut headings: Vec<String> = match style {
        TableStyle::Ps => kc.ps.iter().map(|s| s.to_string()).collect(),
        TableStyle::Wide => kc.wide.iter().map(|s| s.to_string()).collect(),
        TableStyle::Custom(h) => h.clone(),
    };
    let has_ns = kc.cols.iter().any(|(h, _)| *h == "NAMESPACE");
    if print_namespace && has_ns && !matches!(style, TableStyle::Custom(_)) {
        headings.insert(0, "NAMESPACE".to_string());
    }
    let mut cols = Vec::with_capacity(headings.len());
    for h in &headings {
        match kc.cols.iter().find(|(name, _)| name == h) {
            Some((_, c)) => cols.push(*c),
            None => {
                let valid: Vec<&str> = kc.cols.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "Unknown heading {h}, valid values are: {}",
                    valid.join(", ")
                ));
            }
        }
    }
    // Go's tabwriter(minwidth 5, padding 3) makes a column max(cell + 3, 5) wide; this crate's
    // minwidth excludes the padding, so max(cell, 2) + 3 is the same width.
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(2).padding(3);
    let mut text = String::new();
    for h in &headings {
        text.push_str(h);
        text.push('\t');
    }
    text.push('\n');
    for item in items {
        for c in &cols {
            text.push_str(&cell(*c, item).replace(['\t', '\n'], " "));
            text.push('\t');
        }
        text.push('\n');
    }
    let _ = tw.write_all(text.as_bytes());
    let _ = tw.flush();
    let bytes = tw.into_inner().unwrap_or_default();
    let mut out = String::from_utf8_lossy(&bytes).into_owned();
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_like_go() {
        let v = json!({
            "kind": "GlobalNetworkPolicy",
            "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": "x", "resourceVersion": "12", "labels": {"a": "true"}},
            "spec": {
                "order": 100.0,
                "selector": "role == 'db'",
                "ingress": [{"action": "Allow", "source": {"nets": ["10.0.0.0/8"]}}],
                "types": ["Ingress"],
                "neg": "!has(x)",
                "empty": "",
                "list": [],
                "obj": {}
            }
        });
        let y = to_yaml(&v);
        let want = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  labels:
    a: \"true\"
  name: x
  resourceVersion: \"12\"
spec:
  empty: \"\"
  ingress:
  - action: Allow
    source:
      nets:
      - 10.0.0.0/8
  list: []
  neg: '!has(x)'
  obj: {}
  order: 100
  selector: role == 'db'
  types:
  - Ingress
";
        assert_eq!(y, want);
    }

    #[test]
    fn quoting() {
        assert_eq!(yaml_string("5663:12"), "\"5663:12\"");
        assert_eq!(yaml_string("1.5"), "\"1.5\"");
        assert_eq!(yaml_string("yes"), "\"yes\"");
        assert_eq!(yaml_string("a: b"), "'a: b'");
        assert_eq!(yaml_string("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(yaml_string("*"), "'*'");
        assert_eq!(
            yaml_string("2026-11-22T05:47:33Z"),
            "\"2026-11-22T05:47:33Z\""
        );
        assert_eq!(yaml_string("2026-11-22"), "\"2026-11-22\"");
        assert_eq!(yaml_string("2026-ab"), "2026-ab");
    }

    #[test]
    fn go_floats() {
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1_000_000.0), "1e+06");
        assert_eq!(go_float(100.5), "100.5");
        assert_eq!(go_float(123_456.0), "123456");
    }

    #[test]
    fn json_type_meta_first() {
        let v = json!({"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}, "spec": {"order": 5.0}});
        let s = to_json(&v);
        assert!(
            s.starts_with("{\n  \"kind\": \"Tier\",\n  \"apiVersion\""),
            "{s}"
        );
        assert!(s.contains("\"order\": 5\n"), "{s}");
    }

    #[test]
    fn truncation_and_dash() {
        let kind = KindInfo::lookup("globalnetworkset").unwrap();
        let nets: Vec<String> = (0..20).map(|i| format!("10.0.{i}.0/24")).collect();
        let items = vec![json!({"metadata": {"name": "n"}, "spec": {"nets": nets}})];
        let t = table(kind, &items, &TableStyle::Wide, false).unwrap();
        let row = t.lines().nth(1).unwrap().trim_end();
        assert!(row.ends_with("..."), "{row}");
        assert_eq!(row.trim_start_matches("n").trim_start().chars().count(), 80);
        let kind = KindInfo::lookup("bgpconfiguration").unwrap();
        let items =
            vec![json!({"metadata": {"name": "default"}, "spec": {"logSeverityScreen": "Info"}})];
        let t = table(kind, &items, &TableStyle::Ps, false).unwrap();
        assert_eq!(
            t.lines().nth(1).unwrap(),
            "default   Info          -             -          "
        );
    }

    #[test]
    fn ippool_wide_table() {
        let kind = KindInfo::lookup("ippool").unwrap();
        let items = vec![
            json!({"metadata": {"name": "p1"}, "spec": {"cidr": "10.0.0.0/16", "natOutgoing": true}}),
        ];
        let t = table(kind, &items, &TableStyle::Wide, false).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("NAME   CIDR          NAT    IPIPMODE   VXLANMODE"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("p1     10.0.0.0/16   true   Never      Never"),
            "{t}"
        );
        assert_eq!(lines[2], "");
        let e = table(
            kind,
            &items,
            &TableStyle::Custom(vec!["BOGUS".into()]),
            false,
        )
        .unwrap_err();
        assert!(e.contains("Unknown heading BOGUS"), "{e}");
    }
}
