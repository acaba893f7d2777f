//! The rendered table as data (sets, verdict maps, chains) and its text forms: the full atomic
//! replacement script and the minimal incremental transaction between two renderings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use calico_linux::nft::ElementChange;
use sha2::{Digest, Sha256};

/// Identity tag of a rule in a chain: `h:` + 12 hex digits of SHA-256 over chain name and rule
/// text. Carried in the rule's comment so that a listing of the kernel's table shows whether
/// each rule is exactly the one we wrote (upstream's `cali:<hash>` comments).
pub fn rule_tag(chain: &str, rule: &str) -> String {
    let mut h = Sha256::new();
    h.update(chain.as_bytes());
    h.update([0u8]);
    h.update(rule.as_bytes());
    let hex: String = h
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("h:{hex}")
}

/// The rule as written to the kernel: its tag is put in front of its own comment, or added as
/// the comment.
pub fn tagged_rule(chain: &str, rule: &str) -> String {
    let tag = rule_tag(chain, rule);
    match rule.rfind(" comment \"") {
        Some(idx) if rule.ends_with('"') => {
            format!("{} comment \"{tag} {}", &rule[..idx], &rule[idx + 10..])
        }
        _ => format!("{rule} comment \"{tag}\""),
    }
}

/// A named set: its declaration body (type and flags) and its elements in nft syntax.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetDef {
    /// e.g. `type ipv4_addr; flags interval;`
    pub decl: String,
    pub elements: BTreeSet<String>,
}

/// A verdict map: declaration body and key → verdict (both in nft syntax).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MapDef {
    pub decl: String,
    pub elements: BTreeMap<String, String>,
}

/// A chain: optional base-chain header (`type filter hook forward priority filter; policy
/// accept;`) and its rules in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainDef {
    pub base: Option<String>,
    pub rules: Vec<String>,
}

/// One complete rendering of our table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    pub family: String,
    pub table: String,
    pub sets: BTreeMap<String, SetDef>,
    pub maps: BTreeMap<String, MapDef>,
    pub chains: BTreeMap<String, ChainDef>,
}

impl Ruleset {
    /// `<family> <table>`, as used in every statement.
    pub fn table_ref(&self) -> String {
        format!("{} {}", self.family, self.table)
    }

