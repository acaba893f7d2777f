//! BGPFilter rules as BIRD filter functions `'bgp_<name>_{import,export}FilterV{4,6}'`.

use calico_model::Resource;
use calico_model::resources::bgp::{
    BGPFilterRule, BGPFilterSpec, FilterAction, FilterMatchSource, FilterPeerType, MatchOperator,
};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::RenderError;
use crate::plan::{BIRD_INT_MAX, Family, FilterFunction, filter_function_name};

/// BIRD symbols are at most 64 characters; `bgp_` + `_importFilterV4` take 19.
const MAX_NAME: usize = 64 - 19;

/// Filter names longer than BIRD allows are cut and suffixed with a hash of the full name, so
/// distinct long names stay distinct.
pub(crate) fn truncate_name(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_string();
    }
    let digest = Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let keep = MAX_NAME - hash.len() - 1;
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &name[..cut])
}

/// Every BGPFilter's functions for `family`, sorted by filter name (import before export).
pub(crate) fn functions(
    filters: &[Resource<BGPFilterSpec>],
    family: Family,
) -> Result<Vec<FilterFunction>, RenderError> {
    let mut sorted: Vec<&Resource<BGPFilterSpec>> = filters.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for f in sorted {
        let (import, export, field) = match family {
            Family::V4 => (&f.spec.import_v4, &f.spec.export_v4, "V4"),
            Family::V6 => (&f.spec.import_v6, &f.spec.export_v6, "V6"),
        };
        for (is_import, rules) in [(true, import), (false, export)] {
            if rules.is_empty() {
                continue;
            }
            let dir = if is_import { "import" } else { "export" };
            let mut body = Vec::new();
            for (i, rule) in rules.iter().enumerate() {
                let path = format!("spec.{dir}{field}[{i}]");
                body.push(format!(
                    "  {}",
                    rule_statement(&f.metadata.name, &path, rule, family)?
                ));
            }
            out.push(FilterFunction {
                filter: f.metadata.name.clone(),
                function: filter_function_name(&f.metadata.name, is_import, family),
                takes_peer_type: rules.iter().any(|r| r.peer_type.is_some()),
                body,
            });
        }
    }
    Ok(out)
}

