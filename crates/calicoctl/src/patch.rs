//! Patches for `calicoctl patch`: JSON merge patch (RFC 7386; also used for `strategic`, which
//! for these custom resources upstream's API machinery treats as a merge) and JSON patch
//! (RFC 6902: add, remove, replace, move, copy, test).

use serde_json::Value;

/// Parses the patch text (JSON, or YAML as upstream also accepts).
pub fn parse_patch(text: &str) -> Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_saphyr::from_str::<Value>(text)
            .map_err(|_| format!("patch is not valid JSON: {json_err}")),
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902. Errors name the operation index and path.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("json patch must be an array of operations")?;
    for (i, op) in ops.iter().enumerate() {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or(format!("operation {i}: missing \"op\""))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or(format!("operation {i}: missing \"path\""))?;
        let ctx = |m: String| format!("operation {i} ({name} {path}): {m}");
        match name {
            "add" => add(target, path, value_of(op).map_err(ctx)?).map_err(ctx)?,
            "remove" => {
                remove(target, path).map_err(ctx)?;
            }
            "replace" => {
                remove(target, path).map_err(ctx)?;
                add(target, path, value_of(op).map_err(ctx)?).map_err(ctx)?;
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ctx("missing \"from\"".into()))?;
                let v = if name == "move" {
                    remove(target, from).map_err(ctx)?
                } else {
                    target
                        .pointer(from)
                        .cloned()
                        .ok_or_else(|| ctx(format!("path {from} does not exist")))?
                };
                add(target, path, v).map_err(ctx)?;
            }
            "test" => {
                let want = value_of(op).map_err(ctx)?;
                if target.pointer(path) != Some(&want) {
                    return Err(ctx("test failed".into()));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(())
}

fn value_of(op: &Value) -> Result<Value, String> {
    op.get("value")
        .cloned()
        .ok_or_else(|| "missing \"value\"".to_string())
}

fn split(path: &str) -> Result<(String, String), String> {
    if path.is_empty() {
        return Err("the whole document cannot be patched".into());
    }
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("path {path:?} must start with /"))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let (parent, last) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, v);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of range"));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!("parent {parent:?} does not exist")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or(format!("path {path} does not exist")),
        Some(Value::Array(a)) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {path} does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_ops() {
        let mut v = json!({"spec": {"types": ["Ingress"]}, "metadata": {"name": "x"}});
        json_patch(
            &mut v,
            &json!([
                {"op": "add", "path": "/spec/types/-", "value": "Egress"},
                {"op": "replace", "path": "/metadata/name", "value": "y"},
                {"op": "test", "path": "/spec/types/0", "value": "Ingress"},
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"spec": {"types": ["Ingress", "Egress"]}, "metadata": {"name": "y"}})
        );
        let e = json_patch(&mut v, &json!([{"op": "remove", "path": "/nope"}])).unwrap_err();
        assert!(e.contains("/nope"), "{e}");
    }
}
