//! Lower-bound label restrictions of a selector (§2.7), used to index selectors.

use std::collections::{BTreeMap, BTreeSet};

use super::ast::Node;

/// What a selector requires of one label for it to possibly match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelRestriction {
    /// The label must be present (`has(a)`, `a == "x"`, `a in {...}`, `a contains ...`).
    pub must_be_present: bool,
    /// The label must be absent (`!has(a)`).
    pub must_be_absent: bool,
    /// When `Some`, the label's value must be one of these. `Some(empty)` means the selector
    /// cannot match anything (e.g. `a == "x" && a == "y"`).
    pub must_have_one_of_values: Option<BTreeSet<String>>,
}

impl LabelRestriction {
    /// True if no label set can satisfy this restriction.
    pub fn is_impossible(&self) -> bool {
        (self.must_be_present && self.must_be_absent)
            || self
                .must_have_one_of_values
                .as_ref()
                .is_some_and(BTreeSet::is_empty)
    }
}

/// Label name → restriction. Labels without a restriction are not listed.
pub type LabelRestrictions = BTreeMap<String, LabelRestriction>;

fn present(values: Option<BTreeSet<String>>) -> LabelRestriction {
    LabelRestriction {
        must_be_present: true,
        must_be_absent: false,
        must_have_one_of_values: values,
    }
}

fn single(k: &str, r: LabelRestriction) -> LabelRestrictions {
    BTreeMap::from([(k.to_string(), r)])
}

impl Node {
    /// Lower-bound label restrictions of this subtree (§2.7), as upstream computes them.
    pub fn label_restrictions(&self) -> LabelRestrictions {
        label_restrictions(self)
    }
}

pub(crate) fn label_restrictions(node: &Node) -> LabelRestrictions {
    match node {
        Node::All | Node::Global | Node::Ne(..) | Node::NotIn(..) => BTreeMap::new(),
        Node::Has(k) | Node::Contains(k, _) | Node::StartsWith(k, _) | Node::EndsWith(k, _) => {
            single(k, present(None))
        }
        Node::Eq(k, v) => single(k, present(Some(BTreeSet::from([v.clone()])))),
        Node::In(k, set) => single(k, present(Some(set.iter().cloned().collect()))),
        // Only `!has(x)` can be inverted: `!(a == "b")` does not require `a` to be absent.
        Node::Not(inner) => match inner.as_ref() {
            Node::Has(k) => single(
                k,
                LabelRestriction {
                    must_be_absent: true,
                    ..Default::default()
                },
            ),
            _ => BTreeMap::new(),
        },
        Node::And(ns) => {
            let mut acc = LabelRestrictions::new();
            for n in ns {
                for (k, r) in label_restrictions(n) {
                    let base = acc.entry(k).or_default();
                    base.must_be_present |= r.must_be_present;
                    base.must_be_absent |= r.must_be_absent;
                    base.must_have_one_of_values = match (
                        base.must_have_one_of_values.take(),
                        r.must_have_one_of_values,
                    ) {
                        (None, v) | (v, None) => v,
                        (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
                    };
                }
            }
            acc
        }
        Node::Or(ns) => {
            let Some((first, rest)) = ns.split_first() else {
                return BTreeMap::new();
            };
            let mut acc = label_restrictions(first);
            for n in rest {
                let other = label_restrictions(n);
                acc = acc
                    .into_iter()
                    .filter_map(|(k, r)| {
                        let o = other.get(&k).cloned().unwrap_or_default();
                        let must_be_present = r.must_be_present && o.must_be_present;
                        let must_have_one_of_values = if must_be_present {
                            match (r.must_have_one_of_values, o.must_have_one_of_values) {
                                (Some(a), Some(b)) => Some(a.union(&b).cloned().collect()),
                                // One side is has()-like, so no value limit is known.
                                _ => None,
                            }
                        } else {
                            None
                        };
                        let must_be_absent = r.must_be_absent && o.must_be_absent;
                        (must_be_present || must_be_absent).then_some((
                            k,
                            LabelRestriction {
                                must_be_present,
                                must_be_absent,
                                must_have_one_of_values,
                            },
                        ))
                    })
                    .collect();
            }
            acc
        }
    }
}
