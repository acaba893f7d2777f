//! The Calico selector language: tokenizer, recursive-descent parser, evaluator, canonical form,
//! unique ID and label restrictions (identical in behaviour to upstream libcalico-go).
//!
//! ```
//! use std::collections::BTreeMap;
//! use calico_model::selector::{parse, Labels};
//!
//! let sel = parse("app == 'web' && tier in {'fe', 'be'}").unwrap();
//! let labels = BTreeMap::from([("app".to_string(), "web".to_string()),
//!                              ("tier".to_string(), "fe".to_string())]);
//! assert!(sel.evaluate(&labels));
//! assert_eq!(sel.to_string(), r#"(app == "web" && tier in {"be", "fe"})"#);
//! ```

mod ast;
mod parser;
mod restrictions;
mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha224};

pub use ast::Node;
pub use restrictions::{LabelRestriction, LabelRestrictions};
pub use tokenizer::MAX_LABEL_LEN as MAX_LABEL_LENGTH;

/// A parse error with the 0-based character column where it was detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {input:?}: {message} at column {column}")]
pub struct ParseError {
    pub input: String,
    pub message: String,
    pub column: usize,
}

impl ParseError {
    fn at_byte(input: &str, message: String, byte: usize) -> Self {
        let byte = byte.min(input.len());
        // Byte offsets produced by the tokenizer are always character boundaries.
        let column = input.get(..byte).map_or(byte, |s| s.chars().count());
        ParseError {
            input: input.to_string(),
            message,
            column,
        }
    }
}

