//! Property tests of the selector parser and printer: no input panics the parser, and random
//! syntax trees survive print → parse → print unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use calico_model::selector::{Node, Selector, parse};
use proptest::prelude::*;

fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-c]",
        2 => "[a-zA-Z0-9_./-]{1,12}",
        // Keywords are legal label names.
        1 => prop::sample::select(vec![
            "in", "not", "notin", "contains", "starts", "startswith", "ends", "with", "has", "all",
            "global", "projectcalico.org/namespace",
        ])
        .prop_map(str::to_string),
    ]
}

/// Any string a literal can carry: it may hold one kind of quote, not both.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{0,3}",
        any::<String>().prop_filter("a literal cannot hold both quote kinds", |s| {
            !(s.contains('"') && s.contains('\''))
        }),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        Just(Node::All),
        Just(Node::Global),
        label_name().prop_map(Node::Has),
        (label_name(), value()).prop_map(|(k, v)| Node::Eq(k, v)),
        (label_name(), value()).prop_map(|(k, v)| Node::Ne(k, v)),
        (label_name(), value()).prop_map(|(k, v)| Node::Contains(k, v)),
        (label_name(), value()).prop_map(|(k, v)| Node::StartsWith(k, v)),
        (label_name(), value()).prop_map(|(k, v)| Node::EndsWith(k, v)),
        (label_name(), prop::collection::vec(value(), 0..4)).prop_map(|(k, v)| Node::In(k, v)),
        (label_name(), prop::collection::vec(value(), 0..4)).prop_map(|(k, v)| Node::NotIn(k, v)),
    ]
}

fn tree() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            // `!!x` prints as `!!x`, which parses back as `x`: upstream behaves the same, so
            // the generator never nests negations directly.
            inner.clone().prop_map(|n| match n {
                Node::Not(x) => *x,
                n => Node::Not(Box::new(n)),
            }),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Node::And),
            prop::collection::vec(inner, 2..4).prop_map(Node::Or),
        ]
    })
}

/// Strings built from selector fragments, which reach deeper into the parser than random text.
fn selectorish() -> impl Strategy<Value = String> {
    let frag = prop::sample::select(vec![
        "a",
        "b",
        " ",
        "\t",
        "\n",
        "==",
        "!=",
        "=",
        "!",
        "&&",
        "&",
        "||",
        "|",
        "(",
        ")",
        "{",
        "}",
        ",",
        "'",
        "\"",
        "'x'",
        "\"y\"",
        "in",
        "not",
        "not in",
        "notin",
        "contains",
        "starts",
        "with",
        "starts with",
        "ends with",
        "has(",
        "has(a)",
        "all()",
        "global()",
        "all(",
        "é",
        "%",
        "global(",
    ]);
    prop::collection::vec(frag, 0..16).prop_map(|v| v.concat())
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-c]", "[a-c]{0,2}", 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics_on_any_string(s in any::<String>()) {
        check_no_panic(&s);
    }

    #[test]
    fn parser_never_panics_on_selectorish_strings(s in selectorish()) {
        check_no_panic(&s);
    }

    #[test]
    fn print_parse_print_is_stable(node in tree(), l in labels()) {
        let sel = Selector::from_node(node);
        let printed = sel.to_string();
        let again = parse(&printed).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.root(), sel.root(), "{}", printed);
        prop_assert_eq!(again.to_string(), printed.clone());
        prop_assert_eq!(again.unique_id(), sel.unique_id());
        prop_assert_eq!(again.evaluate(&l), sel.evaluate(&l), "{}", printed);
    }

    #[test]
    fn label_restrictions_are_lower_bounds(node in tree(), l in labels()) {
        // Whenever a selector matches, every restriction it reports must hold.
        let sel = Selector::from_node(node);
        if sel.evaluate(&l) {
            for (k, r) in sel.label_restrictions() {
                let v = l.get(&k);
                prop_assert!(!r.is_impossible(), "{} matched but {} is impossible", sel, k);
                if r.must_be_present { prop_assert!(v.is_some(), "{} {}", sel, k); }
                if r.must_be_absent { prop_assert!(v.is_none(), "{} {}", sel, k); }
                if let (Some(vs), Some(v)) = (&r.must_have_one_of_values, v) {
                    prop_assert!(vs.contains(v), "{} {}", sel, k);
                }
            }
        }
    }
}

fn check_no_panic(s: &str) {
    match parse(s) {
        Ok(sel) => {
            // Anything accepted prints to something that parses to the same canonical form.
            let printed = sel.to_string();
            let again = parse(&printed).unwrap_or_else(|e| panic!("{s:?} -> {printed:?}: {e}"));
            let reprinted = again.to_string();
            // `!(!x)` prints as `!!x` (as upstream), which re-parses as `x`; anything else
            // must be stable.
            if !printed.contains("!!") {
                assert_eq!(reprinted, printed, "{s:?}");
            }
        }
        Err(e) => {
            assert_eq!(e.input, s);
            assert!(e.column <= s.chars().count(), "{s:?}: column {}", e.column);
        }
    }
}
