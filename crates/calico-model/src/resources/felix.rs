//! `FelixConfiguration`: the global (`default`), per-node (`node.<name>`) and per-selector Felix
//! settings.
//!
//! Every upstream field is listed once in the [`felix_fields!`] table below with its JSON name,
//! type and check; the table generates the struct (all fields optional, unset fields omitted on
//! output) and the per-field validation. Cross-field rules follow in [`Spec::validate`].
//! Durations are Go duration strings (`90s`, `1m30s`, `500ms`) kept as written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::bgp::LOG_LEVELS;
use crate::resources::common::{
    is_dns1123_label, null_as_default, parse_cidr_or_ip, parse_go_duration, validate_cidr,
    validate_duration, validate_ip, validate_meta_labels_annotations, validate_resource_name,
    validate_selector,
};

/// A protocol/port (and optional source/destination CIDR) that Felix always allows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtoPort {
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub protocol: String,
    pub port: i64,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub net: String,
}

/// Deprecated single route table range (`1..=250`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableRange {
    pub min: i64,
    pub max: i64,
}

/// Override of one Felix subcomponent's health timeout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthTimeoutOverride {
    pub name: String,
    /// Go duration.
    pub timeout: String,
}

/// BPF conntrack timers; each a Go duration or `Auto`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BPFConntrackTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_grace_period: Option<String>,
    #[serde(
        default,
        rename = "tcpSynSent",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_syn_sent: Option<String>,
    #[serde(
        default,
        rename = "tcpEstablished",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_established: Option<String>,
    #[serde(
        default,
        rename = "tcpFinsSeen",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_fins_seen: Option<String>,
    #[serde(
        default,
        rename = "tcpResetSeen",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_reset_seen: Option<String>,
    #[serde(
        default,
        rename = "udpTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_timeout: Option<String>,
    #[serde(
        default,
        rename = "genericTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub generic_timeout: Option<String>,
    #[serde(
        default,
        rename = "icmpTimeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub icmp_timeout: Option<String>,
}

/// An integer or a string (Kubernetes `IntOrString`; used for port ranges and DSCP values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    Str(String),
}

/// A per-field check used by the field table.
trait Check<T: ?Sized> {
    fn check(&self, path: &str, v: &T, errs: &mut Errors);
}

/// No constraint beyond the type.
struct Any;
impl<T: ?Sized> Check<T> for Any {
    fn check(&self, _: &str, _: &T, _: &mut Errors) {}
}

/// A Go duration.
struct Dur;
impl Check<String> for Dur {
    fn check(&self, path: &str, v: &String, errs: &mut Errors) {
        validate_duration(path, v, errs);
    }
}

/// One of a fixed, case-sensitive set.
struct OneOf(&'static [&'static str]);
impl Check<String> for OneOf {
    fn check(&self, path: &str, v: &String, errs: &mut Errors) {
        if !self.0.contains(&v.as_str()) {
            errs.push(path, format!("{v:?} is not one of {}", self.0.join(", ")));
        }
    }
}

/// One of a fixed set, compared case-insensitively (upstream `(?i)` patterns); empty allowed.
struct OneOfCi(&'static [&'static str]);
impl Check<String> for OneOfCi {
    fn check(&self, path: &str, v: &String, errs: &mut Errors) {
        if !v.is_empty() && !self.0.iter().any(|a| a.eq_ignore_ascii_case(v)) {
            errs.push(
                path,
                format!(
                    "{v:?} is not one of {} (case-insensitive)",
                    self.0.join(", ")
                ),
            );
        }
    }
}

/// An inclusive integer range.
struct Range(i64, i64);
impl Check<i64> for Range {
    fn check(&self, path: &str, v: &i64, errs: &mut Errors) {
        if !(self.0..=self.1).contains(v) {
            errs.push(
                path,
                format!(
                    "{v} is out of range: must be between {} and {}",
                    self.0, self.1
                ),
            );
        }
    }
}

/// An IP address of family 4 or 6.
struct Ip(u8);

/// A list of CIDRs (either family unless restricted to IPv4).
struct Cidrs {
    v4_only: bool,
}
impl Check<Vec<String>> for Cidrs {
    fn check(&self, path: &str, v: &Vec<String>, errs: &mut Errors) {
        for (i, c) in v.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match parse_cidr_or_ip(c) {
                None => errs.push(p, format!("{c:?} is not a valid CIDR")),
                Some((ip, _)) if self.v4_only && !ip.is_ipv4() => errs.push(
                    p,
                    format!("{c:?} is an IPv6 CIDR; only IPv4 CIDRs are allowed"),
                ),
                Some(_) => {}
            }
        }
    }
}

