//! Selector semantics: the edge-case triples of the reference note (§2.6), the bad-selector
//! list, label restrictions (§2.7) and canonical-form stability.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use calico_model::selector::{LabelRestriction, Labels, NoLabels, Overlay, Selector, parse};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

type Triple = (&'static str, &'static [(&'static str, &'static str)], bool);

fn check(sel: &str, l: &dyn Labels, want: bool) {
    let s = parse(sel).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.evaluate(l), want, "{sel:?} (canonical {s})");
    let again = parse(&s.to_string()).unwrap();
    assert_eq!(again.evaluate(l), want, "canonical {s} of {sel:?}");
    assert_eq!(again.to_string(), s.to_string());
}

#[test]
fn reference_triples() {
    let cases: &[Triple] = &[
        (r#"app == "web""#, &[("app", "web")], true),
        (r#"app == "web""#, &[("app", "Web")], false),
        (r#"app == "web""#, &[], false),
        (r#"app != "web""#, &[], true),
        (r#"app != "web""#, &[("app", "web")], false),
        (r#"tier in {"fe", "be"}"#, &[("tier", "be")], true),
        (r#"tier in {"fe", "be"}"#, &[], false),
        (r#"tier not in {"fe", "be"}"#, &[], true),
        (r#"tier not in {"fe", "be"}"#, &[("tier", "fe")], false),
        (r#"tier notin {"fe"}"#, &[("tier", "x")], true),
        (r#"a in {}"#, &[("a", "")], false),
        (r#"a not in {}"#, &[], true),
        (r#"a in {"x",}"#, &[("a", "x")], true),
        ("has(env)", &[("env", "")], true),
        ("!has(env)", &[("env", "prod")], false),
        ("! ! has(env)", &[("env", "prod")], true),
        ("", &[("anything", "x")], true),
        (" \t ", &[], true),
        (r#"name contains "api""#, &[("name", "my-api-v2")], true),
        (r#"name contains """#, &[("name", "x")], true),
        (r#"name contains """#, &[], false),
        (r#"name starts with "kube-""#, &[("name", "kube-dns")], true),
        (
            r#"name ends with "-canary""#,
            &[("name", "canary-web")],
            false,
        ),
        (r#"a == "1" || b == "2" && c == "3""#, &[("a", "1")], true),
        (
            r#"(a == "1" || b == "2") && c == "3""#,
            &[("a", "1")],
            false,
        ),
        (r#"!a == "1""#, &[], true),
        (r#"!a in {"x"}"#, &[("a", "y")], true),
        ("a == ''", &[("a", "")], true),
        ("a == ''", &[], false),
        (r#"q == "it's""#, &[("q", "it's")], true),
        (
            r#"projectcalico.org/namespace == "default""#,
            &[("projectcalico.org/namespace", "default")],
            true,
        ),
        ("global()", &[], true),
        (r#"contains contains "x""#, &[("contains", "xyz")], true),
        // More keyword-as-label and spacing cases.
        ("in in {'a'}", &[("in", "a")], true),
        (
            "startswith starts  with 'a'",
            &[("startswith", "abc")],
            true,
        ),
        ("not not\tin {'a'}", &[("not", "b")], true),
        ("has( a )", &[("a", "")], true),
        ("a=='b'&&c!='d'", &[("a", "b")], true),
        ("!(!has(a) || has(b))", &[("a", "a")], true),
    ];
    for (sel, l, want) in cases {
        check(sel, &labels(l), *want);
    }
}

#[test]
fn inherited_labels() {
    let own = labels(&[("k8s-app", "kube-dns")]);
    let profile = labels(&[("pcns.projectcalico.org/name", "kube-system")]);
    check(
        r#"k8s-app == "kube-dns" && has(pcns.projectcalico.org/name)"#,
        &Overlay {
            own: &own,
            inherited: &profile,
        },
        true,
    );
    let own = labels(&[("role", "db")]);
    let profile = labels(&[("role", "web")]);
    check(
        r#"role == "db""#,
        &Overlay {
            own: &own,
            inherited: &profile,
        },
        true,
    );
    check(
        r#"role == "web""#,
        &Overlay {
            own: &own,
            inherited: &profile,
        },
        false,
    );
    // Several profiles: the first one holding the label wins.
    let profiles = [labels(&[("a", "1")]), labels(&[("a", "2"), ("b", "3")])];
    let l = Overlay {
        own: NoLabels,
        inherited: &profiles[..],
    };
    check("a == '1' && b == '3'", &l, true);
}

#[test]
fn bad_selectors() {
    let long = "a".repeat(513);
    let long_sel = format!("{long} == 'x'");
    let bad = [
        "a == b",
        "a = \"b\"",
        "a & b",
        "has()",
        "(a == \"x\"",
        "a",
        "\"x\" == a",
        "a == \"x\"\n && b == \"y\"",
        "a in \"x\"",
        &long_sel,
        "b starts with b",
        "b ends with b",
        "a b",
        "!",
        "!!",
        "foo == \"bar\" &",
        "foo == \"bar\" |",
        "foo != ||",
        "foo in {\"\", ||",
        "foo in {\"a\" \"b\"}",
        "foo in {,}",
        "foo in {\"a\",,}",
        "\"FOO'",
        "'FOO",
        "(",
        "()",
        ")",
        "a == 'x')",
        "%",
        "a ",
        "has(foo) &&",
        "&& has(foo)",
        "has(foo) || || has(bar)",
        "label == \"value",
        "label == 'value",
        "has( foo ",
        "has(foo",
        "all(",
        "global(",
        "all() all()",
        "a == \"b\" | has(foo)",
        "label starts foo \"value\"",
        "label inf \"value\"",
        "label ends foo \"value\"",
        "label ends withs \"value\"",
        "label squiggles \"value\"",
        "a == 'x' && b",
        "a == 'x'\r",
        "a\u{a0}== 'x'",
        "é == 'x'",
        "{}",
        "a in {'x'",
        "a not 'x'",
    ];
    for s in bad {
        let err = parse(s).expect_err(s);
        assert_eq!(err.input, s);
        assert!(!err.message.is_empty());
        assert!(
            err.column <= s.chars().count(),
            "{s:?}: column {}",
            err.column
        );
        assert!(calico_model::selector::validate(s).is_err());
    }
    let ok = format!("{} == 'x'", "a".repeat(512));
    parse(&ok).unwrap();
}

#[test]
fn error_columns() {
    let cases: &[(&str, usize)] = &[
        ("a == b", 5),
        ("a = 'b'", 2),
        ("%", 0),
        ("a == 'x' && %", 12),
        ("a == 'x' && b == 'y", 17),
        ("a squiggles 'x'", 2),
        ("(a == 'x'", 9),
        ("a == 'x' )", 9),
    ];
    for (s, col) in cases {
        let e = parse(s).unwrap_err();
        assert_eq!(e.column, *col, "{s:?}: {e}");
    }
}

#[test]
fn canonical_forms() {
    let cases: &[(&str, &str)] = &[
        ("", "all()"),
        (" all() ", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        (
            "a == 'x' && b == 'y' && c == 'z'",
            r#"(a == "x" && b == "y" && c == "z")"#,
        ),
        (
            "a == 'x' || b == 'y' && c == 'z'",
            r#"(a == "x" || (b == "y" && c == "z"))"#,
        ),
        (
            "(a == 'x' && b == 'y') && c == 'z'",
            r#"((a == "x" && b == "y") && c == "z")"#,
        ),
        ("!!!has(a)", "!has(a)"),
        ("!(!has(a))", "!!has(a)"),
        ("a notin {'b', 'a', 'b',}", r#"a not in {"a", "b"}"#),
        ("a in {}", "a in {}"),
        ("global()", "global()"),
        ("a starts  with 'x'", r#"a starts with "x""#),
        ("a == \"'\"", "a == \"'\""),
        ("a in {'\"', \"'\"}", "a in {'\"', \"'\"}"),
    ];
    for (input, want) in cases {
        let s = parse(input).unwrap();
        assert_eq!(s.to_string(), *want, "{input:?}");
    }
}

fn r(present: bool, absent: bool, values: Option<&[&str]>) -> LabelRestriction {
    LabelRestriction {
        must_be_present: present,
        must_be_absent: absent,
        must_have_one_of_values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn label_restrictions_match_upstream_rules() {
    let cases: Vec<(&str, Vec<(&str, LabelRestriction)>)> = vec![
        ("", vec![]),
        ("all()", vec![]),
        ("global()", vec![]),
        (
            "a == 'value'",
            vec![("a", r(true, false, Some(&["value"])))],
        ),
        ("has(a)", vec![("a", r(true, false, None))]),
        (
            "a in {'v1','v2'}",
            vec![("a", r(true, false, Some(&["v1", "v2"])))],
        ),
        ("a not in {'v1','v2'}", vec![]),
        ("a contains 'foo'", vec![("a", r(true, false, None))]),
        ("a ends with 'foo'", vec![("a", r(true, false, None))]),
        ("a starts with 'foo'", vec![("a", r(true, false, None))]),
        ("a != 'value'", vec![]),
        (
            "a == 'v1' && a == 'v1'",
            vec![("a", r(true, false, Some(&["v1"])))],
        ),
        (
            "a == 'v1' && a == 'v2'",
            vec![("a", r(true, false, Some(&[])))],
        ),
        (
            "a == 'v1' && has(a)",
            vec![("a", r(true, false, Some(&["v1"])))],
        ),
        (
            "a in {'v1','v2'} && a in {'v2','v3'}",
            vec![("a", r(true, false, Some(&["v2"])))],
        ),
        ("has(a) && !has(a)", vec![("a", r(true, true, None))]),
        (
            "a == 'v1' && b == 'v2'",
            vec![
                ("a", r(true, false, Some(&["v1"]))),
                ("b", r(true, false, Some(&["v2"]))),
            ],
        ),
        (
            "all() && a == 'v1'",
            vec![("a", r(true, false, Some(&["v1"])))],
        ),
        (
            "a == 'v1' || a == 'v2'",
            vec![("a", r(true, false, Some(&["v1", "v2"])))],
        ),
        ("has(a) || a == 'v2'", vec![("a", r(true, false, None))]),
        ("a=='v2' || has(a)", vec![("a", r(true, false, None))]),
        ("a=='v2' || has(b)", vec![]),
        (
            "a=='v2' || (has(b) && has(a))",
            vec![("a", r(true, false, None))],
        ),
        ("a == 'v1' || all()", vec![]),
        ("all() || b == 'v2'", vec![]),
        ("!(a == 'value')", vec![]),
        ("!has(a)", vec![("a", r(false, true, None))]),
        ("!!has(a)", vec![("a", r(true, false, None))]),
        ("!has(a) || !has(a)", vec![("a", r(false, true, None))]),
    ];
    for (sel, want) in cases {
        let want: BTreeMap<String, LabelRestriction> =
            want.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(parse(sel).unwrap().label_restrictions(), want, "{sel:?}");
        if !sel.is_empty() {
            let wrapped = format!("all() && ({sel})");
            assert_eq!(
                parse(&wrapped).unwrap().label_restrictions(),
                want,
                "{wrapped:?}"
            );
        }
    }
    let imp = parse("a == 'v1' && a == 'v2'")
        .unwrap()
        .label_restrictions();
    assert!(imp["a"].is_impossible());
    assert_eq!(imp["a"].must_have_one_of_values, Some(BTreeSet::new()));
}

#[test]
fn unique_ids() {
    let all = parse("").unwrap();
    assert_eq!(all.unique_id(), "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug");
    assert_eq!(Selector::all().unique_id(), all.unique_id());
    let s = parse("! (a == \"b\"&&! c != \"d\")").unwrap();
    assert_eq!(s.to_string(), "!(a == \"b\" && !c != \"d\")");
    assert_eq!(s.unique_id(), "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w");
    // IDs are 's:' + 38 characters of unpadded base64url (28 bytes).
    assert_eq!(s.unique_id().len(), 2 + 38);
}
