//! Hand-written tokenizer for the selector language (§2.1 of the reference note).
//!
//! Tokens borrow from the input. Positions are byte offsets; [`super::ParseError`] converts them
//! to character columns.

/// Longest label name the language accepts.
pub const MAX_LABEL_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Label(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Not,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Global,
    Has(&'a str),
    LParen,
    RParen,
    And,
    Or,
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub kind: Kind<'a>,
    /// Byte offset of the token's first character.
    pub pos: usize,
}

/// A tokenizer error: message and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub message: String,
    pub pos: usize,
}

pub(crate) fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

struct Lexer<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn skip_space(&mut self) {
        while self.pos < self.bytes.len() && is_space(self.bytes[self.pos]) {
            self.pos += 1;
        }
    }

    fn starts_with(&self, s: &str) -> bool {
        self.bytes[self.pos..].starts_with(s.as_bytes())
    }

    /// Reads a label identifier at the current position (possibly empty), enforcing the length
    /// limit.
    fn label(&mut self) -> Result<&'a str, LexError> {
        let start = self.pos;
        while self.pos < self.bytes.len() && is_label_byte(self.bytes[self.pos]) {
            self.pos += 1;
        }
        if self.pos - start > MAX_LABEL_LEN {
            return Err(LexError {
                message: format!(
                    "label too long ({} characters, at most {MAX_LABEL_LEN} allowed)",
                    self.pos - start
                ),
                pos: start,
            });
        }
        // Label bytes are ASCII, so these are character boundaries.
        Ok(&self.input[start..self.pos])
    }

    /// Reads a run of label characters without the length check (for operator words).
    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while self.pos < self.bytes.len() && is_label_byte(self.bytes[self.pos]) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// Parses `name(` ... `)` forms whose opening has already been consumed; expects optional
    /// whitespace then `)`.
    fn close_paren(&mut self, what: &str, start: usize) -> Result<(), LexError> {
        self.skip_space();
        if self.pos < self.bytes.len() && self.bytes[self.pos] == b')' {
            self.pos += 1;
            Ok(())
        } else {
            Err(LexError {
                message: format!("no closing ')' after {what}("),
                pos: start,
            })
        }
    }

    /// The operator word(s) that must follow a label.
    fn operator(&mut self, label: &str) -> Result<Kind<'a>, LexError> {
        let start = self.pos;
        let expected = || LexError {
            message: format!("expected an operator after label {label:?}"),
            pos: start,
        };
        let word = self.word();
        let kind = match word {
            "contains" => Kind::Contains,
            "in" => Kind::In,
            "notin" => Kind::NotIn,
            "startswith" => Kind::StartsWith,
            "endswith" => Kind::EndsWith,
            "starts" | "ends" | "not" => {
                self.skip_space();
                let second = self.word();
                match (word, second) {
                    ("starts", "with") => Kind::StartsWith,
                    ("ends", "with") => Kind::EndsWith,
                    ("not", "in") => Kind::NotIn,
                    _ => return Err(expected()),
                }
            }
            _ => return Err(expected()),
        };
        Ok(kind)
    }

    fn string(&mut self, quote: u8) -> Result<&'a str, LexError> {
        let start = self.pos;
        let body = start + 1;
        match self.bytes[body..].iter().position(|&b| b == quote) {
            Some(len) => {
                self.pos = body + len + 1;
                // Quotes are ASCII, so both ends are character boundaries.
                Ok(&self.input[body..body + len])
            }
            None => Err(LexError {
                message: "unterminated string".into(),
                pos: start,
            }),
        }
    }

    fn next(&mut self, last: Option<Kind<'a>>) -> Result<Token<'a>, LexError> {
        self.skip_space();
        let pos = self.pos;
        let Some(&b) = self.bytes.get(pos) else {
            return Ok(Token {
                kind: Kind::Eof,
                pos,
            });
        };
        let next_is = |c: u8| self.bytes.get(pos + 1) == Some(&c);
        let (kind, len) = match b {
            b'(' => (Kind::LParen, 1),
            b')' => (Kind::RParen, 1),
            b'{' => (Kind::LBrace, 1),
            b'}' => (Kind::RBrace, 1),
            b',' => (Kind::Comma, 1),
            b'=' if next_is(b'=') => (Kind::Eq, 2),
            b'=' => {
                return Err(LexError {
                    message: "expected '=='".into(),
                    pos,
                });
            }
            b'!' if next_is(b'=') => (Kind::Ne, 2),
            b'!' => (Kind::Not, 1),
            b'&' if next_is(b'&') => (Kind::And, 2),
            b'&' => {
                return Err(LexError {
                    message: "expected '&&'".into(),
                    pos,
                });
            }
            b'|' if next_is(b'|') => (Kind::Or, 2),
            b'|' => {
                return Err(LexError {
                    message: "expected '||'".into(),
                    pos,
                });
            }
            b'"' | b'\'' => {
                let s = self.string(b)?;
                return Ok(Token {
                    kind: Kind::Str(s),
                    pos,
                });
            }
            _ => {
                let kind = if let Some(Kind::Label(label)) = last {
                    // Word operators are only recognised straight after a label, which is
                    // why `contains`, `in`, ... remain usable as label names.
                    self.operator(label)?
                } else if self.starts_with("has(") {
                    self.pos += "has(".len();
                    self.skip_space();
                    let label = self.label()?;
                    if label.is_empty() {
                        return Err(LexError {
                            message: "no label name in has( expression".into(),
                            pos,
                        });
                    }
                    self.close_paren("has", pos)?;
                    Kind::Has(label)
                } else if self.starts_with("all(") {
                    self.pos += "all(".len();
                    self.close_paren("all", pos)?;
                    Kind::All
                } else if self.starts_with("global(") {
                    self.pos += "global(".len();
                    self.close_paren("global", pos)?;
                    Kind::Global
                } else {
                    let label = self.label()?;
                    if label.is_empty() {
                        let c = self.input[pos..].chars().next().unwrap_or('?');
                        return Err(LexError {
                            message: format!("unexpected character {c:?}"),
                            pos,
                        });
                    }
                    Kind::Label(label)
                };
                return Ok(Token { kind, pos });
            }
        };
        self.pos += len;
        Ok(Token { kind, pos })
    }
}

