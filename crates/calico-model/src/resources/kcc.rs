//! `KubeControllersConfiguration`: the singleton (`default`) configuring calico-kube-controllers.
//! `status` (running config, environment) is carried by the envelope.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::bgp::EnabledDisabled;
use crate::resources::common::{
    is_dns1123_subdomain, null_as_default, validate_cidr, validate_duration,
    validate_meta_labels_annotations, validate_selector,
};

/// Which services get LoadBalancer IPs assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignIPs {
    AllServices,
    RequestedServicesOnly,
}

/// A controller that only has a reconcile period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Go duration. [Default: 5m]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

/// Template for automatically created host endpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoHostEndpointTemplate {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub generate_name: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        rename = "interfaceCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub interface_cidrs: Vec<String>,
    /// Regular expression over interface names.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_pattern: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::load::string_map"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::load::string_map"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node_selector: String,
}

/// Host endpoint auto-creation settings of the node controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoHostEndpointConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create: Option<EnabledDisabled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_default_host_endpoint: Option<EnabledDisabled>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub templates: Vec<AutoHostEndpointTemplate>,
}

/// The node controller (node clean-up, label sync, host endpoints, IPAM GC).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeControllerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_labels: Option<EnabledDisabled>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<AutoHostEndpointConfig>,
    /// Go duration; 0 disables IP garbage collection. [Default: 15m]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_grace_period: Option<String>,
}

/// The LoadBalancer IPAM controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerControllerConfig {
    #[serde(default, rename = "assignIPs", skip_serializing_if = "Option::is_none")]
    pub assign_ips: Option<AssignIPs>,
}

/// The policy-name migration controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyMigrationConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<EnabledDisabled>,
}

/// Per-controller settings; an absent controller is disabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllersConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_endpoint: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ReconcilerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<ReconcilerConfig>,
    /// Upstream decodes JSON field names case-insensitively; the docs spell this `loadbalancer`.
    #[serde(
        default,
        alias = "loadbalancer",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer: Option<LoadBalancerControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_migration: Option<PolicyMigrationConfig>,
}

/// `spec` of the `KubeControllersConfiguration` singleton.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeControllersConfigurationSpec {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub log_severity_screen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<EnabledDisabled>,
    /// Go duration; 0 disables compaction. [Default: 10m]
    #[serde(
        default,
        rename = "etcdV3CompactionPeriod",
        skip_serializing_if = "Option::is_none"
    )]
    pub etcd_v3_compaction_period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<i64>,
    /// Always written (upstream has no `omitempty` here).
    #[serde(default, deserialize_with = "null_as_default")]
    pub controllers: ControllersConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_profile_port: Option<i64>,
}

/// Log levels kube-controllers accepts (logrus levels; `None` is refused).
const KCC_LOG_LEVELS: &[&str] = crate::resources::bgp::LOG_LEVELS;

/// Default Prometheus metrics port of kube-controllers (0 disables metrics).
pub const DEFAULT_PROMETHEUS_METRICS_PORT: i64 = 9094;

impl Spec for KubeControllersConfigurationSpec {
    const KIND: &'static str = "KubeControllersConfiguration";
    const PLURAL: &'static str = "kubecontrollersconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["kubecontrollersconfiguration", "kcc"];

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        if spec.health_checks.is_none() {
            spec.health_checks = Some(EnabledDisabled::Enabled);
        }
        if spec.prometheus_metrics_port.is_none() {
            spec.prometheus_metrics_port = Some(DEFAULT_PROMETHEUS_METRICS_PORT);
        }
        if let Some(lb) = &mut spec.controllers.load_balancer
            && lb.assign_ips.is_none()
        {
            lb.assign_ips = Some(AssignIPs::AllServices);
        }
        if let Some(pm) = &mut spec.controllers.policy_migration
            && pm.enabled.is_none()
        {
            pm.enabled = Some(EnabledDisabled::Enabled);
        }
    }

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if meta.name != "default" {
            errs.push(
                "metadata.name",
                format!(
                    "{:?}: KubeControllersConfiguration is a singleton and must be named \"default\"",
                    meta.name
                ),
            );
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        if !spec.log_severity_screen.is_empty()
            && !KCC_LOG_LEVELS.contains(&spec.log_severity_screen.as_str())
        {
            errs.push(
                "spec.logSeverityScreen",
                format!(
                    "{:?} is not one of {}",
                    spec.log_severity_screen,
                    KCC_LOG_LEVELS.join(", ")
                ),
            );
        }
        if let Some(d) = &spec.etcd_v3_compaction_period {
            validate_duration("spec.etcdV3CompactionPeriod", d, errs);
        }
        for (path, p) in [
            ("spec.prometheusMetricsPort", spec.prometheus_metrics_port),
            ("spec.debugProfilePort", spec.debug_profile_port),
        ] {
            if let Some(p) = p
                && !(0..=65535).contains(&p)
            {
                errs.push(path, format!("{p} is not a valid port (0-65535)"));
            }
        }
        let c = &spec.controllers;
        if let Some(n) = &c.node {
            for (path, d) in [
                (
                    "spec.controllers.node.reconcilerPeriod",
                    &n.reconciler_period,
                ),
                (
                    "spec.controllers.node.leakGracePeriod",
                    &n.leak_grace_period,
                ),
            ] {
                if let Some(d) = d {
                    validate_duration(path, d, errs);
                }
            }
            if let Some(h) = &n.host_endpoint {
                for (i, t) in h.templates.iter().enumerate() {
                    let p = format!("spec.controllers.node.hostEndpoint.templates[{i}]");
                    if !t.generate_name.is_empty()
                        && (t.generate_name.len() > 253 || !is_dns1123_subdomain(&t.generate_name))
                    {
                        errs.push(
                            format!("{p}.generateName"),
                            format!("{:?} is not a valid name prefix", t.generate_name),
                        );
                    }
                    for (j, cidr) in t.interface_cidrs.iter().enumerate() {
                        validate_cidr(&format!("{p}.interfaceCIDRs[{j}]"), cidr, errs);
                    }
                    if !t.node_selector.is_empty() {
                        validate_selector(&format!("{p}.nodeSelector"), &t.node_selector, errs);
                    }
                }
            }
        }
        for (name, r) in [
            ("policy", &c.policy),
            ("workloadEndpoint", &c.workload_endpoint),
            ("serviceAccount", &c.service_account),
            ("namespace", &c.namespace),
        ] {
            if let Some(ReconcilerConfig {
                reconciler_period: Some(d),
            }) = r
            {
                validate_duration(
                    &format!("spec.controllers.{name}.reconcilerPeriod"),
                    d,
                    errs,
                );
            }
        }
    }
}