/// A string matching a simple character-class rule.
struct Chars {
    allowed: &'static [u8],
    min: usize,
    max: usize,
    what: &'static str,
}
impl Chars {
    fn ok(&self, v: &str) -> bool {
        (self.min..=self.max).contains(&v.len())
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || self.allowed.contains(&b))
    }
}
impl Check<String> for Chars {
    fn check(&self, path: &str, v: &String, errs: &mut Errors) {
        if !self.ok(v) {
            errs.push(path, format!("{v:?} is not a valid {}", self.what));
        }
    }
}
impl Check<Vec<String>> for Chars {
    fn check(&self, path: &str, v: &Vec<String>, errs: &mut Errors) {
        for (i, s) in v.iter().enumerate() {
            Check::<String>::check(self, &format!("{path}[{i}]"), s, errs);
        }
    }
}

/// A regular expression (checked for balanced groups and well-placed repetition operators).
struct Regex;
impl Check<String> for Regex {
    fn check(&self, path: &str, v: &String, errs: &mut Errors) {
        if let Err(e) = plausible_regex(v) {
            errs.push(
                path,
                format!("{v:?} is not a valid regular expression: {e}"),
            );
        }
    }
}

/// A custom check function.
struct With<T: ?Sized>(fn(&str, &T, &mut Errors));
impl<T: ?Sized> Check<T> for With<T> {
    fn check(&self, path: &str, v: &T, errs: &mut Errors) {
        (self.0)(path, v, errs);
    }
}

const ENABLED_DISABLED: &[&str] = &["Enabled", "Disabled"];
/// `programClusterRoutes` values (v3.32 has Enabled/Disabled; later releases add the split modes).
pub const CLUSTER_ROUTES: &[&str] = &[
    "Enabled",
    "Disabled",
    "EnabledIPIPOnly",
    "EnabledNoEncapOnly",
];
const INTERFACE: Chars = Chars {
    allowed: b"_.-",
    min: 1,
    max: 15,
    what: "interface name",
};
const IFACE_FILTER: Chars = Chars {
    allowed: b":._+-",
    min: 1,
    max: 15,
    what: "interface name or filter (e.g. eth+)",
};
const PROMETHEUS_HOST: Chars = Chars {
    allowed: b":._+-",
    min: 1,
    max: 64,
    what: "host (IP address or name, at most 64 characters)",
};

macro_rules! felix_fields {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $json:literal => $check:expr ; )*) => {
        /// `spec` of a `FelixConfiguration`. Every field is optional; unset means "use the value
        /// from a less specific configuration, or Felix's built-in default".
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FelixConfigurationSpec {
            $(
                $(#[$doc])*
                #[serde(rename = $json, default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl FelixConfigurationSpec {
            /// JSON names of every field, in declaration order.
            pub const FIELD_NAMES: &'static [&'static str] = &[$($json),*];

            fn check_fields(&self, errs: &mut Errors) {
                $(
                    if let Some(v) = &self.$field {
                        <_ as Check<$ty>>::check(&$check, concat!("spec.", $json), v, errs);
                    }
                )*
            }
        }
    };
}

