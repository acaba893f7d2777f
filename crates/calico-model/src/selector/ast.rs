//! The selector syntax tree: evaluation (§2.3), canonical printing (§2.4) and label-name
//! rewriting.

use std::fmt;

use super::Labels;

/// One node of a parsed selector.
///
/// Sets in [`Node::In`] / [`Node::NotIn`] are kept sorted and de-duplicated by
/// [`super::Selector::from_node`] and the parser, which is what the canonical form prints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches everything in the raw evaluator (rewritten by policy scoping).
    Global,
    /// `has(label)`.
    Has(String),
    /// `label == "value"`.
    Eq(String, String),
    /// `label != "value"` (true when the label is absent).
    Ne(String, String),
    /// `label contains "value"`.
    Contains(String, String),
    /// `label starts with "value"`.
    StartsWith(String, String),
    /// `label ends with "value"`.
    EndsWith(String, String),
    /// `label in {"v1", "v2"}`.
    In(String, Vec<String>),
    /// `label not in {"v1", "v2"}` (true when the label is absent).
    NotIn(String, Vec<String>),
    /// `!operand`.
    Not(Box<Node>),
    /// `(a && b && ...)`, at least one operand.
    And(Vec<Node>),
    /// `(a || b || ...)`, at least one operand.
    Or(Vec<Node>),
}

impl Node {
    /// Evaluates the node against a label source.
    pub fn evaluate(&self, labels: &dyn Labels) -> bool {
        match self {
            Node::All | Node::Global => true,
            Node::Has(k) => labels.get(k).is_some(),
            Node::Eq(k, v) => labels.get(k) == Some(v.as_str()),
            Node::Ne(k, v) => labels.get(k) != Some(v.as_str()),
            Node::Contains(k, v) => labels.get(k).is_some_and(|l| l.contains(v.as_str())),
            Node::StartsWith(k, v) => labels.get(k).is_some_and(|l| l.starts_with(v.as_str())),
            Node::EndsWith(k, v) => labels.get(k).is_some_and(|l| l.ends_with(v.as_str())),
            Node::In(k, set) => labels.get(k).is_some_and(|l| set_contains(set, l)),
            Node::NotIn(k, set) => !labels.get(k).is_some_and(|l| set_contains(set, l)),
            Node::Not(n) => !n.evaluate(labels),
            Node::And(ns) => ns.iter().all(|n| n.evaluate(labels)),
            Node::Or(ns) => ns.iter().any(|n| n.evaluate(labels)),
        }
    }

    /// The label name of a leaf comparison / `has()`, if this is one.
    pub fn label(&self) -> Option<&str> {
        match self {
            Node::Has(k)
            | Node::Eq(k, _)
            | Node::Ne(k, _)
            | Node::Contains(k, _)
            | Node::StartsWith(k, _)
            | Node::EndsWith(k, _)
            | Node::In(k, _)
            | Node::NotIn(k, _) => Some(k),
            _ => None,
        }
    }

    /// Rewrites every label name in the tree (including inside `has()` and set operations).
    pub fn rewrite_labels(&mut self, f: &mut dyn FnMut(&str) -> String) {
        match self {
            Node::All | Node::Global => {}
            Node::Has(k)
            | Node::Eq(k, _)
            | Node::Ne(k, _)
            | Node::Contains(k, _)
            | Node::StartsWith(k, _)
            | Node::EndsWith(k, _)
            | Node::In(k, _)
            | Node::NotIn(k, _) => *k = f(k),
            Node::Not(n) => n.rewrite_labels(f),
            Node::And(ns) | Node::Or(ns) => ns.iter_mut().for_each(|n| n.rewrite_labels(f)),
        }
    }

    /// Calls `f` on every node, parents before children.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Node)) {
        f(self);
        match self {
            Node::Not(n) => n.walk(f),
            Node::And(ns) | Node::Or(ns) => ns.iter().for_each(|n| n.walk(f)),
            _ => {}
        }
    }

    /// Sorts and de-duplicates set literals throughout the tree.
    pub(crate) fn normalize_sets(&mut self) {
        match self {
            Node::In(_, set) | Node::NotIn(_, set) => {
                set.sort_unstable();
                set.dedup();
            }
            Node::Not(n) => n.normalize_sets(),
            Node::And(ns) | Node::Or(ns) => ns.iter_mut().for_each(Node::normalize_sets),
            _ => {}
        }
    }
}

/// Sets are sorted, so membership is a binary search.
fn set_contains(set: &[String], value: &str) -> bool {
    set.binary_search_by(|m| m.as_str().cmp(value)).is_ok()
}

/// Writes a string literal: double quotes unless the value contains one.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let q = if s.contains('"') { '\'' } else { '"' };
    write!(f, "{q}{s}{q}")
}

fn write_set(f: &mut fmt::Formatter<'_>, k: &str, op: &str, set: &[String]) -> fmt::Result {
    write!(f, "{k} {op} {{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_str("}")
}

fn write_group(f: &mut fmt::Formatter<'_>, ns: &[Node], sep: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, n) in ns.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{n}")?;
    }
    f.write_str(")")
}

/// Canonical printing, identical to upstream's `String()`.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::All => f.write_str("all()"),
            Node::Global => f.write_str("global()"),
            Node::Has(k) => write!(f, "has({k})"),
            Node::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_quoted(f, v)
            }
            Node::Ne(k, v) => {
                write!(f, "{k} != ")?;
                write_quoted(f, v)
            }
            Node::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_quoted(f, v)
            }
            Node::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_quoted(f, v)
            }
            Node::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_quoted(f, v)
            }
            Node::In(k, set) => write_set(f, k, "in", set),
            Node::NotIn(k, set) => write_set(f, k, "not in", set),
            Node::Not(n) => write!(f, "!{n}"),
            // Upstream only builds groups of two or more; a single operand prints bare.
            Node::And(ns) | Node::Or(ns) if ns.len() == 1 => write!(f, "{}", ns[0]),
            Node::And(ns) => write_group(f, ns, " && "),
            Node::Or(ns) => write_group(f, ns, " || "),
        }
    }
}