    /// The table definition alone (`table inet calico { ... }`), sorted and deterministic.
    pub fn definition(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "table {} {{", self.table_ref());
        for (name, set) in &self.sets {
            let _ = write!(out, "  set {name} {{ {}", set.decl);
            if !set.elements.is_empty() {
                let _ = write!(out, " elements = {{ {} }};", join(set.elements.iter()));
            }
            out.push_str(" }\n");
        }
        for (name, map) in &self.maps {
            let _ = write!(out, "  map {name} {{ {}", map.decl);
            if !map.elements.is_empty() {
                let elems = map.elements.iter().map(|(k, v)| format!("{k} : {v}"));
                let _ = write!(out, " elements = {{ {} }};", join(elems));
            }
            out.push_str(" }\n");
        }
        // Chains are declared before they are filled so that forward jumps resolve.
        for (name, chain) in &self.chains {
            let _ = writeln!(out, "  chain {name} {{");
            if let Some(base) = &chain.base {
                let _ = writeln!(out, "    {base}");
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "    {}", tagged_rule(name, rule));
            }
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        out
    }

    /// The atomic replacement script: create-if-missing, delete, define — one transaction, so
    /// the kernel never runs without the table (no enforcement gap) and a failure changes
    /// nothing.
    pub fn full_script(&self) -> String {
        let t = self.table_ref();
        format!("table {t}\ndelete table {t}\n{}", self.definition())
    }

    /// When `self` differs from `old` only in the elements of sets both have (same
    /// declarations; chains and maps identical), those differences per set, removals before
    /// additions; else `None`. Such a transaction can go to the kernel without `nft`.
    pub fn element_changes(&self, old: &Ruleset) -> Option<Vec<ElementChange>> {
        if self.family != old.family || self.table != old.table {
            return None;
        }
        if self.chains != old.chains || self.maps != old.maps {
            return None;
        }
        if self.sets.len() != old.sets.len() {
            return None;
        }
        let mut out = Vec::new();
        for (name, set) in &self.sets {
            let prev = old.sets.get(name).filter(|o| o.decl == set.decl)?;
            let removed: Vec<String> = prev.elements.difference(&set.elements).cloned().collect();
            let added: Vec<String> = set.elements.difference(&prev.elements).cloned().collect();
            for (add, elements) in [(false, removed), (true, added)] {
                if !elements.is_empty() {
                    out.push(ElementChange {
                        set: name.clone(),
                        decl: set.decl.clone(),
                        add,
                        elements,
                    });
                }
            }
        }
        Some(out)
    }

    /// The minimal transaction that turns `old` (what the kernel has) into `self`, or `None`
    /// when it needs a full replacement (a set or map changed its type, a chain changed
    /// between base and regular). Empty string when nothing changed.
    pub fn diff_script(&self, old: &Ruleset) -> Option<String> {
        if self.family != old.family || self.table != old.table {
            return None;
        }
        for (name, set) in &self.sets {
            if old.sets.get(name).is_some_and(|o| o.decl != set.decl) {
                return None;
            }
        }
        for (name, map) in &self.maps {
            if old.maps.get(name).is_some_and(|o| o.decl != map.decl) {
                return None;
            }
        }
        for (name, chain) in &self.chains {
            if old.chains.get(name).is_some_and(|o| o.base != chain.base) {
                return None;
            }
        }
        let t = self.table_ref();
        let mut out = String::new();
        // 1. New sets and maps, then element additions/removals (sets before chains so that
        //    new rules can reference them).
        for (name, set) in &self.sets {
            if !old.sets.contains_key(name) {
                let _ = writeln!(out, "add set {t} {name} {{ {} }}", set.decl);
            }
        }
        for (name, map) in &self.maps {
            if !old.maps.contains_key(name) {
                let _ = writeln!(out, "add map {t} {name} {{ {} }}", map.decl);
            }
        }
        let empty_set = SetDef::default();
        for (name, set) in &self.sets {
            let prev = old.sets.get(name).unwrap_or(&empty_set);
            let removed: Vec<_> = prev.elements.difference(&set.elements).collect();
            let added: Vec<_> = set.elements.difference(&prev.elements).collect();
            if !removed.is_empty() {
                let _ = writeln!(out, "delete element {t} {name} {{ {} }}", join(removed));
            }
            if !added.is_empty() {
                let _ = writeln!(out, "add element {t} {name} {{ {} }}", join(added));
            }
        }
        // 2. New chains (declared empty first so that jumps between new chains resolve).
        for (name, chain) in &self.chains {
            if !old.chains.contains_key(name) {
                match &chain.base {
                    Some(base) => {
                        let _ = writeln!(out, "add chain {t} {name} {{ {base} }}");
                    }
                    None => {
                        let _ = writeln!(out, "add chain {t} {name}");
                    }
                }
            }
        }
        // 3. Map elements: removals of changed/removed keys first, then additions, so that
        //    a key whose verdict changed is replaced inside the same transaction.
        let empty_map = MapDef::default();
        for (name, map) in &self.maps {
            let prev = old.maps.get(name).unwrap_or(&empty_map);
            let removed: Vec<_> = prev
                .elements
                .iter()
                .filter(|(k, v)| map.elements.get(*k) != Some(v))
                .map(|(k, _)| k)
                .collect();
            let added: Vec<_> = map
                .elements
                .iter()
                .filter(|(k, v)| prev.elements.get(*k) != Some(v))
                .map(|(k, v)| format!("{k} : {v}"))
                .collect();
            if !removed.is_empty() {
                let _ = writeln!(out, "delete element {t} {name} {{ {} }}", join(removed));
            }
            if !added.is_empty() {
                let _ = writeln!(out, "add element {t} {name} {{ {} }}", join(added));
            }
        }
        // 4. Changed chains: flush and refill wholesale.
        for (name, chain) in &self.chains {
            let changed = old.chains.get(name).is_none_or(|o| o.rules != chain.rules);
            if !changed {
                continue;
            }
            if old.chains.contains_key(name) {
                let _ = writeln!(out, "flush chain {t} {name}");
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "add rule {t} {name} {}", tagged_rule(name, rule));
            }
        }
        // 5. Removed maps and chains (flushed first so references between removed chains
        //    do not block deletion), then removed sets, which nothing references any more.
        for name in old.maps.keys().filter(|n| !self.maps.contains_key(*n)) {
            let _ = writeln!(out, "delete map {t} {name}");
        }
        let gone: Vec<_> = old
            .chains
            .keys()
            .filter(|n| !self.chains.contains_key(*n))
            .collect();
        for name in &gone {
            let _ = writeln!(out, "flush chain {t} {name}");
        }
        for name in &gone {
            let _ = writeln!(out, "delete chain {t} {name}");
        }
        for name in old.sets.keys().filter(|n| !self.sets.contains_key(*n)) {
            let _ = writeln!(out, "delete set {t} {name}");
        }
        Some(out)
    }
}

