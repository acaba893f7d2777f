//! The lab's error type.

use std::path::PathBuf;

/// Errors from lab operations, each naming the object that failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab {lab}: {detail}")]
    Lab { lab: String, detail: String },
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Netns(#[from] calico_linux::NetnsError),
    #[error("binary {name} not found next to calico-lab or on PATH")]
    MissingBinary { name: String },
    #[error("{what}: timed out after {secs:.1}s: {detail}")]
    Timeout {
        what: String,
        secs: f64,
        detail: String,
    },
    #[error("scenario {file}: {detail}")]
    Scenario { file: String, detail: String },
    #[error("datastore: {0}")]
    Datastore(String),
}

impl LabError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn lab(lab: &str, detail: impl Into<String>) -> Self {
        LabError::Lab {
            lab: lab.to_string(),
            detail: detail.into(),
        }
    }

    pub fn command(what: impl Into<String>, detail: impl Into<String>) -> Self {
        LabError::Command {
            what: what.into(),
            detail: detail.into(),
        }
    }
}
