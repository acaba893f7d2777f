//! Loading resources from YAML or JSON text: multi-document files, strict typed decoding with the
//! offending field path in every error, and the lenient scalar handling upstream's loader has
//! (label values written as YAML booleans or numbers are strings in the Calico API).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};

use crate::error::ModelError;

/// Splits `text` (YAML with `---` separators, or JSON: one object, an array, or a `List`) into one
/// JSON value per document. Empty documents are skipped.
pub fn parse_documents(
    text: &str,
    source_name: &str,
) -> Result<Vec<serde_json::Value>, ModelError> {
    let trimmed = text.trim_start();
    let docs: Vec<serde_json::Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ModelError::Syntax {
            source_name: source_name.to_string(),
            doc: 1,
            message: e.to_string(),
        })?;
        match v {
            serde_json::Value::Array(items) => items,
            other => vec![other],
        }
    } else {
        serde_saphyr::from_multiple::<serde_json::Value>(text).map_err(|e| ModelError::Syntax {
            source_name: source_name.to_string(),
            doc: 1,
            message: e.to_string(),
        })?
    };
    let mut out = Vec::new();
    for d in docs {
        if d.is_null() {
            continue;
        }
        // `kind: List` / `kind: <Kind>List` with `items`, as calicoctl and kubectl accept.
        let is_list = d
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"))
            && d.get("items").is_some();
        if is_list {
            if let Some(serde_json::Value::Array(items)) = d.get("items") {
                out.extend(items.iter().cloned());
            }
        } else {
            out.push(d);
        }
    }
    Ok(out)
}

/// Reads `apiVersion`, `kind` and `metadata.name` without decoding the rest.
pub fn type_meta(value: &serde_json::Value) -> Result<(String, String, String), ModelError> {
    let obj = value
        .as_object()
        .ok_or(ModelError::Missing("an object at the top level"))?;
    let kind = obj
        .get("kind")
        .and_then(|v| v.as_str())
        .ok_or(ModelError::Missing("kind"))?
        .to_string();
    let api_version = obj
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .ok_or(ModelError::Missing("apiVersion"))?
        .to_string();
    let name = obj
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    Ok((api_version, kind, name))
}

/// Strict typed decoding; the error names the field path (`spec.ingress[0].protocol`).
pub fn decode<T: DeserializeOwned>(
    value: serde_json::Value,
    kind: &str,
    name: &str,
) -> Result<T, ModelError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ModelError::Field {
            kind: kind.to_string(),
            name: name.to_string(),
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// A `map[string]string` that also accepts booleans and numbers as values (YAML 1.1 `yes`,
/// `true`, `5663:12`), turning them into their string form.
pub fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw.unwrap_or_default() {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Null => String::new(),
            other => {
                return Err(D::Error::custom(format!(
                    "value of {k:?} must be a string, got {other}"
                )));
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}