fn rule_statement(
    filter: &str,
    path: &str,
    rule: &BGPFilterRule,
    family: Family,
) -> Result<String, RenderError> {
    let bad = |field: &str, message: String| RenderError::BadFilter {
        filter: filter.to_string(),
        field: format!("{path}.{field}"),
        message,
    };
    let mut conds: Vec<String> = Vec::new();
    if !rule.cidr.is_empty() {
        let net: IpNet = rule
            .cidr
            .parse()
            .map_err(|_| bad("cidr", format!("{:?} is not a CIDR", rule.cidr)))?;
        let fam_ok = matches!(
            (family, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        );
        if !fam_ok {
            return Err(bad(
                "cidr",
                format!("{} is not of this rule list's IP family", rule.cidr),
            ));
        }
        let op = rule
            .match_operator
            .ok_or_else(|| bad("matchOperator", "is required with cidr".to_string()))?;
        let target = match &rule.prefix_length {
            Some(pl) => {
                let max_len = i64::from(net.max_prefix_len());
                let min = pl.min.unwrap_or(i64::from(net.prefix_len()));
                let max = pl.max.unwrap_or(max_len);
                if min < i64::from(net.prefix_len()) || max > max_len || min > max {
                    return Err(bad(
                        "prefixLength",
                        format!("{min}..{max} does not fit {}", rule.cidr),
                    ));
                }
                format!("[ {}{{{min},{max}}} ]", rule.cidr)
            }
            None => rule.cidr.clone(),
        };
        conds.push(match op {
            MatchOperator::In => format!("(net ~ {target})"),
            MatchOperator::NotIn => format!("(net !~ {target})"),
            MatchOperator::Equal => format!("(net = {})", rule.cidr),
            MatchOperator::NotEqual => format!("(net != {})", rule.cidr),
        });
    }
    if rule.source == Some(FilterMatchSource::RemotePeers) {
        conds.push("((defined(source))&&(source ~ [ RTS_BGP ]))".to_string());
    }
    if !rule.interface.is_empty() {
        if rule.interface.contains(['"', '\n']) {
            return Err(bad(
                "interface",
                format!("{:?} cannot be written as a BIRD string", rule.interface),
            ));
        }
        conds.push(format!(
            "((defined(ifname))&&(ifname ~ \"{}\"))",
            rule.interface
        ));
    }
    match rule.peer_type {
        Some(FilterPeerType::IBgp) => conds.push("(is_same_as)".to_string()),
        Some(FilterPeerType::EBgp) => conds.push("(!is_same_as)".to_string()),
        None => {}
    }
    if let Some(c) = &rule.communities {
        for v in &c.values {
            conds.push(
                community_match(v)
                    .ok_or_else(|| bad("communities", format!("{v:?} is not a community")))?,
            );
        }
    }
    if !rule.as_path_prefix.is_empty() {
        let path: Vec<String> = rule
            .as_path_prefix
            .iter()
            .map(|a| a.0.to_string())
            .collect();
        conds.push(format!("(bgp_path ~ [= {} * =])", path.join(" ")));
    }
    if let Some(p) = rule.priority {
        conds.push(format!(
            "(defined(bgp_local_pref)&&(bgp_local_pref = {}))",
            BIRD_INT_MAX - p
        ));
    }
    let mut actions = Vec::new();
    for (i, op) in rule.operations.iter().enumerate() {
        if let Some(c) = &op.add_community {
            let stmt = community_add(&c.value).ok_or_else(|| {
                bad(
                    &format!("operations[{i}].addCommunity"),
                    format!("{:?} is not a community", c.value),
                )
            })?;
            actions.push(stmt);
        }
        if let Some(p) = &op.prepend_as_path {
            for a in &p.prefix {
                actions.push(format!("bgp_path.prepend({});", a.0));
            }
        }
        if let Some(s) = &op.set_priority {
            actions.push(format!("krt_metric = {};", s.value));
            actions.push(format!("bgp_local_pref = {};", BIRD_INT_MAX - s.value));
        }
    }
    actions.push(match rule.action {
        FilterAction::Accept => "accept;".to_string(),
        FilterAction::Reject => "reject;".to_string(),
    });
    if conds.is_empty() {
        return Ok(actions.join(" "));
    }
    Ok(format!(
        "if ({}) then {{ {} }}",
        conds.join("&&"),
        actions.join(" ")
    ))
}

fn community_parts(v: &str) -> Option<Vec<u32>> {
    let parts: Option<Vec<u32>> = v.split(':').map(|p| p.parse().ok()).collect();
    parts.filter(|p| p.len() == 2 || p.len() == 3)
}

fn community_match(v: &str) -> Option<String> {
    let p = community_parts(v)?;
    Some(match p.as_slice() {
        [a, b] => format!("((defined(bgp_community))&&(({a}, {b}) ~ bgp_community))"),
        [a, b, c] => {
            format!("((defined(bgp_large_community))&&(({a}, {b}, {c}) ~ bgp_large_community))")
        }
        _ => return None,
    })
}

fn community_add(v: &str) -> Option<String> {
    let p = community_parts(v)?;
    Some(match p.as_slice() {
        [a, b] => format!("bgp_community.add(({a}, {b}));"),
        [a, b, c] => format!("bgp_large_community.add(({a}, {b}, {c}));"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::truncate_name;

    #[test]
    fn long_names_are_cut_and_hashed() {
        assert_eq!(truncate_name("short"), "short");
        let long = "x".repeat(80);
        let t = truncate_name(&long);
        assert_eq!(t.len(), 45);
        assert_ne!(t, truncate_name(&"x".repeat(81)));
    }
}
