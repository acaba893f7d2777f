//! Chain, set and map names. nft identifiers are `[A-Za-z_.][A-Za-z0-9/_.-]*`; anything
//! else (or anything too long) is replaced by a hash so that every name parses unquoted.

use felix_calc::msg::PolicyId;
use sha2::{Digest, Sha256};

use crate::rules::Family;

/// Longest name we emit (nft allows 256 for chains and sets).
const MAX_NAME: usize = 200;

/// `prefix` + `suffix` if that is a valid identifier, else `prefix` + `_` + a hash of suffix.
pub fn limited(prefix: &str, suffix: &str) -> String {
    let ok = !suffix.is_empty()
        && suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-'))
        && prefix.len() + suffix.len() <= MAX_NAME;
    if ok {
        return format!("{prefix}{suffix}");
    }
    let digest = Sha256::digest(suffix.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

/// `gnp/name`, `np/namespace/name` (upstream's policy ID string, kind abbreviated).
pub fn policy_id(id: &PolicyId) -> String {
    let kind = match id.kind.as_str() {
        "GlobalNetworkPolicy" | "" => "gnp".to_string(),
        "NetworkPolicy" => "np".to_string(),
        other => other.to_ascii_lowercase(),
    };
    if id.namespace.is_empty() {
        format!("{kind}/{}", id.name)
    } else {
        format!("{kind}/{}/{}", id.namespace, id.name)
    }
}

/// Policy chain: `pi-<id>` (inbound rules) or `po-<id>` (outbound rules).
pub fn policy_chain(id: &PolicyId, inbound: bool) -> String {
    limited(if inbound { "pi-" } else { "po-" }, &policy_id(id))
}

/// Profile chain: `pri-<name>` / `pro-<name>`.
pub fn profile_chain(name: &str, inbound: bool) -> String {
    limited(if inbound { "pri-" } else { "pro-" }, name)
}

/// Per-endpoint chain, e.g. `tw-cali1234` (prefix `tw-`).
pub fn endpoint_chain(prefix: &str, iface: &str) -> String {
    limited(prefix, iface)
}

/// Shared policy-dispatch chain of workloads: `tp-<hash>` (to the workload, ingress policy) or
/// `fp-<hash>` (from it), the hash over the dispatch rules themselves, so that endpoints with
/// the same tiers, policies and profiles (and the same known/unknown policies) share it.
pub fn shared_dispatch_chain(inbound: bool, rules: &[String]) -> String {
    let mut h = Sha256::new();
    for r in rules {
        h.update(r.as_bytes());
        h.update([0u8]);
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}{hex}", if inbound { "tp-" } else { "fp-" })
}

/// Characters of an IP set id's hash kept in set names (96 bits of base64).
const SET_HASH_CHARS: usize = 16;

/// `<prefix><first 16 hash chars>` for the calculation graph's `<kind>:<base64 hash>` ids,
/// else `<prefix><id>` (hashed if needed). Short names matter: the kernel finds a set by name
/// with a linear walk over the table's sets comparing whole names, once per rule that
/// references one, and with 2,000 sets that walk was a fifth of a cold start's `nft -f`.
fn set_name(prefix: &str, id: &str) -> String {
    match id.split_once(':') {
        Some((kind, hash))
            if kind.len() == 1
                && hash.len() >= SET_HASH_CHARS
                && hash
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            format!("{prefix}{}", &hash[..SET_HASH_CHARS])
        }
        _ => limited(prefix, &id.replace(':', "-")),
    }
}

/// Address set of a selector (or network set) IP set: `s4-<hash>` / `s6-<hash>`.
pub fn selector_set(id: &str, fam: Family) -> String {
    set_name(&format!("s{}-", fam.digit()), id)
}

/// Address set of an IP set with prefixes (network set CIDRs): `c4-<hash>` / `c6-<hash>`, an
/// interval set. IP sets of addresses only are hash sets (`s4-`/`s6-`): cheaper to load and to
/// look up; an IP set that gains or loses its last prefix moves between the two names.
pub fn prefix_set(id: &str, fam: Family) -> String {
    set_name(&format!("c{}-", fam.digit()), id)
}

/// Named-port set: `n4-<hash>` / `n6-<hash>`.
pub fn named_port_set(id: &str, fam: Family) -> String {
    set_name(&format!("n{}-", fam.digit()), id)
}

/// A comment safe inside double quotes (at most 128 bytes with the rule tag in front).
pub fn comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .take(100)
        .collect();
    format!("comment \"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_or_hashed() {
        assert_eq!(limited("tw-", "cali12ab"), "tw-cali12ab");
        let h = limited("tw-", "we ird\"");
        assert!(h.starts_with("tw-_") && h.len() == 4 + 24, "{h}");
        let id = PolicyId {
            tier: "default".into(),
            name: "default.allow-dns".into(),
            namespace: "kube-system".into(),
            kind: "NetworkPolicy".into(),
        };
        assert_eq!(
            policy_chain(&id, true),
            "pi-np/kube-system/default.allow-dns"
        );
        assert_eq!(selector_set("s:Ab-_9", Family::V6), "s6-s-Ab-_9");
        assert_eq!(
            selector_set("s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug", Family::V4),
            "s4-5y5I3VdRZfDU01O-"
        );
        assert_eq!(
            named_port_set("n:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug", Family::V6),
            "n6-5y5I3VdRZfDU01O-"
        );
    }
}
