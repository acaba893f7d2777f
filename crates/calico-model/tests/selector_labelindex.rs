//! The label index against a brute-force model: after every update, the index's match relation
//! must equal "evaluate every selector against every label set's effective labels", and the
//! events it returned must turn the previous relation into the new one exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use calico_model::labelindex::{LabelIndex, LabelMap, MatchEvent, ScanStrategy};
use calico_model::selector::{Node, Selector, parse};
use proptest::prelude::*;

/// The obvious implementation: no indexes, everything recomputed.
#[derive(Default)]
struct Model {
    selectors: BTreeMap<u8, Selector>,
    sets: BTreeMap<u16, (LabelMap, Vec<u8>)>,
    parents: BTreeMap<u8, LabelMap>,
}

impl Model {
    fn effective(&self, own: &LabelMap, parents: &[u8]) -> LabelMap {
        let mut eff = own.clone();
        for p in parents {
            for (k, v) in self.parents.get(p).into_iter().flatten() {
                eff.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        eff
    }

    fn matches(&self) -> BTreeSet<(u8, u16)> {
        let mut out = BTreeSet::new();
        for (s, sel) in &self.selectors {
            for (l, (own, parents)) in &self.sets {
                if sel.evaluate(&self.effective(own, parents)) {
                    out.insert((*s, *l));
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
enum Op {
    Selector(u8, Selector),
    RemoveSelector(u8),
    Labels(u16, LabelMap, Vec<u8>),
    RemoveLabels(u16),
    Parent(u8, LabelMap),
    RemoveParent(u8),
}

struct Harness {
    idx: LabelIndex<u8, u16, u8>,
    model: Model,
    current: BTreeSet<(u8, u16)>,
}

impl Harness {
    fn new() -> Self {
        Self {
            idx: LabelIndex::new(),
            model: Model::default(),
            current: BTreeSet::new(),
        }
    }

    fn apply(&mut self, op: Op) {
        let desc = format!("{op:?}");
        let events = match op {
            Op::Selector(id, sel) => {
                self.model.selectors.insert(id, sel.clone());
                self.idx.update_selector(id, sel)
            }
            Op::RemoveSelector(id) => {
                self.model.selectors.remove(&id);
                self.idx.remove_selector(&id)
            }
            Op::Labels(id, labels, parents) => {
                self.model
                    .sets
                    .insert(id, (labels.clone(), parents.clone()));
                self.idx.update_labels(id, &labels, parents)
            }
            Op::RemoveLabels(id) => {
                self.model.sets.remove(&id);
                self.idx.remove_labels(&id)
            }
            Op::Parent(id, labels) => {
                self.model.parents.insert(id, labels.clone());
                self.idx.update_parent(id, labels)
            }
            Op::RemoveParent(id) => {
                self.model.parents.remove(&id);
                self.idx.remove_parent(&id)
            }
        };
        let mut sorted = events.clone();
        sorted.sort();
        assert_eq!(sorted, events, "{desc}: events must come sorted");
        for ev in events {
            match ev {
                MatchEvent::Started { selector, labels } => {
                    assert!(
                        self.current.insert((selector, labels)),
                        "{desc}: duplicate {ev:?}"
                    )
                }
                MatchEvent::Stopped { selector, labels } => {
                    assert!(
                        self.current.remove(&(selector, labels)),
                        "{desc}: spurious {ev:?}"
                    )
                }
            }
        }
        let want = self.model.matches();
        assert_eq!(
            self.current, want,
            "{desc}: events disagree with brute force"
        );
        let have: BTreeSet<(u8, u16)> = self.idx.all_matches().into_iter().collect();
        assert_eq!(have, want, "{desc}: index disagrees with brute force");
        for (s, l) in &want {
            assert!(self.idx.is_match(s, l));
            assert!(self.idx.selectors_matching(l).any(|x| x == s));
            assert!(self.idx.label_sets_matching(s).any(|x| x == l));
        }
        for (s, _) in self.model.selectors.iter() {
            let n = want.iter().filter(|(x, _)| x == s).count();
            assert_eq!(self.idx.match_count(s), n, "{desc}");
        }
    }
}

fn lm(pairs: &[(&str, &str)]) -> LabelMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> Selector {
    parse(s).unwrap()
}

#[test]
fn scripted_sequence_matches_brute_force() {
    let mut h = Harness::new();
    let ops = vec![
        Op::Labels(1, lm(&[("app", "web"), ("tier", "fe")]), vec![]),
        Op::Labels(2, lm(&[("app", "db")]), vec![1]),
        Op::Labels(3, lm(&[]), vec![1, 2]),
        Op::Selector(1, sel("app == 'web'")),
        Op::Selector(2, sel("app in {'web', 'db'}")),
        Op::Selector(3, sel("has(tier)")),
        Op::Selector(4, sel("!has(app)")),
        Op::Selector(5, sel("app == 'web' && app == 'db'")),
        Op::Selector(6, sel("all()")),
        Op::Selector(7, sel("ns == 'kube-system' || app == 'db'")),
        Op::Parent(1, lm(&[("ns", "kube-system"), ("tier", "be")])),
        Op::Parent(2, lm(&[("app", "web")])),
        Op::Labels(3, lm(&[("app", "x")]), vec![2, 1]),
        Op::Parent(1, lm(&[("ns", "default")])),
        Op::Selector(2, sel("tier not in {'fe'}")),
        Op::RemoveParent(1),
        Op::RemoveParent(1),
        Op::Selector(3, sel("has(tier)")),
        Op::RemoveLabels(1),
        Op::RemoveSelector(6),
        Op::Labels(1, lm(&[("tier", "fe")]), vec![2]),
        Op::Parent(2, lm(&[])),
        Op::RemoveSelector(9),
        Op::RemoveLabels(9),
    ];
    for op in ops {
        h.apply(op);
    }
    assert!(!h.current.is_empty());
}

#[test]
fn scan_strategies_limit_work() {
    let mut idx: LabelIndex<u32, u32> = LabelIndex::new();
    idx.update_selector(1, sel("app == 'a' && a == 'x' && a == 'y'"));
    idx.update_selector(2, sel("has(app)"));
    idx.update_selector(3, sel("app != 'a'"));
    assert_eq!(idx.num_full_scan_selectors(), 1);
    assert_eq!(idx.num_selectors(), 3);
    for i in 0..100 {
        idx.update_labels(
            i,
            &lm(&[("app", if i % 2 == 0 { "a" } else { "b" })]),
            vec![],
        );
    }
    assert_eq!(idx.match_count(&1), 0);
    assert_eq!(idx.match_count(&2), 100);
    assert_eq!(idx.match_count(&3), 50);
}

#[test]
fn many_selectors_on_one_label_set() {
    // More selectors per label set than the small-set threshold, and `||` selectors filed under
    // several labels at once.
    let mut h = Harness::new();
    for i in 0..20u8 {
        let text = match i % 4 {
            0 => format!("a == 'x{i}' || has(b)"),
            1 => format!("has(b) && c != '{i}'"),
            2 => format!("(a == 'x' || b == 'y') && c not in {{'{i}'}}"),
            _ => format!("c in {{'{i}', 'z'}} || a starts with 'x'"),
        };
        h.apply(Op::Selector(i, sel(&text)));
    }
    h.apply(Op::Labels(1, lm(&[("a", "x"), ("b", "y")]), vec![]));
    h.apply(Op::Labels(2, lm(&[("c", "z")]), vec![7]));
    h.apply(Op::Parent(7, lm(&[("b", "q"), ("a", "x3")])));
    h.apply(Op::Labels(1, lm(&[("a", "x")]), vec![7]));
    for i in (0..20u8).step_by(3) {
        h.apply(Op::RemoveSelector(i));
    }
    h.apply(Op::RemoveParent(7));
    h.apply(Op::RemoveLabels(1));
    assert!(!h.current.is_empty());
}

#[test]
fn or_selectors_are_not_full_scans() {
    let mut idx: LabelIndex<u32, u32> = LabelIndex::new();
    idx.update_selector(1, sel("a == 'x' || b == 'y'"));
    idx.update_selector(2, sel("(a == 'x' || has(b)) && c != 'q'"));
    idx.update_selector(3, sel("a == 'x' || !has(b)"));
    idx.update_selector(4, sel("a == 'x' && a == 'y' || b == 'y' && b == 'z'"));
    assert!(matches!(idx.scan_strategy(&1), Some(ScanStrategy::AnyOf(p)) if p.len() == 2));
    assert!(matches!(idx.scan_strategy(&2), Some(ScanStrategy::AnyOf(p)) if p.len() == 2));
    assert_eq!(idx.scan_strategy(&3), Some(&ScanStrategy::FullScan));
    assert_eq!(idx.scan_strategy(&4), Some(&ScanStrategy::NoMatch));
    assert_eq!(idx.num_full_scan_selectors(), 1);
    idx.update_labels(1, &lm(&[("b", "y")]), vec![]);
    idx.update_labels(2, &lm(&[("a", "x"), ("c", "q")]), vec![]);
    let mut m = idx.all_matches();
    m.sort();
    assert_eq!(m, vec![(1, 1), (1, 2), (2, 1), (3, 2)]);
}

#[test]
fn refiling_by_live_counts_keeps_results_exact() {
    let mut h = Harness::new();
    // Filed before any label set exists: upstream's tie-break picks the greater label name.
    h.apply(Op::Selector(1, sel("tier == 'backend' && ns == 'a'")));
    h.apply(Op::Selector(2, sel("has(tier) && ns in {'a', 'b'}")));
    h.apply(Op::Selector(3, sel("ns == 'c' || tier == 'db'")));
    assert_eq!(
        h.idx.scan_strategy(&1),
        Some(&ScanStrategy::Values {
            label: "tier".into(),
            values: vec!["backend".into()]
        })
    );
    let tiers = ["backend", "frontend", "db"];
    for i in 0..200u16 {
        let ns = if i % 50 == 0 {
            "a"
        } else if i % 7 == 0 {
            "c"
        } else {
            "z"
        };
        let labels = lm(&[("tier", tiers[usize::from(i % 3)]), ("ns", ns)]);
        h.apply(Op::Labels(i, labels, vec![(i % 3) as u8]));
        if i == 100 {
            h.apply(Op::Parent(1, lm(&[("ns", "b"), ("tier", "x")])));
            h.apply(Op::Selector(4, sel("ns == 'b'")));
        }
    }
    // Once label sets exist, the rarer label wins.
    assert_eq!(
        h.idx.scan_strategy(&1),
        Some(&ScanStrategy::Values {
            label: "ns".into(),
            values: vec!["a".into()]
        })
    );
    for i in (0..200u16).step_by(3) {
        h.apply(Op::Labels(i, lm(&[("ns", "b")]), vec![]));
    }
    h.apply(Op::Selector(1, sel("ns == 'b' && !has(tier)")));
    for i in (0..200u16).step_by(2) {
        h.apply(Op::RemoveLabels(i));
    }
}

// ----- property test -----

fn small_tree() -> impl Strategy<Value = Node> {
    let key = || prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string);
    let val = || prop::sample::select(vec!["x", "y", ""]).prop_map(str::to_string);
    let leaf = prop_oneof![
        1 => Just(Node::All),
        2 => key().prop_map(Node::Has),
        3 => (key(), val()).prop_map(|(k, v)| Node::Eq(k, v)),
        1 => (key(), val()).prop_map(|(k, v)| Node::Ne(k, v)),
        1 => (key(), val()).prop_map(|(k, v)| Node::StartsWith(k, v)),
        1 => (key(), val()).prop_map(|(k, v)| Node::EndsWith(k, v)),
        1 => (key(), val()).prop_map(|(k, v)| Node::Contains(k, v)),
        1 => Just(Node::Global),
        2 => (key(), prop::collection::vec(val(), 0..3)).prop_map(|(k, v)| Node::In(k, v)),
        1 => (key(), prop::collection::vec(val(), 0..3)).prop_map(|(k, v)| Node::NotIn(k, v)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|n| Node::Not(Box::new(n))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
            prop::collection::vec(inner, 2..4).prop_map(Node::Or),
        ]
    })
}

fn small_labels() -> impl Strategy<Value = LabelMap> {
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_string),
        prop::sample::select(vec!["x", "y", ""]).prop_map(str::to_string),
        0..4,
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, small_tree()).prop_map(|(i, n)| Op::Selector(i, Selector::from_node(n))),
        1 => (0u8..6).prop_map(Op::RemoveSelector),
        5 => (0u16..8, small_labels(), prop::collection::vec(0u8..3, 0..3))
            .prop_map(|(i, l, p)| Op::Labels(i, l, p)),
        1 => (0u16..8).prop_map(Op::RemoveLabels),
        2 => (0u8..3, small_labels()).prop_map(|(i, l)| Op::Parent(i, l)),
        1 => (0u8..3).prop_map(Op::RemoveParent),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn label_index_equals_brute_force(ops in prop::collection::vec(op(), 1..60)) {
        let mut h = Harness::new();
        for op in ops {
            h.apply(op);
        }
    }
}
