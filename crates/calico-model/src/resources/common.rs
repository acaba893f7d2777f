//! Validation helpers shared by several kinds (names, CIDRs, ports, labels).

use crate::error::Errors;

/// RFC 1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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

// ---------------------------------------------------------------------------------------------
// Address, selector and duration helpers (used by the IPAM, BGP, Felix and Node kinds).
// ---------------------------------------------------------------------------------------------

/// An address as Go's `net.ParseIP` accepts it: dotted IPv4 or textual IPv6, no zone, no
/// brackets, no surrounding blanks.
pub fn parse_ip(s: &str) -> Option<std::net::IpAddr> {
    s.parse::<std::net::IpAddr>().ok()
}

/// Upstream's `ParseCIDROrIP`: `addr/len` (the address need not be the network address) or a bare
/// address (taken as a full-length prefix). Returns the address as written and the prefix length.
pub fn parse_cidr_or_ip(s: &str) -> Option<(std::net::IpAddr, u8)> {
    match s.split_once('/') {
        None => {
            let ip = parse_ip(s)?;
            let len = if ip.is_ipv4() { 32 } else { 128 };
            Some((ip, len))
        }
        Some((addr, len)) => {
            let ip = parse_ip(addr)?;
            if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let len: u8 = len.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some((ip, len))
        }
    }
}

/// The network (address with host bits cleared) of `ip/len`.
pub fn network_of(ip: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// Whether two prefixes share any address (same family only).
pub fn prefixes_overlap(a: (std::net::IpAddr, u8), b: (std::net::IpAddr, u8)) -> bool {
    if a.0.is_ipv4() != b.0.is_ipv4() {
        return false;
    }
    let len = a.1.min(b.1);
    network_of(a.0, len) == network_of(b.0, len)
}

/// A CIDR or bare IP of either family (upstream's `cidr` tag: not necessarily strictly masked).
pub fn validate_cidr(path: &str, s: &str, errs: &mut Errors) {
    if parse_cidr_or_ip(s).is_none() {
        errs.push(path, format!("{s:?} is not a valid IP address or CIDR"));
    }
}

/// A CIDR or bare IP whose host bits are zero (upstream's `net` tag).
pub fn validate_masked_cidr(path: &str, s: &str, errs: &mut Errors) {
    match parse_cidr_or_ip(s) {
        None => errs.push(path, format!("{s:?} is not a valid IP address or CIDR")),
        Some((ip, len)) if network_of(ip, len) != ip => errs.push(
            path,
            format!(
                "{s:?} is not strictly masked (the network address is {}/{len})",
                network_of(ip, len)
            ),
        ),
        Some(_) => {}
    }
}

/// A plain IP address; `family` 4 or 6 restricts the family, 0 accepts both.
pub fn validate_ip(path: &str, s: &str, family: u8, errs: &mut Errors) {
    match (parse_ip(s), family) {
        (Some(ip), 4) if ip.is_ipv4() => {}
        (Some(ip), 6) if ip.is_ipv6() => {}
        (Some(_), 0) => {}
        (_, 4) => errs.push(path, format!("{s:?} is not a valid IPv4 address")),
        (_, 6) => errs.push(path, format!("{s:?} is not a valid IPv6 address")),
        _ => errs.push(path, format!("{s:?} is not a valid IP address")),
    }
}

/// A label selector in the Calico selector language.
pub fn validate_selector(path: &str, s: &str, errs: &mut Errors) {
    if let Err(e) = crate::selector::parse(s) {
        errs.push(path, format!("invalid selector: {e}"));
    }
}

/// Parses a Go `time.Duration` string (`90s`, `1m30s`, `500ms`, `1.5h`, `0`) into nanoseconds.
/// Negative values are refused: no Calico duration field accepts them.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.starts_with('-') {
        return Err("duration must not be negative".into());
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err("missing number".into());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(format!("invalid number in {s:?}"));
        }
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid number in {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {s:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err(format!("duration {s:?} overflows"));
    }
    Ok(total as i128)
}

/// A Go duration string (see [`parse_go_duration`]).
pub fn validate_duration(path: &str, s: &str, errs: &mut Errors) {
    if let Err(e) = parse_go_duration(s) {
        errs.push(
            path,
            format!("{s:?} is not a valid duration ({e}); use e.g. 90s, 5m, 1h30m, 500ms"),
        );
    }
}

/// A hardware address as Go's `net.ParseMAC` accepts it (EUI-48, EUI-64 or 20-octet InfiniBand;
/// `:`/`-` separated octets or `.` separated groups of four hex digits).
pub fn is_valid_mac(s: &str) -> bool {
    let hex = |g: &str, n: usize| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit());
    let ok_count = |n: usize| matches!(n, 6 | 8 | 20);
    for sep in [':', '-'] {
        let groups: Vec<&str> = s.split(sep).collect();
        if groups.len() > 1 {
            return ok_count(groups.len()) && groups.iter().all(|g| hex(g, 2));
        }
    }
    let groups: Vec<&str> = s.split('.').collect();
    groups.len() > 1 && ok_count(groups.len() * 2) && groups.iter().all(|g| hex(g, 4))
}

/// Upstream's resource-name rule (`nameRegex` in the v3 validator, the same as Kubernetes'
/// `IsDNS1123Subdomain`): dot-separated lower-case alphanumeric/`-` labels, each starting and
/// ending alphanumeric, at most 253 characters in total. Unlike [`is_dns1123_subdomain`] there is
/// no 63-character limit per label (upstream accepts a 253-character single-label name).
pub fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Validates `metadata.name` with [`is_resource_name`].
pub fn validate_resource_name(path: &str, s: &str, errs: &mut Errors) {
    if s.len() > 253 {
        errs.push(
            path,
            format!("name is too long by {} bytes (at most 253)", s.len() - 253),
        );
    } else if !is_resource_name(s) {
        errs.push(
            path,
            format!(
                "{s:?} is not a valid name: must consist of lower case alphanumeric characters, \
                 '-' or '.', each dot-separated part starting and ending with an alphanumeric"
            ),
        );
    }
}

/// Deserializes an explicit `null` as the type's default, as Go's JSON decoding leaves a field at
/// its zero value for `null` (a YAML key with no value, `nodeSelector:`, is `null`). Use with
/// `#[serde(default, deserialize_with = "...")]`.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize as _;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
