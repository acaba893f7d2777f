//! Reading resources from `-f`: a file, a directory (its `.yaml`, `.yml` and `.json` files,
//! sorted; with `-R` also its subdirectories), or `-` for stdin. Every document is decoded on
//! its own so that one bad document is reported by name without hiding the others.

use std::io::Read;
use std::path::{Path, PathBuf};

use calico_k8s::{K8sObject, K8sResource};
use calico_model::AnyResource;
use calico_model::load::parse_documents;

/// One document of the input.
#[derive(Debug)]
pub struct Doc {
    /// File name (or `<stdin>`).
    pub source: String,
    /// 1-based document number within the file.
    pub index: usize,
    /// The decoded resource, or an error naming the offending field.
    pub result: Result<AnyResource, String>,
    /// A Kubernetes object (`v1` Namespace/ServiceAccount/Pod, `networking.k8s.io/v1`
    /// NetworkPolicy), decoded or an error naming the field; `result` is then an error too.
    pub k8s: Option<Result<K8sObject, String>>,
}

impl Doc {
    /// `file: document N`, for messages.
    pub fn origin(&self) -> String {
        format!("{}: document {}", self.source, self.index)
    }
}

/// A file-level problem (missing file, syntax error, empty input).
#[derive(Debug)]
pub struct FileError {
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

/// The files `-f` names, in processing order.
pub fn expand(filename: &str, recursive: bool) -> Result<Vec<PathBuf>, FileError> {
    if filename == "-" {
        return Ok(vec![PathBuf::from("-")]);
    }
    let path = Path::new(filename);
    let meta = std::fs::metadata(path).map_err(|e| FileError {
        source: filename.to_string(),
        message: format!("open {filename}: {}", io_msg(&e)),
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    walk(path, recursive, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), FileError> {
    let rd = std::fs::read_dir(dir).map_err(|e| FileError {
        source: dir.display().to_string(),
        message: format!("read directory {}: {}", dir.display(), io_msg(&e)),
    })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                walk(&p, recursive, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml") | Some("json")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

fn io_msg(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        _ => e.to_string(),
    }
}

/// Reads and splits one file (or stdin) into documents, each decoded strictly.
pub fn load_file(path: &Path) -> Result<Vec<Doc>, FileError> {
    let (source, text) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| FileError {
                source: "<stdin>".to_string(),
                message: format!("read stdin: {e}"),
            })?;
        ("<stdin>".to_string(), s)
    } else {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            source: source.clone(),
            message: format!("read {source}: {}", io_msg(&e)),
        })?;
        (source, text)
    };
    let mut values = parse_documents(&text, &source).map_err(|e| FileError {
        source: source.clone(),
        message: e.to_string(),
    })?;
    k8s_strict_values(&text, &source, &mut values);
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if K8sResource::is_supported(&v) {
                let k8s = K8sObject::from_value(v).map_err(|e| e.to_string());
                let result = Err(match &k8s {
                    Ok(o) => format!("{}: a Kubernetes object, not a Calico resource", o.id()),
                    Err(e) => e.clone(),
                });
                return Doc {
                    source: source.clone(),
                    index: i + 1,
                    result,
                    k8s: Some(k8s),
                };
            }
            Doc {
                source: source.clone(),
                index: i + 1,
                result: AnyResource::from_value(v).map_err(|e| e.to_string()),
                k8s: None,
            }
        })
        .collect())
}

/// Kubernetes objects are read as kubectl reads them: only YAML 1.2 booleans are booleans, so
/// a label `ns: y` stays the string `"y"`. The v3 loader's reading (YAML 1.1, as upstream
/// calicoctl) is kept for the other documents; when the two readings do not line up document
/// for document, the v3 one is kept for all.
fn k8s_strict_values(text: &str, source: &str, values: &mut [serde_json::Value]) {
    if !values.iter().any(K8sResource::is_supported) {
        return;
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return; // JSON has no YAML 1.1 booleans.
    }
    let Ok(strict) = calico_k8s::types::parse_yaml_documents(text, source) else {
        return;
    };
    if strict.len() != values.len() {
        return;
    }
    for (v, s) in values.iter_mut().zip(strict) {
        if K8sResource::is_supported(&s) {
            *v = s;
        }
    }
}