felix_fields! {
    use_internal_dataplane_driver: bool = "useInternalDataplaneDriver" => Any;
    dataplane_driver: String = "dataplaneDriver" => Any;
    dataplane_watchdog_timeout: String = "dataplaneWatchdogTimeout" => Dur;
    ipv6_support: bool = "ipv6Support" => Any;
    route_refresh_interval: String = "routeRefreshInterval" => Dur;
    interface_refresh_interval: String = "interfaceRefreshInterval" => Dur;
    iptables_refresh_interval: String = "iptablesRefreshInterval" => Dur;
    iptables_post_write_check_interval: String = "iptablesPostWriteCheckInterval" => Dur;
    iptables_lock_file_path: String = "iptablesLockFilePath" => Any;
    iptables_lock_timeout: String = "iptablesLockTimeout" => Dur;
    iptables_lock_probe_interval: String = "iptablesLockProbeInterval" => Dur;
    feature_detect_override: String = "featureDetectOverride" => With::<String>(check_feature_detect_override);
    feature_gates: String = "featureGates" => With::<String>(check_feature_gates);
    ipsets_refresh_interval: String = "ipsetsRefreshInterval" => Dur;
    max_ipset_size: i64 = "maxIpsetSize" => Range(0, i64::from(i32::MAX));
    iptables_backend: String = "iptablesBackend" => OneOf(&["Legacy", "NFT", "Auto"]);
    xdp_refresh_interval: String = "xdpRefreshInterval" => Dur;
    netlink_timeout: String = "netlinkTimeout" => Dur;
    metadata_addr: String = "metadataAddr" => Any;
    metadata_port: i64 = "metadataPort" => Range(0, 65535);
    openstack_region: String = "openstackRegion" => With::<String>(check_openstack_region);
    interface_prefix: String = "interfacePrefix" => Any;
    interface_exclude: String = "interfaceExclude" => Any;
    chain_insert_mode: String = "chainInsertMode" => OneOfCi(&["Insert", "Append"]);
    default_endpoint_to_host_action: String = "defaultEndpointToHostAction" => OneOf(&["Drop", "Accept", "Return"]);
    iptables_filter_allow_action: String = "iptablesFilterAllowAction" => OneOf(&["Accept", "Return"]);
    iptables_mangle_allow_action: String = "iptablesMangleAllowAction" => OneOf(&["Accept", "Return"]);
    iptables_filter_deny_action: String = "iptablesFilterDenyAction" => OneOf(&["Drop", "Reject"]);
    log_prefix: String = "logPrefix" => Chars { allowed: b"%: /_-", min: 0, max: usize::MAX, what: "log prefix (letters, digits and % : / _ - and space)" };
    log_file_path: String = "logFilePath" => Any;
    log_severity_file: String = "logSeverityFile" => OneOf(LOG_LEVELS);
    log_severity_screen: String = "logSeverityScreen" => OneOf(LOG_LEVELS);
    log_severity_sys: String = "logSeveritySys" => OneOf(LOG_LEVELS);
    log_debug_filename_regex: String = "logDebugFilenameRegex" => Regex;
    ipip_enabled: bool = "ipipEnabled" => Any;
    ipip_mtu: i64 = "ipipMTU" => Range(0, 65535);
    vxlan_enabled: bool = "vxlanEnabled" => Any;
    vxlan_mtu: i64 = "vxlanMTU" => Range(0, 65535);
    vxlan_mtu_v6: i64 = "vxlanMTUV6" => Range(0, 65535);
    vxlan_port: i64 = "vxlanPort" => Range(0, 65535);
    vxlan_vni: i64 = "vxlanVNI" => Range(0, 16_777_215);
    allow_vxlan_packets_from_workloads: bool = "allowVXLANPacketsFromWorkloads" => Any;
    allow_ipip_packets_from_workloads: bool = "allowIPIPPacketsFromWorkloads" => Any;
    reporting_interval: String = "reportingInterval" => Dur;
    reporting_ttl: String = "reportingTTL" => Dur;
    endpoint_reporting_enabled: bool = "endpointReportingEnabled" => Any;
    endpoint_reporting_delay: String = "endpointReportingDelay" => Dur;
    endpoint_status_path_prefix: String = "endpointStatusPathPrefix" => Any;
    iptables_mark_mask: i64 = "iptablesMarkMask" => Range(0, 4_294_967_295);
    nftables_mark_mask: i64 = "nftablesMarkMask" => Range(0, 4_294_967_295);
    nftables_mode: String = "nftablesMode" => OneOf(&["Disabled", "Enabled", "Auto"]);
    nftables_refresh_interval: String = "nftablesRefreshInterval" => Dur;
    nftables_filter_allow_action: String = "nftablesFilterAllowAction" => OneOf(&["Accept", "Return"]);
    nftables_mangle_allow_action: String = "nftablesMangleAllowAction" => OneOf(&["Accept", "Return"]);
    nftables_filter_deny_action: String = "nftablesFilterDenyAction" => OneOf(&["Drop", "Reject"]);
    disable_conntrack_invalid_check: bool = "disableConntrackInvalidCheck" => Any;
    health_enabled: bool = "healthEnabled" => Any;
    health_host: String = "healthHost" => Any;
    health_port: i64 = "healthPort" => Range(0, 65535);
    health_timeout_overrides: Vec<HealthTimeoutOverride> = "healthTimeoutOverrides" => With::<Vec<HealthTimeoutOverride>>(check_health_timeout_overrides);
    prometheus_metrics_enabled: bool = "prometheusMetricsEnabled" => Any;
    prometheus_metrics_host: String = "prometheusMetricsHost" => PROMETHEUS_HOST;
    prometheus_metrics_port: i64 = "prometheusMetricsPort" => Range(0, 65535);
    prometheus_go_metrics_enabled: bool = "prometheusGoMetricsEnabled" => Any;
    prometheus_process_metrics_enabled: bool = "prometheusProcessMetricsEnabled" => Any;
    prometheus_wireguard_metrics_enabled: bool = "prometheusWireGuardMetricsEnabled" => Any;
    prometheus_metrics_cert_file: String = "prometheusMetricsCertFile" => Any;
    prometheus_metrics_key_file: String = "prometheusMetricsKeyFile" => Any;
    prometheus_metrics_ca_file: String = "prometheusMetricsCAFile" => Any;
    prometheus_metrics_client_auth: String = "prometheusMetricsClientAuth" => OneOf(&["NoClientCert", "RequestClientCert", "RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]);
    failsafe_inbound_host_ports: Vec<ProtoPort> = "failsafeInboundHostPorts" => With::<Vec<ProtoPort>>(check_proto_ports);
    failsafe_outbound_host_ports: Vec<ProtoPort> = "failsafeOutboundHostPorts" => With::<Vec<ProtoPort>>(check_proto_ports);
    kube_node_port_ranges: Vec<IntOrString> = "kubeNodePortRanges" => With::<Vec<IntOrString>>(check_node_port_ranges);
    policy_sync_path_prefix: String = "policySyncPathPrefix" => Any;
    usage_reporting_enabled: bool = "usageReportingEnabled" => Any;
    usage_reporting_initial_delay: String = "usageReportingInitialDelay" => Dur;
    usage_reporting_interval: String = "usageReportingInterval" => Dur;
    nat_port_range: IntOrString = "natPortRange" => With::<IntOrString>(check_port_range);
    nat_outgoing_address: String = "natOutgoingAddress" => Any;
    nat_outgoing_exclusions: String = "natOutgoingExclusions" => OneOf(&["IPPoolsOnly", "IPPoolsAndHostIPs"]);
    device_route_source_address: String = "deviceRouteSourceAddress" => Any;
    device_route_source_address_ipv6: String = "deviceRouteSourceAddressIPv6" => Any;
    device_route_protocol: i64 = "deviceRouteProtocol" => Range(0, 255);
    remove_external_routes: bool = "removeExternalRoutes" => Any;
    ipv4_normal_route_priority: i64 = "ipv4NormalRoutePriority" => Range(1, 2_147_483_646);
    ipv4_elevated_route_priority: i64 = "ipv4ElevatedRoutePriority" => Range(1, 2_147_483_646);
    ipv6_normal_route_priority: i64 = "ipv6NormalRoutePriority" => Range(1, 2_147_483_646);
    ipv6_elevated_route_priority: i64 = "ipv6ElevatedRoutePriority" => Range(1, 2_147_483_646);
    live_migration_route_convergence_time: String = "liveMigrationRouteConvergenceTime" => Dur;
    /// Which cluster routes Felix (rather than BIRD) programs.
    program_cluster_routes: String = "programClusterRoutes" => OneOf(CLUSTER_ROUTES);
    external_nodes_cidr_list: Vec<String> = "externalNodesList" => Cidrs { v4_only: true };
    debug_memory_profile_path: String = "debugMemoryProfilePath" => Any;
    debug_disable_log_dropping: bool = "debugDisableLogDropping" => Any;
    debug_simulate_calc_graph_hang_after: String = "debugSimulateCalcGraphHangAfter" => Dur;
    debug_simulate_dataplane_hang_after: String = "debugSimulateDataplaneHangAfter" => Dur;
    debug_simulate_dataplane_apply_delay: String = "debugSimulateDataplaneApplyDelay" => Dur;
    debug_host: String = "debugHost" => Any;
    debug_port: i64 = "debugPort" => Range(0, 65535);
    iptables_nat_outgoing_interface_filter: String = "iptablesNATOutgoingInterfaceFilter" => IFACE_FILTER;
    sidecar_acceleration_enabled: bool = "sidecarAccelerationEnabled" => Any;
    xdp_enabled: bool = "xdpEnabled" => Any;
    generic_xdp_enabled: bool = "genericXDPEnabled" => Any;
    bpf_enabled: bool = "bpfEnabled" => Any;
    bpf_disable_unprivileged: bool = "bpfDisableUnprivileged" => Any;
    bpf_log_level: String = "bpfLogLevel" => OneOf(&["Off", "Info", "Debug"]);
    bpf_log_filters: BTreeMap<String, String> = "bpfLogFilters" => With::<BTreeMap<String, String>>(check_bpf_log_filters);
    bpf_ctlb_log_filter: String = "bpfCTLBLogFilter" => Any;
    bpf_data_iface_pattern: String = "bpfDataIfacePattern" => Regex;
    bpf_l3_iface_pattern: String = "bpfL3IfacePattern" => Regex;
    bpf_connect_time_load_balancing_enabled: bool = "bpfConnectTimeLoadBalancingEnabled" => Any;
    bpf_connect_time_load_balancing: String = "bpfConnectTimeLoadBalancing" => OneOf(&["TCP", "Enabled", "Disabled"]);
    bpf_host_networked_nat_without_ctlb: String = "bpfHostNetworkedNATWithoutCTLB" => OneOf(ENABLED_DISABLED);
    bpf_external_service_mode: String = "bpfExternalServiceMode" => OneOf(&["Tunnel", "DSR"]);
    bpf_dsr_optout_cidrs: Vec<String> = "bpfDSROptoutCIDRs" => Cidrs { v4_only: false };
    bpf_ext_to_service_connmark: i64 = "bpfExtToServiceConnmark" => Range(0, 4_294_967_295);
    bpf_kube_proxy_iptables_cleanup_enabled: bool = "bpfKubeProxyIptablesCleanupEnabled" => Any;
    /// Deprecated (older releases); accepted so existing manifests keep loading.
    bpf_kube_proxy_endpoint_slices_enabled: bool = "bpfKubeProxyEndpointSlicesEnabled" => Any;
    bpf_kube_proxy_min_sync_period: String = "bpfKubeProxyMinSyncPeriod" => Dur;
    bpf_kube_proxy_healthz_port: i64 = "bpfKubeProxyHealthzPort" => Range(0, 65535);
    bpf_map_size_nat_frontend: i64 = "bpfMapSizeNATFrontend" => Range(0, i64::from(i32::MAX));
    bpf_map_size_nat_backend: i64 = "bpfMapSizeNATBackend" => Range(0, i64::from(i32::MAX));
    bpf_map_size_nat_affinity: i64 = "bpfMapSizeNATAffinity" => Range(0, i64::from(i32::MAX));
    bpf_map_size_route: i64 = "bpfMapSizeRoute" => Range(0, i64::from(i32::MAX));
    bpf_map_size_conntrack: i64 = "bpfMapSizeConntrack" => Range(0, i64::from(i32::MAX));
    bpf_map_size_per_cpu_conntrack: i64 = "bpfMapSizePerCpuConntrack" => Range(0, i64::from(i32::MAX));
    bpf_map_size_conntrack_scaling: String = "bpfMapSizeConntrackScaling" => OneOfCi(&["Disabled", "DoubleIfFull"]);
    bpf_map_size_conntrack_cleanup_queue: i64 = "bpfMapSizeConntrackCleanupQueue" => Range(1, i64::from(i32::MAX));
    bpf_map_size_ip_sets: i64 = "bpfMapSizeIPSets" => Range(0, i64::from(i32::MAX));
    bpf_map_size_if_state: i64 = "bpfMapSizeIfState" => Range(0, i64::from(i32::MAX));
    bpf_host_conntrack_bypass: bool = "bpfHostConntrackBypass" => Any;
    bpf_enforce_rpf: String = "bpfEnforceRPF" => OneOfCi(&["Disabled", "Strict", "Loose"]);
    bpf_policy_debug_enabled: bool = "bpfPolicyDebugEnabled" => Any;
    bpf_force_track_packets_from_ifaces: Vec<String> = "bpfForceTrackPacketsFromIfaces" => IFACE_FILTER;
    bpf_disable_gro_for_ifaces: String = "bpfDisableGROForIfaces" => Regex;
    bpf_exclude_cidrs_from_nat: Vec<String> = "bpfExcludeCIDRsFromNAT" => Cidrs { v4_only: false };
    bpf_export_buffer_size_mb: i64 = "bpfExportBufferSizeMB" => Range(0, i64::from(i32::MAX));
    bpf_redirect_to_peer: String = "bpfRedirectToPeer" => OneOf(&["Enabled", "Disabled", "L2Only"]);
    bpf_attach_type: String = "bpfAttachType" => OneOf(&["TC", "TCX"]);
    bpf_profiling: String = "bpfProfiling" => OneOf(ENABLED_DISABLED);
    bpf_jit_hardening: String = "bpfJITHardening" => OneOf(&["Auto", "Strict"]);
    bpf_conntrack_log_level: String = "bpfConntrackLogLevel" => OneOf(&["Off", "Debug"]);
    bpf_conntrack_cleanup_mode: String = "bpfConntrackMode" => OneOf(&["Auto", "Userspace", "BPFProgram"]);
    bpf_conntrack_timeouts: BPFConntrackTimeouts = "bpfConntrackTimeouts" => With::<BPFConntrackTimeouts>(check_conntrack_timeouts);
    bpf_psnat_ports: IntOrString = "bpfPSNATPorts" => With::<IntOrString>(check_port_range);
    bpf_ip_frag_timeout: String = "bpfIPFragTimeout" => Dur;
    bpf_ip_fragment_reassembly_enabled: bool = "bpfIPFragmentReassemblyEnabled" => Any;
    bpf_maglev_max_endpoints_per_service: i64 = "bpfMaglevMaxEndpointsPerService" => Range(1, 3000);
    bpf_maglev_max_services: i64 = "bpfMaglevMaxServices" => Range(1, 3000);
    bpf_overlay_host_source_ip: String = "bpfOverlayHostSourceIP" => OneOf(&["TunnelAddress", "HostAddress"]);
    route_source: String = "routeSource" => OneOfCi(&["WorkloadIPs", "CalicoIPAM"]);
    route_table_range: RouteTableRange = "routeTableRange" => With::<RouteTableRange>(check_route_table_range);
    route_table_ranges: Vec<RouteTableRange> = "routeTableRanges" => With::<Vec<RouteTableRange>>(check_route_table_ranges);
    route_sync_disabled: bool = "routeSyncDisabled" => Any;
    service_loop_prevention: String = "serviceLoopPrevention" => OneOfCi(&["Drop", "Reject", "Disabled"]);
    workload_source_spoofing: String = "workloadSourceSpoofing" => OneOfCi(&["Disabled", "Any"]);
    mtu_iface_pattern: String = "mtuIfacePattern" => Regex;
    require_mtu_file: bool = "requireMTUFile" => Any;
    floating_ips: String = "floatingIPs" => OneOf(ENABLED_DISABLED);
    windows_manage_firewall_rules: String = "windowsManageFirewallRules" => OneOf(ENABLED_DISABLED);
    go_gc_threshold: i64 = "goGCThreshold" => Range(-1, i64::from(i32::MAX));
    go_memory_limit_mb: i64 = "goMemoryLimitMB" => Range(-1, i64::from(i32::MAX));
    go_max_procs: i64 = "goMaxProcs" => Range(-1, i64::from(i32::MAX));
    wireguard_enabled: bool = "wireguardEnabled" => Any;
    wireguard_enabled_v6: bool = "wireguardEnabledV6" => Any;
    wireguard_listening_port: i64 = "wireguardListeningPort" => Range(1, 65535);
    wireguard_listening_port_v6: i64 = "wireguardListeningPortV6" => Range(1, 65535);
    wireguard_routing_rule_priority: i64 = "wireguardRoutingRulePriority" => Range(1, 32765);
    wireguard_interface_name: String = "wireguardInterfaceName" => INTERFACE;
    wireguard_interface_name_v6: String = "wireguardInterfaceNameV6" => INTERFACE;
    wireguard_mtu: i64 = "wireguardMTU" => Range(0, 65535);
    wireguard_mtu_v6: i64 = "wireguardMTUV6" => Range(0, 65535);
    wireguard_host_encryption_enabled: bool = "wireguardHostEncryptionEnabled" => Any;
    wireguard_keep_alive: String = "wireguardKeepAlive" => Dur;
    wireguard_threading_enabled: bool = "wireguardThreadingEnabled" => Any;
    aws_src_dst_check: String = "awsSrcDstCheck" => OneOf(&["DoNothing", "Enable", "Disable"]);
    cgroup_v2_path: String = "cgroupV2Path" => Any;
    ip_forwarding: String = "ipForwarding" => OneOf(ENABLED_DISABLED);
    istio_ambient_mode: String = "istioAmbientMode" => OneOf(ENABLED_DISABLED);
    istio_dscp_mark: IntOrString = "istioDSCPMark" => With::<IntOrString>(check_dscp);
    flow_logs_flush_interval: String = "flowLogsFlushInterval" => Dur;
    flow_logs_collector_debug_trace: bool = "flowLogsCollectorDebugTrace" => Any;
    flow_logs_goldmane_server: String = "flowLogsGoldmaneServer" => Any;
    flow_logs_local_reporter: String = "flowLogsLocalReporter" => OneOf(ENABLED_DISABLED);
    flow_logs_policy_evaluation_mode: String = "flowLogsPolicyEvaluationMode" => OneOf(&["None", "Continuous"]);
    local_subnet_l2_reachability: String = "localSubnetL2Reachability" => OneOf(&["Disabled", "PodsAndLoadBalancers"]);
    local_subnet_l2_reachability_refresh_interval: String = "localSubnetL2ReachabilityRefreshInterval" => Dur;
    log_action_rate_limit: String = "logActionRateLimit" => With::<String>(check_log_action_rate_limit);
    log_action_rate_limit_burst: i64 = "logActionRateLimitBurst" => Range(0, 9999);
    /// Restricts a non-`default`, non-`node.*` configuration to matching nodes.
    node_selector: String = "nodeSelector" => With::<String>(check_selector);
}

/// DSCP class names upstream accepts in place of a number.
const DSCP_NAMES: &[&str] = &[
    "DF", "EF", "AF11", "AF12", "AF13", "AF21", "AF22", "AF23", "AF31", "AF32", "AF33", "AF41",
    "AF42", "AF43", "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6", "CS7",
];

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_selector(path: &str, v: &String, errs: &mut Errors) {
    if v.len() > 1024 {
        errs.push(path, "must be at most 1024 characters");
    }
    validate_selector(path, v, errs);
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_feature_detect_override(path: &str, v: &String, errs: &mut Errors) {
    let ok = v
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|item| match item.split_once('=') {
            Some((k, val)) => is_feature_key(k) && matches!(val, "true" | "false" | ""),
            None => false,
        });
    if !ok {
        errs.push(
            path,
            format!("{v:?} must be a comma-separated list of Feature=true|false| items (e.g. SNATFullyRandom=true,MASQFullyRandom=false)"),
        );
    }
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_feature_gates(path: &str, v: &String, errs: &mut Errors) {
    let ok = v
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|item| match item.split_once('=') {
            Some((k, val)) => is_feature_key(k) && !val.is_empty() && !val.contains('='),
            None => false,
        });
    if !ok {
        errs.push(
            path,
            format!("{v:?} must be a comma-separated list of Feature=value items"),
        );
    }
}

fn is_feature_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_openstack_region(path: &str, v: &String, errs: &mut Errors) {
    // The region becomes part of a namespace name `openstack-region-<region>` (≤ 63 characters).
    const MAX: usize = 63 - "openstack-region-".len();
    if v.len() > MAX {
        errs.push(path, format!("is too long (at most {MAX} characters)"));
    } else if !v.is_empty() && !is_dns1123_label(v) {
        errs.push(path, format!("{v:?} must be a valid DNS label"));
    }
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_health_timeout_overrides(path: &str, v: &Vec<HealthTimeoutOverride>, errs: &mut Errors) {
    for (i, o) in v.iter().enumerate() {
        let ok = !o.name.is_empty()
            && o.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_ -".contains(&b));
        if !ok {
            errs.push(
                format!("{path}[{i}].name"),
                format!("{:?} must match ^[a-zA-Z0-9_ -]+$", o.name),
            );
        }
        validate_duration(&format!("{path}[{i}].timeout"), &o.timeout, errs);
    }
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_proto_ports(path: &str, v: &Vec<ProtoPort>, errs: &mut Errors) {
    for (i, p) in v.iter().enumerate() {
        if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            errs.push(
                format!("{path}[{i}].protocol"),
                format!(
                    "{:?}: protocol must be 'TCP' or 'UDP' or 'SCTP'",
                    p.protocol
                ),
            );
        }
        if !(0..=65535).contains(&p.port) {
            errs.push(
                format!("{path}[{i}].port"),
                format!("{} is not a valid port (0-65535)", p.port),
            );
        }
        if !p.net.is_empty() {
            validate_cidr(&format!("{path}[{i}].net"), &p.net, errs);
        }
    }
}

/// `n` or `"min:max"` (numeric only).
fn port_range(v: &IntOrString) -> Result<(i64, i64), String> {
    let num = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} is not a port number"));
        }
        s.parse::<i64>().map_err(|e| e.to_string())
    };
    let (lo, hi) = match v {
        IntOrString::Int(n) => (*n, *n),
        IntOrString::Str(s) => match s.split_once(':') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        },
    };
    if !(1..=65535).contains(&lo) || !(1..=65535).contains(&hi) {
        return Err("port numbers must be between 1 and 65535".into());
    }
    if lo > hi {
        return Err(format!("port range {lo}:{hi} is reversed"));
    }
    Ok((lo, hi))
}