/// Anything labels can be read from.
pub trait Labels {
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

impl<L: Labels + ?Sized> Labels for Arc<L> {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

impl<L: Labels> Labels for Option<L> {
    fn get(&self, key: &str) -> Option<&str> {
        self.as_ref().and_then(|l| l.get(key))
    }
}

/// A list of label sources searched in order; the first one holding the key wins. This is the
/// "profile order" used for inherited labels.
impl<L: Labels> Labels for [L] {
    fn get(&self, key: &str) -> Option<&str> {
        self.iter().find_map(|l| l.get(key))
    }
}

impl<L: Labels> Labels for Vec<L> {
    fn get(&self, key: &str) -> Option<&str> {
        Labels::get(self.as_slice(), key)
    }
}

/// An endpoint's effective labels: its own labels, falling back to the inherited (profile)
/// labels. Own labels win on conflict.
#[derive(Debug, Clone, Copy)]
pub struct Overlay<O, I> {
    pub own: O,
    pub inherited: I,
}

impl<O: Labels, I: Labels> Labels for Overlay<O, I> {
    fn get(&self, key: &str) -> Option<&str> {
        self.own.get(key).or_else(|| self.inherited.get(key))
    }
}

/// No labels at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLabels;

impl Labels for NoLabels {
    fn get(&self, _key: &str) -> Option<&str> {
        None
    }
}

/// A parsed selector. Equality and hashing follow the syntax tree (equivalently, the canonical
/// form).
#[derive(Clone)]
pub struct Selector {
    root: Node,
    canonical: Arc<str>,
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Selector {}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.canonical.cmp(&other.canonical)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({:?})", &*self.canonical)
    }
}

/// Parses a selector. Empty or blank input is `all()`.
pub fn parse(input: &str) -> Result<Selector, ParseError> {
    let tokens =
        tokenizer::tokenize(input).map_err(|e| ParseError::at_byte(input, e.message, e.pos))?;
    let root =
        parser::parse_tokens(&tokens).map_err(|e| ParseError::at_byte(input, e.message, e.pos))?;
    Ok(Selector::from_parsed(root))
}

/// Checks that `input` is a valid selector.
pub fn validate(input: &str) -> Result<(), ParseError> {
    parse(input).map(|_| ())
}

/// Computes the upstream unique ID of a canonical selector string.
pub fn unique_id_of_canonical(canonical: &str) -> String {
    let mut h = Sha224::new();
    h.update(b"s:");
    h.update(canonical.as_bytes());
    let digest = h.finalize();
    format!(
        "s:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

impl Selector {
    fn from_parsed(root: Node) -> Self {
        let canonical: Arc<str> = root.to_string().into();
        Selector { root, canonical }
    }

    /// Builds a selector from a syntax tree. Sets are sorted and de-duplicated; `!!x` collapses
    /// to `x`, single-operand groups to their operand, an empty `&&` group to `all()` and an
    /// empty `||` group to `!all()`, so that the printed form parses back to the same tree.
    pub fn from_node(mut root: Node) -> Self {
        root.normalize_sets();
        Self::from_parsed(simplify(root))
    }

    /// `all()`.
    pub fn all() -> Self {
        Self::from_parsed(Node::All)
    }

    /// The syntax tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// Consumes the selector, returning its syntax tree.
    pub fn into_root(self) -> Node {
        self.root
    }

    /// Whether the selector matches the labels.
    pub fn evaluate(&self, labels: &dyn Labels) -> bool {
        self.root.evaluate(labels)
    }

    /// `"s:" + base64url_nopad(sha224("s:" + canonical))`, as upstream.
    pub fn unique_id(&self) -> String {
        unique_id_of_canonical(&self.canonical)
    }

    /// The canonical form (same as `to_string()`, without allocating).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// True if this is exactly `all()` (also the parse of an empty selector).
    pub fn is_all(&self) -> bool {
        self.root == Node::All
    }

    /// Lower-bound label restrictions (§2.7), as upstream's `LabelRestrictions()`.
    pub fn label_restrictions(&self) -> LabelRestrictions {
        restrictions::label_restrictions(&self.root)
    }

    /// A copy with every label name rewritten by `f` (including inside `has()` and sets); the
    /// tree shape is kept, exactly like upstream's visitor.
    pub fn map_labels(&self, mut f: impl FnMut(&str) -> String) -> Selector {
        let mut root = self.root.clone();
        root.rewrite_labels(&mut f);
        Self::from_parsed(root)
    }

    /// A copy with `prefix` prepended to every label name (`pcns.`, `pcsa.` scoping).
    pub fn with_label_prefix(&self, prefix: &str) -> Selector {
        self.map_labels(|k| format!("{prefix}{k}"))
    }

    /// A copy with every `all()` and `global()` replaced by the given nodes (used when a
    /// namespace selector is scoped: `all()` ⇒ `has(projectcalico.org/namespace)`,
    /// `global()` ⇒ `!has(projectcalico.org/namespace)`).
    pub fn replace_all_and_global(&self, all: &Node, global: &Node) -> Selector {
        fn go(n: &mut Node, all: &Node, global: &Node) {
            match n {
                Node::All => *n = all.clone(),
                Node::Global => *n = global.clone(),
                Node::Not(inner) => go(inner, all, global),
                Node::And(ns) | Node::Or(ns) => ns.iter_mut().for_each(|c| go(c, all, global)),
                _ => {}
            }
        }
        let mut root = self.root.clone();
        go(&mut root, all, global);
        Self::from_parsed(root)
    }
}

fn simplify(n: Node) -> Node {
    match n {
        Node::Not(inner) => match simplify(*inner) {
            Node::Not(x) => *x,
            x => Node::Not(Box::new(x)),
        },
        Node::And(ns) => {
            let mut ns: Vec<Node> = ns.into_iter().map(simplify).collect();
            match ns.len() {
                0 => Node::All,
                1 => ns.swap_remove(0),
                _ => Node::And(ns),
            }
        }
        Node::Or(ns) => {
            let mut ns: Vec<Node> = ns.into_iter().map(simplify).collect();
            match ns.len() {
                0 => Node::Not(Box::new(Node::All)),
                1 => ns.swap_remove(0),
                _ => Node::Or(ns),
            }
        }
        other => other,
    }
}

impl Default for Selector {
    fn default() -> Self {
        Self::all()
    }
}

/// The canonical form (upstream's `String()`).
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for Selector {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl TryFrom<&str> for Selector {
    type Error = ParseError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        parse(s)
    }
}

/// Serialised as the canonical string; deserialised by parsing.
impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unique_id_vectors() {
        assert_eq!(
            parse("").unwrap().unique_id(),
            "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"
        );
        assert_eq!(
            parse("!(has(b) || !has(a))").unwrap().unique_id(),
            "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"
        );
    }

    #[test]
    fn error_columns_are_characters() {
        let e = parse("é == 'x'").unwrap_err();
        assert_eq!(e.column, 0);
        let e = parse("a == 'é' && %").unwrap_err();
        assert_eq!(e.column, 12, "{e}");
        let e = parse("a == 'x' b").unwrap_err();
        assert_eq!(e.column, 9, "{e}");
        assert!(e.message.contains("unexpected content at end"), "{e}");
    }

    #[test]
    fn overlay_own_wins() {
        let own = labels(&[("role", "db")]);
        let profile = labels(&[("role", "web"), ("x", "1")]);
        let l = Overlay {
            own: &own,
            inherited: &profile,
        };
        assert_eq!(l.get("role"), Some("db"));
        assert_eq!(l.get("x"), Some("1"));
        assert_eq!(l.get("y"), None);
        let parents = [labels(&[("a", "1")]), labels(&[("a", "2"), ("b", "2")])];
        let l = Overlay {
            own: NoLabels,
            inherited: &parents[..],
        };
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("b"), Some("2"));
    }

    #[test]
    fn prefix_rewrites_every_label() {
        let s =
            parse("a == 'x' && has(b) && !(c in {'1'} || d not in {}) && e contains 'q'").unwrap();
        let p = s.with_label_prefix("pcns.");
        assert_eq!(
            p.to_string(),
            r#"(pcns.a == "x" && has(pcns.b) && !(pcns.c in {"1"} || pcns.d not in {}) && pcns.e contains "q")"#
        );
    }

    #[test]
    fn from_node_normalizes() {
        let n = Node::Not(Box::new(Node::Not(Box::new(Node::And(vec![Node::In(
            "a".into(),
            vec!["z".into(), "b".into(), "z".into()],
        )])))));
        let s = Selector::from_node(n);
        assert_eq!(s.to_string(), r#"a in {"b", "z"}"#);
        assert_eq!(Selector::from_node(Node::Or(vec![])).to_string(), "!all()");
        assert!(!Selector::from_node(Node::Or(vec![])).evaluate(&NoLabels));
    }

    #[test]
    fn serde_round_trip() {
        let s = parse("a=='b'").unwrap();
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#""a == \"b\"""#);
        let back: Selector = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Selector>(r#""a =""#).is_err());
    }
}
