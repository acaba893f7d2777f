//! Errors of the Kubernetes translation layer.

/// A Kubernetes object could not be decoded or translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum K8sError {
    /// The text is not YAML/JSON.
    #[error("{source_name}: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    /// `apiVersion`/`kind` missing or not one of the kinds this crate translates.
    #[error("unsupported kubernetes object: apiVersion {api_version:?}, kind {kind:?}")]
    Unsupported { api_version: String, kind: String },
    /// The object does not decode; `path` names the offending field (`spec.ingress[0].from[1]`).
    #[error("{kind} {name:?}: {path}: {message}")]
    Decode {
        kind: String,
        name: String,
        path: String,
        message: String,
    },
    /// The object decodes but is invalid as the Kubernetes API server would reject it, or cannot
    /// be translated (the path names the field).
    #[error("{kind} {name:?}: {path}: {message}")]
    Invalid {
        kind: String,
        name: String,
        path: String,
        message: String,
    },
}