fn join<I, S>(items: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(s.as_ref());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Ruleset {
        let mut r = Ruleset {
            family: "inet".into(),
            table: "calico".into(),
            ..Default::default()
        };
        r.sets.insert(
            "s4-a".into(),
            SetDef {
                decl: "type ipv4_addr; flags interval;".into(),
                elements: ["10.0.0.1".to_string()].into(),
            },
        );
        r.chains.insert(
            "c1".into(),
            ChainDef {
                base: None,
                rules: vec!["ip saddr @s4-a accept".into()],
            },
        );
        r
    }

    #[test]
    fn element_changes_only_for_element_only_differences() {
        let old = base();
        let mut new = base();
        new.sets.get_mut("s4-a").unwrap().elements =
            ["10.0.0.2".to_string(), "10.0.0.3".to_string()].into();
        let ch = new.element_changes(&old).unwrap();
        assert_eq!(ch.len(), 2);
        assert!(!ch[0].add && ch[0].elements == ["10.0.0.1"]);
        assert!(ch[1].add && ch[1].elements == ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ch[1].decl, "type ipv4_addr; flags interval;");
        assert_eq!(base().element_changes(&base()), Some(vec![]));
        // A chain, a new set or a changed declaration needs nft.
        let mut c = base();
        c.chains.get_mut("c1").unwrap().rules.push("drop".into());
        assert_eq!(c.element_changes(&old), None);
        let mut s = base();
        s.sets.insert("s4-b".into(), SetDef::default());
        assert_eq!(s.element_changes(&old), None);
        let mut d = base();
        d.sets.get_mut("s4-a").unwrap().decl = "type ipv4_addr;".into();
        assert_eq!(d.element_changes(&old), None);
    }

    #[test]
    fn unchanged_is_empty() {
        assert_eq!(base().diff_script(&base()).as_deref(), Some(""));
    }

    #[test]
    fn element_and_chain_changes() {
        let old = base();
        let mut new = base();
        new.sets.get_mut("s4-a").unwrap().elements = ["10.0.0.2".to_string()].into();
        new.chains.insert(
            "c2".into(),
            ChainDef {
                base: None,
                rules: vec!["jump c1".into()],
            },
        );
        new.chains.remove("c1");
        new.chains.insert("c1".into(), ChainDef::default());
        let s = new.diff_script(&old).unwrap();
        assert_eq!(
            s,
            format!(
                "delete element inet calico s4-a {{ 10.0.0.1 }}\n\
                 add element inet calico s4-a {{ 10.0.0.2 }}\n\
                 add chain inet calico c2\n\
                 flush chain inet calico c1\n\
                 add rule inet calico c2 jump c1 comment \"{}\"\n",
                rule_tag("c2", "jump c1")
            )
        );
        // and back: c2 goes away
        let back = old.diff_script(&new).unwrap();
        assert!(back.ends_with("flush chain inet calico c2\ndelete chain inet calico c2\n"));
    }

    #[test]
    fn tags_merge_with_existing_comments() {
        let t = rule_tag("c", "drop comment \"x y\"");
        assert_eq!(
            tagged_rule("c", "drop comment \"x y\""),
            format!("drop comment \"{t} x y\"")
        );
        assert_ne!(rule_tag("c", "accept"), rule_tag("d", "accept"));
    }

    #[test]
    fn type_change_needs_full_replace() {
        let old = base();
        let mut new = base();
        new.sets.get_mut("s4-a").unwrap().decl = "type ipv4_addr;".into();
        assert!(new.diff_script(&old).is_none());
        assert!(
            new.full_script()
                .starts_with("table inet calico\ndelete table inet calico\ntable inet calico {\n")
        );
    }
}
