//! Recursive-descent parser over the token list (§2.2 of the reference note).

use super::ast::Node;
use super::tokenizer::{Kind, Token};

/// Deepest parenthesis nesting accepted; bounds recursion so hostile input cannot overflow
/// the stack.
pub(crate) const MAX_DEPTH: usize = 128;

/// A parser error: message and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub pos: usize,
}

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    i: usize,
    depth: usize,
}

fn describe(kind: Kind<'_>) -> String {
    match kind {
        Kind::Label(l) => format!("label {l:?}"),
        Kind::Str(s) => format!("string {s:?}"),
        Kind::LBrace => "'{'".into(),
        Kind::RBrace => "'}'".into(),
        Kind::Comma => "','".into(),
        Kind::Eq => "'=='".into(),
        Kind::Ne => "'!='".into(),
        Kind::In => "'in'".into(),
        Kind::NotIn => "'not in'".into(),
        Kind::Not => "'!'".into(),
        Kind::Contains => "'contains'".into(),
        Kind::StartsWith => "'starts with'".into(),
        Kind::EndsWith => "'ends with'".into(),
        Kind::All => "'all()'".into(),
        Kind::Global => "'global()'".into(),
        Kind::Has(l) => format!("'has({l})'"),
        Kind::LParen => "'('".into(),
        Kind::RParen => "')'".into(),
        Kind::And => "'&&'".into(),
        Kind::Or => "'||'".into(),
        Kind::Eof => "end of selector".into(),
    }
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Token<'a> {
        // The token list always ends with Eof and the parser never advances past it.
        self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.peek();
        if t.kind != Kind::Eof {
            self.i += 1;
        }
        t
    }

    fn err<T>(&self, tok: Token<'_>, what: &str) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            message: format!("{what}, found {}", describe(tok.kind)),
            pos: tok.pos,
        })
    }

    fn or_expr(&mut self) -> Result<Node, SyntaxError> {
        let mut ops = vec![self.and_expr()?];
        while self.peek().kind == Kind::Or {
            self.bump();
            ops.push(self.and_expr()?);
        }
        Ok(if ops.len() == 1 {
            ops.swap_remove(0)
        } else {
            Node::Or(ops)
        })
    }

    fn and_expr(&mut self) -> Result<Node, SyntaxError> {
        let mut ops = vec![self.operation()?];
        while self.peek().kind == Kind::And {
            self.bump();
            ops.push(self.operation()?);
        }
        Ok(if ops.len() == 1 {
            ops.swap_remove(0)
        } else {
            Node::And(ops)
        })
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let t = self.bump();
        match t.kind {
            Kind::Str(s) => Ok(s.to_string()),
            _ => self.err(t, "expected a string literal"),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SyntaxError> {
        let t = self.bump();
        if t.kind != Kind::LBrace {
            return self.err(t, "expected a set literal '{'");
        }
        let mut values = Vec::new();
        while let Kind::Str(s) = self.peek().kind {
            self.bump();
            values.push(s.to_string());
            if self.peek().kind == Kind::Comma {
                self.bump();
            } else {
                break;
            }
        }
        let t = self.bump();
        if t.kind != Kind::RBrace {
            return self.err(t, "expected '}' or a string in set literal");
        }
        values.sort_unstable();
        values.dedup();
        Ok(values)
    }

    fn operation(&mut self) -> Result<Node, SyntaxError> {
        // Leading `!`s collapse by parity.
        let mut negated = false;
        while self.peek().kind == Kind::Not {
            self.bump();
            negated = !negated;
        }
        let t = self.bump();
        let node = match t.kind {
            Kind::Has(k) => Node::Has(k.to_string()),
            Kind::All => Node::All,
            Kind::Global => Node::Global,
            Kind::Label(k) => {
                let k = k.to_string();
                let op = self.bump();
                match op.kind {
                    Kind::Eq => Node::Eq(k, self.string()?),
                    Kind::Ne => Node::Ne(k, self.string()?),
                    Kind::Contains => Node::Contains(k, self.string()?),
                    Kind::StartsWith => Node::StartsWith(k, self.string()?),
                    Kind::EndsWith => Node::EndsWith(k, self.string()?),
                    Kind::In => Node::In(k, self.set()?),
                    Kind::NotIn => Node::NotIn(k, self.set()?),
                    _ => return self.err(op, &format!("expected an operator after label {k:?}")),
                }
            }
            Kind::LParen => {
                if self.depth >= MAX_DEPTH {
                    return Err(SyntaxError {
                        message: format!("parentheses nested deeper than {MAX_DEPTH} levels"),
                        pos: t.pos,
                    });
                }
                self.depth += 1;
                let inner = self.or_expr()?;
                self.depth -= 1;
                let close = self.bump();
                if close.kind != Kind::RParen {
                    return self.err(close, "expected ')'");
                }
                inner
            }
            _ => return self.err(t, "expected an expression"),
        };
        Ok(if negated {
            Node::Not(Box::new(node))
        } else {
            node
        })
    }
}

/// Parses a token list (ending with Eof). An empty list (just Eof) is `all()`.
pub(crate) fn parse_tokens(tokens: &[Token<'_>]) -> Result<Node, SyntaxError> {
    if tokens.first().is_none_or(|t| t.kind == Kind::Eof) {
        return Ok(Node::All);
    }
    let mut p = Parser {
        tokens,
        i: 0,
        depth: 0,
    };
    let node = p.or_expr()?;
    let t = p.peek();
    if t.kind != Kind::Eof {
        return Err(SyntaxError {
            message: format!(
                "unexpected content at end of selector: {}",
                describe(t.kind)
            ),
            pos: t.pos,
        });
    }
    Ok(node)
}