fn check_port_range(path: &str, v: &IntOrString, errs: &mut Errors) {
    if let Err(e) = port_range(v) {
        errs.push(path, format!("invalid port range: {e}"));
    }
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_node_port_ranges(path: &str, v: &Vec<IntOrString>, errs: &mut Errors) {
    if v.len() > 7 {
        errs.push(path, "node port ranges list is too long (max 7)");
    }
    for (i, r) in v.iter().enumerate() {
        if let Err(e) = port_range(r) {
            errs.push(
                format!("{path}[{i}]"),
                format!("invalid port range (named ports are not allowed): {e}"),
            );
        }
    }
}

fn check_dscp(path: &str, v: &IntOrString, errs: &mut Errors) {
    let ok = match v {
        IntOrString::Int(n) => (0..=63).contains(n),
        IntOrString::Str(s) => {
            DSCP_NAMES.contains(&s.as_str())
                || s.parse::<i64>().is_ok_and(|n| (0..=63).contains(&n))
        }
    };
    if !ok {
        errs.push(
            path,
            "must be a DSCP value between 0 and 63 or a DSCP class name (e.g. EF, AF11, CS1)",
        );
    }
}

fn check_bpf_log_filters(path: &str, v: &BTreeMap<String, String>, errs: &mut Errors) {
    for k in v.keys() {
        if !INTERFACE.ok(k) {
            errs.push(
                format!("{path}.{k}"),
                format!("{k:?} is not a valid interface name (or all/weps/heps)"),
            );
        }
    }
}

fn check_conntrack_timeouts(path: &str, v: &BPFConntrackTimeouts, errs: &mut Errors) {
    for (name, t) in [
        ("creationGracePeriod", &v.creation_grace_period),
        ("tcpSynSent", &v.tcp_syn_sent),
        ("tcpEstablished", &v.tcp_established),
        ("tcpFinsSeen", &v.tcp_fins_seen),
        ("tcpResetSeen", &v.tcp_reset_seen),
        ("udpTimeout", &v.udp_timeout),
        ("genericTimeout", &v.generic_timeout),
        ("icmpTimeout", &v.icmp_timeout),
    ] {
        if let Some(t) = t
            && t != "Auto"
            && parse_go_duration(t).is_err()
        {
            errs.push(
                format!("{path}.{name}"),
                format!("{t:?} must be a duration (e.g. 30s) or Auto"),
            );
        }
    }
}

fn check_route_table_range(path: &str, r: &RouteTableRange, errs: &mut Errors) {
    if !(r.min >= 1 && r.max >= r.min && r.max <= 250) {
        errs.push(path, "must be a range of route table indices within 1..250");
    }
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_route_table_ranges(path: &str, v: &Vec<RouteTableRange>, errs: &mut Errors) {
    let mut total: i64 = 0;
    for (i, r) in v.iter().enumerate() {
        if r.min < 1 {
            errs.push(format!("{path}[{i}].min"), "min must be >= 1");
        }
        if r.min > r.max {
            errs.push(format!("{path}[{i}]"), "min must not be greater than max");
        }
        if r.max > 0xffff_ffff {
            errs.push(
                format!("{path}[{i}].max"),
                "max index too high (at most 4294967295)",
            );
        }
        total += (r.max - r.min + 1).max(0);
    }
    if total > 0xffff {
        errs.push(path, "targets too many tables (at most 65535)");
    }
}

#[allow(clippy::ptr_arg)] // signature fixed by the field table: the field type is the argument
fn check_log_action_rate_limit(path: &str, v: &String, errs: &mut Errors) {
    let ok = v.split_once('/').is_some_and(|(n, unit)| {
        (1..=4).contains(&n.len())
            && n.bytes().all(|b| b.is_ascii_digit())
            && !n.starts_with('0')
            && matches!(unit, "second" | "minute" | "hour" | "day")
    });
    if !ok {
        errs.push(
            path,
            format!("{v:?} must be N/unit with N 1-9999 and unit second, minute, hour or day"),
        );
    }
}

/// A light syntax check of an RE2 expression: balanced groups and classes, no dangling escape,
/// no repetition operator without an operand.
fn plausible_regex(re: &str) -> Result<(), String> {
    let mut depth = 0i32;
    let mut chars = re.chars().peekable();
    let mut prev_operand = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if chars.next().is_none() {
                    return Err("trailing backslash".into());
                }
                prev_operand = true;
            }
            '[' => {
                let mut closed = false;
                let mut first = true;
                while let Some(d) = chars.next() {
                    match d {
                        '\\' => {
                            chars.next();
                        }
                        ']' if !first => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                    first = d == '^' && first;
                }
                if !closed {
                    return Err("missing closing ]".into());
                }
                prev_operand = true;
            }
            '(' => {
                depth += 1;
                prev_operand = false;
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unexpected )".into());
                }
                prev_operand = true;
            }
            '|' => prev_operand = false,
            '*' | '+' | '?' => {
                if !prev_operand {
                    return Err(format!("missing argument to repetition operator {c}"));
                }
                if chars.peek() == Some(&'?') {
                    chars.next();
                }
            }
            _ => prev_operand = true,
        }
    }
    if depth != 0 {
        return Err("missing closing )".into());
    }
    Ok(())
}

