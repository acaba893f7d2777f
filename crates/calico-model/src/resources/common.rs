//! Validation helpers shared by several kinds (names, CIDRs, ports, labels).

use crate::error::Errors;

/// RFC 1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, ≤ 253.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub fn validate_dns1123_label(path: &str, s: &str, errs: &mut Errors) {
    if !is_dns1123_label(s) {
        errs.push(
            path,
            format!(
                "{s:?} is not a valid name: must be lower-case alphanumerics or '-', start and \
                 end with an alphanumeric, at most 63 characters"
            ),
        );
    }
}

pub fn validate_dns1123_subdomain(path: &str, s: &str, errs: &mut Errors) {
    if !is_dns1123_subdomain(s) {
        errs.push(
            path,
            format!(
                "{s:?} is not a valid name: must be lower-case alphanumerics, '-' or '.', start \
                 and end with an alphanumeric, at most 253 characters"
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers added for the policy-side kinds (policies, tiers, profiles, endpoints, network sets).
// ---------------------------------------------------------------------------------------------

/// Parses `a.b.c.d/n`, `x::/n` or a bare address (as a /32 or /128), like upstream's
/// `ParseCIDROrIP`. Returns the address as written and the network it denotes (host bits kept).
pub fn parse_cidr_or_ip_net(s: &str) -> Option<(std::net::IpAddr, ipnet::IpNet)> {
    if s.contains('/') {
        let net: ipnet::IpNet = s.parse().ok()?;
        Some((net.addr(), net))
    } else {
        let addr: std::net::IpAddr = s.parse().ok()?;
        Some((addr, ipnet::IpNet::from(addr)))
    }
}

/// Parses a CIDR that must carry a prefix length (`a.b.c.d/n`), like Go's `net.ParseCIDR`.
pub fn parse_cidr_with_prefix(s: &str) -> Option<ipnet::IpNet> {
    if !s.contains('/') {
        return None;
    }
    s.parse().ok()
}

/// Whether a parsed network has no host bits set (`10.0.0.0/8` yes, `10.0.0.1/8` no).
pub fn is_strictly_masked(net: &ipnet::IpNet) -> bool {
    net.addr() == net.network()
}

/// Kubernetes "qualified name" (label keys, annotation keys): optional DNS-1123 subdomain
/// prefix and `/`, then a name of at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric. Returns the reason when invalid.
pub fn check_qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        if !is_dns1123_subdomain(p) {
            return Err(format!(
                "prefix part {p:?} must be a lower-case DNS-1123 subdomain"
            ));
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !is_k8s_label_value_syntax(name) {
        return Err(format!(
            "name part {name:?} must consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Kubernetes label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err("a label value must be no more than 63 characters".into());
    }
    if !is_k8s_label_value_syntax(s) {
        return Err(format!(
            "label value {s:?} must consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

fn is_k8s_label_value_syntax(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Validates a label map (keys qualified names, values label values) under `path`
/// (e.g. `metadata.labels`); each problem names the key.
pub fn validate_label_map(
    path: &str,
    labels: &std::collections::BTreeMap<String, String>,
    errs: &mut Errors,
) {
    for (k, v) in labels {
        if let Err(e) = check_qualified_name(k) {
            errs.push(format!("{path}[{k:?}]"), format!("invalid label key: {e}"));
        }
        if let Err(e) = check_label_value(v) {
            errs.push(
                format!("{path}[{k:?}]"),
                format!("invalid label value: {e}"),
            );
        }
    }
}

/// Upstream's total annotation size limit (keys plus values), 256 KiB.
pub const ANNOTATIONS_MAX_TOTAL_BYTES: usize = 256 * 1024;

/// Validates an annotation map under `path`: keys are qualified names (checked lower-cased,
/// as upstream does) and the total size is bounded.
pub fn validate_annotation_map(
    path: &str,
    annotations: &std::collections::BTreeMap<String, String>,
    errs: &mut Errors,
) {
    let mut total = 0usize;
    for (k, v) in annotations {
        if let Err(e) = check_qualified_name(&k.to_ascii_lowercase()) {
            errs.push(
                format!("{path}[{k:?}]"),
                format!("invalid annotation key: {e}"),
            );
        }
        total += k.len() + v.len();
    }
    if total > ANNOTATIONS_MAX_TOTAL_BYTES {
        errs.push(
            path,
            format!(
                "total size of annotations is too large by {} bytes",
                total - ANNOTATIONS_MAX_TOTAL_BYTES
            ),
        );
    }
}

/// Validates the labels and annotations of `metadata`, as upstream's `validateObjectMeta`.
pub fn validate_meta_labels_annotations(meta: &crate::meta::ObjectMeta, errs: &mut Errors) {
    validate_label_map("metadata.labels", &meta.labels, errs);
    validate_annotation_map("metadata.annotations", &meta.annotations, errs);
}

/// Upstream's limit on selector fields in the CRDs.
pub const SELECTOR_MAX_LEN: usize = 1024;

/// Validates a selector field: non-empty selectors must parse and be at most 1024 characters.
/// An empty selector is valid (it means `all()`).
pub fn validate_selector_field(path: &str, s: &str, errs: &mut Errors) {
    if s.is_empty() {
        return;
    }
    if s.len() > SELECTOR_MAX_LEN {
        errs.push(
            path,
            format!("selector is longer than {SELECTOR_MAX_LEN} characters"),
        );
        return;
    }
    if let Err(e) = crate::selector::parse(s) {
        errs.push(
            path,
            format!(
                "invalid selector {s:?}: {} at column {}",
                e.message, e.column
            ),
        );
    }
}

/// Kubernetes port name (IANA service name): 1–15 characters of lower-case alphanumerics and
/// `-`, at least one letter, no leading/trailing or doubled `-`.
pub fn is_valid_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

/// Linux interface name as upstream's `interface` validator: `[a-zA-Z0-9_.-]{1,15}`.
pub fn is_valid_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}
