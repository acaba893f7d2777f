//! The request environment (`CNI_COMMAND`, `CNI_CONTAINERID`, …) and `CNI_ARGS`.

use std::collections::BTreeMap;

use super::error::{CniError, ErrorCode};

/// The operation requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            "" => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    "missing environment variable CNI_COMMAND",
                    "",
                ));
            }
            other => {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("invalid CNI_COMMAND {other:?}"),
                    "expected one of ADD, DEL, CHECK, VERSION, GC, STATUS",
                ));
            }
        })
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Keys Calico understands are typed; the rest are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub k8s_pod_namespace: String,
    pub k8s_pod_name: String,
    pub k8s_pod_infra_container_id: String,
    /// `IP=<addr>`: a specific address requested from IPAM.
    pub ip: String,
    pub other: BTreeMap<String, String>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut out = CniArgs::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    format!("invalid CNI_ARGS pair {pair:?}"),
                    "expected KEY=VALUE pairs separated by ';'",
                ));
            };
            match k {
                "K8S_POD_NAMESPACE" => out.k8s_pod_namespace = v.to_string(),
                "K8S_POD_NAME" => out.k8s_pod_name = v.to_string(),
                "K8S_POD_INFRA_CONTAINER_ID" => out.k8s_pod_infra_container_id = v.to_string(),
                "IP" => out.ip = v.to_string(),
                _ => {
                    out.other.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Kubernetes identity is used when both pod name and namespace are given.
    pub fn is_k8s(&self) -> bool {
        !self.k8s_pod_name.is_empty() && !self.k8s_pod_namespace.is_empty()
    }
}

/// Everything the runtime passed, read from an injected environment map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: CniArgs,
    pub path: String,
}

impl Request {
    /// Reads and checks the environment for `command` (required variables per spec 1.0.0+;
    /// error code 4 naming every missing or invalid variable).
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, CniError> {
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        let command = Command::parse(&get("CNI_COMMAND"))?;
        let req = Request {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: CniArgs::parse(&get("CNI_ARGS"))?,
            path: get("CNI_PATH"),
        };
        let required: &[&str] = match command {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Version | Command::Gc | Command::Status => &[],
        };
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| get(k).is_empty())
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("missing environment variables: {}", missing.join(", ")),
                format!("required for {command:?}"),
            ));
        }
        if !req.container_id.is_empty() && !valid_container_id(&req.container_id) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("invalid CNI_CONTAINERID {:?}", req.container_id),
                "must start with an alphanumeric character, followed by alphanumerics, '_', '.' or '-'",
            ));
        }
        if !req.ifname.is_empty() && !valid_ifname(&req.ifname) {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!("invalid CNI_IFNAME {:?}", req.ifname),
                "must be 1-15 characters, not '.' or '..', without '/', ':' or whitespace",
            ));
        }
        Ok(req)
    }
}

fn valid_container_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn add_requires_netns_and_names_what_is_missing() {
        let e = Request::from_env(&env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc")]))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidEnvironment);
        assert!(
            e.msg.contains("CNI_NETNS") && e.msg.contains("CNI_IFNAME"),
            "{e}"
        );
    }

    #[test]
    fn del_does_not_require_netns() {
        let r = Request::from_env(&env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(r.command, Command::Del);
    }

    #[test]
    fn cni_args_k8s_identity() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p-1;K8S_POD_INFRA_CONTAINER_ID=c1",
        )
        .unwrap();
        assert!(a.is_k8s());
        assert_eq!(a.k8s_pod_name, "p-1");
        assert_eq!(a.other.get("IgnoreUnknown").map(String::as_str), Some("1"));
        assert!(CniArgs::parse("novalue").is_err());
    }

    #[test]
    fn container_id_syntax() {
        assert!(valid_container_id("a1_b.c-d"));
        assert!(!valid_container_id("-abc"));
        assert!(!valid_container_id("a b"));
        assert!(!valid_container_id(""));
    }

    #[test]
    fn unknown_command() {
        let e = Command::parse("FOO").unwrap_err();
        assert_eq!(e.code.code(), 4);
        assert!(e.msg.contains("FOO"));
    }
}