impl Spec for FelixConfigurationSpec {
    const KIND: &'static str = "FelixConfiguration";
    const PLURAL: &'static str = "felixconfigurations";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["felixconfiguration", "felixconfig", "felixconfigs"];

    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        validate_resource_name("metadata.name", &meta.name, errs);
    }

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        let set = |f: &mut Option<String>, v: &str| {
            if f.is_none() {
                *f = Some(v.to_string());
            }
        };
        set(&mut spec.nftables_mode, "Auto");
        set(&mut spec.floating_ips, "Disabled");
        set(&mut spec.bpf_connect_time_load_balancing, "TCP");
        set(&mut spec.bpf_host_networked_nat_without_ctlb, "Enabled");
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        spec.check_fields(errs);
        if spec.route_table_range.is_some() && spec.route_table_ranges.is_some() {
            errs.push(
                "spec.routeTableRange",
                "routeTableRange and routeTableRanges cannot both be set",
            );
        }
        for (path, v, fam) in [
            ("spec.natOutgoingAddress", &spec.nat_outgoing_address, 4u8),
            (
                "spec.deviceRouteSourceAddress",
                &spec.device_route_source_address,
                4,
            ),
            (
                "spec.deviceRouteSourceAddressIPv6",
                &spec.device_route_source_address_ipv6,
                6,
            ),
        ] {
            if let Some(v) = v
                && !v.is_empty()
                && !Ip(fam).ok(v)
            {
                let field = path.trim_start_matches("spec.");
                errs.push(
                    path,
                    format!("{field} must be a valid IPv{fam} address (got {v:?})"),
                );
            }
        }
        if spec.node_selector.is_some()
            && (meta.name == "default" || meta.name.starts_with("node."))
        {
            errs.push(
                "spec.nodeSelector",
                "nodeSelector must not be set on the 'default' or per-node ('node.*') FelixConfiguration",
            );
        }
    }
}

impl Ip {
    fn ok(&self, v: &str) -> bool {
        let mut e = Errors::default();
        validate_ip("", v, self.0, &mut e);
        e.is_empty()
    }
}
