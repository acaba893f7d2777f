//! Errors of the model: parse errors that name the offending field path, and validation errors
//! that name the resource and the field path
//! (`GlobalNetworkPolicy "x": spec.ingress[0].icmp.code: requires icmp.type`).

use std::fmt;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with indices, e.g. `spec.ingress[0].icmp.code`.
    pub path: String,
    /// Lowercase message, no trailing period.
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found with one resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub kind: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: ", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects field errors while walking a resource. Paths are built by the caller.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Errors from loading or converting resources.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The document is not valid YAML/JSON.
    #[error("{source_name}: document {doc}: {message}")]
    Syntax {
        source_name: String,
        doc: usize,
        message: String,
    },
    /// A field has the wrong type, is unknown, or is missing. `path` names it.
    #[error("{kind} {name:?}: {path}: {message}")]
    Field {
        kind: String,
        name: String,
        path: String,
        message: String,
    },
    #[error("unknown apiVersion {api_version:?} for kind {kind:?} (expected projectcalico.org/v3)")]
    ApiVersion { api_version: String, kind: String },
    #[error("unknown resource kind {0:?}")]
    UnknownKind(String),
    #[error("resource is missing {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}
