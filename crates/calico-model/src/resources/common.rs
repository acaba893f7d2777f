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