/// Splits `input` into tokens, ending with [`Kind::Eof`].
pub(crate) fn tokenize(input: &str) -> Result<Vec<Token<'_>>, LexError> {
    let mut lexer = Lexer {
        input,
        bytes: input.as_bytes(),
        pos: 0,
    };
    let mut tokens: Vec<Token<'_>> = Vec::with_capacity(16);
    loop {
        let last = tokens.last().map(|t| t.kind);
        let tok = lexer.next(last)?;
        tokens.push(tok);
        if tok.kind == Kind::Eof {
            return Ok(tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Kind<'_>> {
        tokenize(s).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn operators_without_spaces() {
        assert_eq!(
            kinds(r#"a=="b""#),
            vec![Kind::Label("a"), Kind::Eq, Kind::Str("b"), Kind::Eof]
        );
        assert_eq!(
            kinds(r#"label contains"value""#),
            vec![
                Kind::Label("label"),
                Kind::Contains,
                Kind::Str("value"),
                Kind::Eof
            ]
        );
    }

    #[test]
    fn multi_word_operators() {
        assert_eq!(kinds("a starts  \twith 'x'")[1], Kind::StartsWith);
        assert_eq!(kinds("a startswith 'x'")[1], Kind::StartsWith);
        assert_eq!(kinds("a ends with 'x'")[1], Kind::EndsWith);
        assert_eq!(kinds("a not in {}")[1], Kind::NotIn);
        assert_eq!(kinds("a notin {}")[1], Kind::NotIn);
        assert_eq!(kinds("a in{}")[1], Kind::In);
    }

    #[test]
    fn keywords_as_labels() {
        assert_eq!(
            kinds("contains contains 'x'"),
            vec![
                Kind::Label("contains"),
                Kind::Contains,
                Kind::Str("x"),
                Kind::Eof
            ]
        );
        assert_eq!(kinds("in in {}")[..2], [Kind::Label("in"), Kind::In]);
        assert_eq!(kinds("has == 'x'")[0], Kind::Label("has"));
    }

    #[test]
    fn unknown_operator_words() {
        for s in [
            "a inf 'x'",
            "a squiggles 'x'",
            "a ends withs 'x'",
            "a starts foo 'x'",
            "a b",
        ] {
            let err = tokenize(s).unwrap_err();
            assert!(err.message.contains("expected an operator"), "{s}: {err:?}");
            assert_eq!(err.pos, 2, "{s}");
        }
    }

    #[test]
    fn label_length_limit() {
        let ok = "a".repeat(512);
        assert_eq!(kinds(&format!("{ok} == 'x'"))[0], Kind::Label(&ok));
        let long = "a".repeat(513);
        let err = tokenize(&format!("{long} == 'x'")).unwrap_err();
        assert!(err.message.contains("label too long"), "{err:?}");
        let err = tokenize(&format!("has({long})")).unwrap_err();
        assert!(err.message.contains("label too long"), "{err:?}");
    }

    #[test]
    fn malformed_functions() {
        for s in [
            "has(",
            "has()",
            "has( foo ",
            "all(",
            "all( x)",
            "global(",
            "global(x)",
        ] {
            assert!(tokenize(s).is_err(), "{s}");
        }
        assert_eq!(kinds("has( foo\t)")[0], Kind::Has("foo"));
        assert_eq!(kinds("all( )")[0], Kind::All);
        assert_eq!(kinds("global()")[0], Kind::Global);
    }

    #[test]
    fn bad_characters() {
        for s in ["%", "a = 'b'", "a & b", "a | b", "a == 'x'\n", "'x", "\"x'"] {
            assert!(tokenize(s).is_err(), "{s:?}");
        }
        assert_eq!(kinds("!!=")[..2], [Kind::Not, Kind::Ne]);
    }
}
