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
