//! One test per translation feature: Kubernetes YAML in, the Calico resource expected out
//! (golden YAML compared as data), and every translated policy passes calico-model validation.

use calico_k8s::convert::{self, SelectorKind, k8s_selector_to_calico, simplify_ports};
use calico_k8s::types::LabelSelector;
use calico_k8s::{K8sError, K8sResource};
use calico_model::resources::policy::Port;
use calico_model::resources::{NetworkPolicySpec, WorkloadEndpointSpec};
use calico_model::{Resource, Spec};

/// YAML 1.2 booleans only, so `ns: y` is the string "y" (as the corpus means it).
fn yaml(text: &str) -> serde_json::Value {
    let opts = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, opts).expect("test yaml parses")
}

fn load(text: &str) -> Result<K8sResource, K8sError> {
    let v = yaml(text);
    K8sResource::from_value(v)
}

fn assert_golden<T: serde::Serialize>(actual: &T, expected_yaml: &str) {
    let actual = serde_json::to_value(actual).expect("serializes");
    let expected = yaml(expected_yaml);
    assert_eq!(
        actual,
        expected,
        "\nactual:\n{}\nexpected:\n{}",
        serde_json::to_string_pretty(&actual).unwrap_or_default(),
        serde_json::to_string_pretty(&expected).unwrap_or_default()
    );
}

fn assert_valid<S: Spec>(r: &Resource<S>) {
    let mut r = r.clone();
    r.apply_defaults();
    if let Err(e) = r.validate() {
        panic!("translated resource fails calico validation: {e}");
    }
}

fn policy(yaml: &str) -> Resource<NetworkPolicySpec> {
    let K8sResource::NetworkPolicy(np) = load(yaml).expect("loads") else {
        panic!("not a NetworkPolicy")
    };
    let p = convert::k8s_network_policy_to_calico(&np).expect("translates");
    assert_valid(&p);
    p
}

fn policy_err(yaml: &str) -> String {
    match load(yaml) {
        Err(e) => e.to_string(),
        Ok(K8sResource::NetworkPolicy(np)) => convert::k8s_network_policy_to_calico(&np)
            .expect_err("must be rejected")
            .to_string(),
        Ok(other) => panic!("unexpected kind {other:?}"),
    }
}

const NP_HEAD: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
";

fn np(spec: &str) -> String {
    format!("{NP_HEAD}spec:\n{spec}")
}

#[test]
fn namespace_becomes_kns_profile_with_pcns_labels_and_allow_rules() {
    let K8sResource::Namespace(ns) = load(
        "apiVersion: v1
kind: Namespace
metadata:
  name: prod
  uid: 6f2a2b5e-0000-4000-8000-000000000001
  resourceVersion: '12'
  labels: {team: a, kubernetes.io/metadata.name: prod}
  managedFields: [{manager: kubectl}]
spec: {finalizers: [kubernetes]}
status: {phase: Active}",
    )
    .expect("loads") else {
        panic!("kind")
    };
    let p = convert::namespace_to_profile(&ns).expect("translates");
    assert_valid(&p);
    assert_golden(
        &p,
        "apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: kns.prod
  uid: 6f2a2b5e-0000-4000-8000-000000000001
spec:
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
  labelsToApply:
    pcns.team: a
    pcns.kubernetes.io/metadata.name: prod
    pcns.projectcalico.org/name: prod",
    );
}

#[test]
fn service_account_becomes_ksa_profile_with_pcsa_labels_and_no_rules() {
    let K8sResource::ServiceAccount(sa) = load(
        "apiVersion: v1
kind: ServiceAccount
metadata: {name: builder, namespace: ci, labels: {role: build}}
automountServiceAccountToken: false",
    )
    .expect("loads") else {
        panic!("kind")
    };
    let p = convert::service_account_to_profile(&sa).expect("translates");
    assert_valid(&p);
    assert_golden(
        &p,
        "apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: ksa.ci.builder}
spec:
  labelsToApply:
    pcsa.role: build
    pcsa.projectcalico.org/name: builder",
    );
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}, uid: u1, generateName: web-}
spec:
  nodeName: node-a
  serviceAccountName: frontend
  dnsPolicy: ClusterFirst
  volumes: [{name: v, emptyDir: {}}]
  containers:
  - name: c
    image: nginx
    ports:
    - {name: http, containerPort: 80}
    - {name: dns, containerPort: 53, protocol: UDP}
    - {containerPort: 8080}
    - {containerPort: 9000, hostPort: 19000, protocol: SCTP, hostIP: 10.0.0.1}
    - {name: weird, containerPort: 7000, protocol: QUIC}
  initContainers:
  - name: sidecar
    restartPolicy: Always
    ports: [{name: metrics, containerPort: 9090}]
status: {phase: Running, podIP: 192.168.1.5, podIPs: [{ip: 192.168.1.5}, {ip: 'fd00::5'}], conditions: []}
";

fn pod() -> calico_k8s::types::Pod {
    match load(POD).expect("loads") {
        K8sResource::Pod(p) => p,
        other => panic!("kind {other:?}"),
    }
}

#[test]
fn pod_fields_labels_profiles_and_named_ports() {
    let f = convert::pod_endpoint_fields(&pod()).expect("translates");
    assert_eq!(
        f.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>(),
        [
            "app=web",
            "projectcalico.org/namespace=shop",
            "projectcalico.org/orchestrator=k8s",
            "projectcalico.org/serviceaccount=frontend"
        ]
    );
    assert_eq!(f.profiles, ["kns.shop", "ksa.shop.frontend"]);
    assert_eq!(f.ip_networks, ["192.168.1.5/32", "fd00::5/128"]);
    assert_golden(
        &f.ports,
        "- {name: http, protocol: tcp, port: 80}
- {name: dns, protocol: udp, port: 53}
- {protocol: sctp, port: 9000, hostPort: 19000, hostIP: 10.0.0.1}
- {name: metrics, protocol: tcp, port: 9090}",
    );
}

fn cni_wep() -> Resource<WorkloadEndpointSpec> {
    let v: serde_json::Value = serde_saphyr::from_str(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--a-k8s-web--1-eth0
  namespace: shop
  labels: {projectcalico.org/namespace: shop, projectcalico.org/orchestrator: k8s}
spec:
  orchestrator: k8s
  node: node-a
  containerID: abc123
  pod: web-1
  endpoint: eth0
  ipNetworks: [192.168.1.5/32]
  profiles: [kns.shop]
  interfaceName: cali0123456789a
  mac: 'ee:ee:ee:ee:ee:ee'",
    )
    .expect("yaml");
    serde_json::from_value(v).expect("wep decodes")
}

const MERGED: &str = "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node--a-k8s-web--1-eth0
  namespace: shop
  labels:
    app: web
    projectcalico.org/namespace: shop
    projectcalico.org/orchestrator: k8s
    projectcalico.org/serviceaccount: frontend
spec:
  orchestrator: k8s
  node: node-a
  containerID: abc123
  pod: web-1
  endpoint: eth0
  serviceAccountName: frontend
  ipNetworks: [192.168.1.5/32]
  profiles: [kns.shop, ksa.shop.frontend]
  interfaceName: cali0123456789a
  mac: 'ee:ee:ee:ee:ee:ee'
  ports:
  - {name: http, protocol: tcp, port: 80}
  - {name: dns, protocol: udp, port: 53}
  - {protocol: sctp, port: 9000, hostPort: 19000, hostIP: 10.0.0.1}
  - {name: metrics, protocol: tcp, port: 9090}";

#[test]
fn pod_merges_into_cni_written_endpoint_keeping_cni_fields() {
    let merged = convert::merge_pod_into_workload_endpoint(&pod(), Some(&cni_wep()), "cali")
        .expect("merges");
    assert_valid(&merged);
    assert_golden(&merged, MERGED);
    // Applying the pod again changes nothing.
    let again =
        convert::merge_pod_into_workload_endpoint(&pod(), Some(&merged), "cali").expect("merges");
    assert_eq!(again, merged);
}

#[test]
fn pod_label_removal_reaches_the_endpoint() {
    let merged = convert::merge_pod_into_workload_endpoint(&pod(), Some(&cni_wep()), "cali")
        .expect("merges");
    let mut p = pod();
    p.metadata.labels.clear();
    p.metadata.labels.insert("tier".into(), "2".into());
    let relabelled =
        convert::merge_pod_into_workload_endpoint(&p, Some(&merged), "cali").expect("merges");
    assert!(!relabelled.metadata.labels.contains_key("app"));
    assert_eq!(
        relabelled.metadata.labels.get("tier").map(String::as_str),
        Some("2")
    );
    assert_eq!(relabelled.spec.ip_networks, merged.spec.ip_networks);
}

#[test]
fn pod_before_cni_builds_an_endpoint_from_the_pod() {
    let w = convert::merge_pod_into_workload_endpoint(&pod(), None, "cali").expect("builds");
    assert_valid(&w);
    assert_eq!(w.metadata.name, "node--a-k8s-web--1-eth0");
    assert_eq!(w.metadata.namespace, "shop");
    assert_eq!(w.spec.ip_networks, ["192.168.1.5/32", "fd00::5/128"]);
    // Upstream's veth name: SHA-1 of "<namespace>.<pod>" (vector shared with the CNI plugin).
    assert_eq!(
        convert::veth_name("cali", "namespace", "podname"),
        "cali82111e10a96"
    );
    assert_eq!(
        w.spec.interface_name,
        convert::veth_name("cali", "shop", "web-1")
    );
    assert_eq!(w.spec.profiles, ["kns.shop", "ksa.shop.frontend"]);
}

#[test]
fn pod_for_someone_elses_endpoint_is_rejected() {
    let mut other = cni_wep();
    other.spec.pod = "web-2".into();
    let e = convert::merge_pod_into_workload_endpoint(&pod(), Some(&other), "cali")
        .expect_err("mismatch");
    assert!(e.to_string().contains("belongs to pod"), "{e}");
}

#[test]
fn host_networked_and_unscheduled_pods_have_no_endpoint() {
    let mut p = pod();
    p.spec.host_network = true;
    let e = convert::pod_endpoint_fields(&p).expect_err("host network");
    assert!(e.to_string().contains("spec.hostNetwork"), "{e}");
    let mut p = pod();
    p.spec.node_name.clear();
    let e = convert::merge_pod_into_workload_endpoint(&p, None, "cali").expect_err("unscheduled");
    assert!(e.to_string().contains("spec.nodeName"), "{e}");
}

#[test]
fn default_deny_ingress() {
    let p = policy(&np("  podSelector: {}\n  policyTypes: [Ingress]\n"));
    assert_golden(
        &p,
        "apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: knp.default.p, namespace: x}
spec:
  tier: default
  order: 1000
  selector: projectcalico.org/orchestrator == 'k8s'
  types: [Ingress]",
    );
}

#[test]
fn default_deny_all_has_both_types() {
    let p = policy(&np("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n"));
    assert_golden(&p.spec.types, "[Ingress, Egress]");
    assert!(p.spec.ingress.is_empty() && p.spec.egress.is_empty());
}

#[test]
fn pod_selector_peer_stays_in_namespace() {
    let p = policy(&np("  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b, app: x}}
"));
    assert_golden(
        &p.spec,
        "tier: default
order: 1000
selector: projectcalico.org/orchestrator == 'k8s' && pod == 'a'
types: [Ingress]
ingress:
- action: Allow
  source:
    selector: projectcalico.org/orchestrator == 'k8s' && app == 'x' && pod == 'b'",
    );
}

#[test]
fn namespace_selectors_empty_labelled_and_combined() {
    let p = policy(&np("  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {}
    - namespaceSelector: {matchLabels: {ns: y}}
    - namespaceSelector: {matchLabels: {ns: z}}
      podSelector: {matchLabels: {pod: c}}
"));
    assert_golden(
        &p.spec.ingress,
        "- action: Allow
  source:
    selector: projectcalico.org/orchestrator == 'k8s'
    namespaceSelector: all()
- action: Allow
  source:
    selector: projectcalico.org/orchestrator == 'k8s'
    namespaceSelector: ns == 'y'
- action: Allow
  source:
    selector: projectcalico.org/orchestrator == 'k8s' && pod == 'c'
    namespaceSelector: ns == 'z'",
    );
}

#[test]
fn match_expressions_all_operators() {
    let sel: LabelSelector = serde_json::from_value(serde_json::json!({
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "stage"]},
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "team", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"}
        ]
    }))
    .expect("selector");
    let s = k8s_selector_to_calico(Some(&sel), SelectorKind::Pod);
    assert_eq!(
        s,
        "projectcalico.org/orchestrator == 'k8s' && a == '1' && b == '2' && env in { 'prod', 'stage' } \
         && tier not in { 'db' } && has(team) && ! has(legacy)"
    );
    calico_model::selector::parse(&s).expect("valid calico selector");
    assert_eq!(
        k8s_selector_to_calico(Some(&sel), SelectorKind::Namespace),
        "a == '1' && b == '2' && env in { 'prod', 'stage' } && tier not in { 'db' } && has(team) \
         && ! has(legacy)"
    );
    assert_eq!(k8s_selector_to_calico(None, SelectorKind::Namespace), "");
    assert_eq!(
        k8s_selector_to_calico(Some(&LabelSelector::default()), SelectorKind::Namespace),
        "all()"
    );
}

#[test]
fn ip_block_nets_and_except() {
    let p = policy(&np("  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.1.2.3/16, except: [10.1.5.0/24, 10.1.7.9/32]}
    - ipBlock: {cidr: 'fd00::1/64'}
"));
    assert_golden(
        &p.spec,
        "tier: default
order: 1000
selector: projectcalico.org/orchestrator == 'k8s'
types: [Egress]
egress:
- action: Allow
  destination:
    nets: [10.1.0.0/16]
    notNets: [10.1.5.0/24, 10.1.7.9/32]
- action: Allow
  destination:
    nets: ['fd00::/64']",
    );
}

#[test]
fn ports_default_tcp_named_and_end_port() {
    let p = policy(&np("  podSelector: {}
  ingress:
  - ports:
    - port: 80
    - {port: http, protocol: TCP}
    - {port: 9000, endPort: 9010, protocol: UDP}
"));
    assert_golden(
        &p.spec.ingress,
        "- action: Allow
  protocol: TCP
  destination: {ports: [80, http]}
- action: Allow
  protocol: UDP
  destination: {ports: ['9000:9010']}",
    );
}

#[test]
fn several_ports_and_peers_expand_per_protocol_then_peer() {
    let p = policy(&np("  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: a}}
    - ipBlock: {cidr: 192.0.2.0/24}
    ports:
    - {port: 81, protocol: TCP}
    - {port: 53, protocol: UDP}
    - {port: 80, protocol: TCP}
    - {protocol: SCTP}
    - {port: 82, protocol: TCP}
"));
    assert_golden(
        &p.spec.ingress,
        "- action: Allow
  protocol: SCTP
  source: {selector: projectcalico.org/orchestrator == 'k8s' && pod == 'a'}
- action: Allow
  protocol: SCTP
  source: {nets: [192.0.2.0/24]}
- action: Allow
  protocol: TCP
  source: {selector: projectcalico.org/orchestrator == 'k8s' && pod == 'a'}
  destination: {ports: ['80:82']}
- action: Allow
  protocol: TCP
  source: {nets: [192.0.2.0/24]}
  destination: {ports: ['80:82']}
- action: Allow
  protocol: UDP
  source: {selector: projectcalico.org/orchestrator == 'k8s' && pod == 'a'}
  destination: {ports: [53]}
- action: Allow
  protocol: UDP
  source: {nets: [192.0.2.0/24]}
  destination: {ports: [53]}",
    );
}

#[test]
fn protocol_without_port_wins_over_specific_ports() {
    let p = policy(&np("  podSelector: {}
  ingress:
  - ports: [{port: 80}, {protocol: TCP}, {port: 81}]
"));
    assert_golden(&p.spec.ingress, "- {action: Allow, protocol: TCP}");
}

#[test]
fn empty_rule_allows_everything() {
    let p = policy(&np(
        "  podSelector: {}\n  ingress: [{}]\n  egress: [{}]\n  policyTypes: [Ingress, Egress]\n",
    ));
    assert_golden(&p.spec.ingress, "[{action: Allow}]");
    assert_golden(&p.spec.egress, "[{action: Allow}]");
}

#[test]
fn types_from_policy_types_with_api_server_defaulting() {
    // No policyTypes: the API server defaults to Ingress, plus Egress with egress rules.
    let p = policy(&np("  podSelector: {}\n"));
    assert_golden(&p.spec.types, "[Ingress]");
    let p = policy(&np(
        "  podSelector: {}\n  egress: [{to: [{podSelector: {}}]}]\n",
    ));
    assert_golden(&p.spec.types, "[Ingress, Egress]");
    // Explicit policyTypes win; egress rules without Egress are kept but do not apply.
    let p = policy(&np(
        "  podSelector: {}\n  policyTypes: [Ingress]\n  egress: [{to: [{podSelector: {}}]}]\n",
    ));
    assert_golden(&p.spec.types, "[Ingress]");
    assert_eq!(p.spec.egress.len(), 1);
    let p = policy(&np("  podSelector: {}\n  policyTypes: [Egress]\n"));
    assert_golden(&p.spec.types, "[Egress]");
}

#[test]
fn unknown_spec_fields_are_rejected_with_their_path() {
    let e = policy_err(&np("  podSelector: {}\n  ingres: []\n"));
    assert!(e.contains("ingres"), "{e}");
    let e = policy_err(&np(
        "  podSelector: {}\n  ingress: [{from: [{podSelectr: {}}]}]\n",
    ));
    assert!(e.contains("spec.ingress[0].from[0]"), "{e}");
    let e = policy_err(&np(
        "  podSelector: {matchLabels: {a: b}, matchExpression: []}\n",
    ));
    assert!(e.contains("spec.podSelector"), "{e}");
    let e = policy_err(&np(
        "  podSelector: {matchExpressions: [{key: a, operator: Is}]}\n",
    ));
    assert!(
        e.contains("spec.podSelector.matchExpressions[0].operator"),
        "{e}"
    );
    let e = policy_err(&format!("{NP_HEAD}extra: 1\nspec: {{}}\n"));
    assert!(e.contains("extra"), "{e}");
}

#[test]
fn invalid_policies_are_rejected_naming_the_field() {
    let cases = [
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0}}]}]\n",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]\n",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        ("  ingress: [{from: [{}]}]\n", "spec.ingress[0].from[0]"),
        (
            "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
            "spec.egress[0].to[0]",
        ),
        (
            "  ingress: [{ports: [{port: 90, endPort: 80}]}]\n",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "  ingress: [{ports: [{port: http, endPort: 80}]}]\n",
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            "  ingress: [{ports: [{port: 0}]}]\n",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "  ingress: [{ports: [{port: Not_A_Name}]}]\n",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "  ingress: [{ports: [{port: 80, protocol: tcp}]}]\n",
            "spec.ingress[0].ports[0].protocol",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a, operator: In}]}\n",
            "spec.podSelector.matchExpressions[0].values",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}\n",
            "spec.podSelector.matchExpressions[0].values",
        ),
        (
            "  podSelector: {matchLabels: {a: \"it's\"}}\n",
            "spec.podSelector.matchLabels.a",
        ),
    ];
    for (spec, path) in cases {
        let e = policy_err(&np(spec));
        assert!(e.contains(path), "{spec}: expected {path} in {e}");
    }
}

#[test]
fn loader_dispatches_and_rejects_other_kinds() {
    let e = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").expect_err("kind");
    assert!(matches!(e, K8sError::Unsupported { .. }), "{e}");
    let e = load("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, portz: []}]}\n")
        .expect_err("unknown container field");
    assert!(e.to_string().contains("spec.containers[0]"), "{e}");
    let e =
        load("apiVersion: v1\nkind: Pod\nmetadata: {name: p, bogus: 1}\n").expect_err("metadata");
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn simplify_ports_as_upstream() {
    let p = |s: &str| Port::parse(s).expect("port");
    let out = simplify_ports(vec![
        p("82"),
        p("foo"),
        p("80"),
        p("9090"),
        p("81"),
        p("80"),
    ]);
    assert_eq!(out, vec![p("foo"), p("80:82"), p("9090")]);
    // Fewer than two numeric ports: unchanged.
    let same = vec![p("b"), p("80"), p("a")];
    assert_eq!(simplify_ports(same.clone()), same);
    assert_eq!(
        simplify_ports(vec![p("80:81"), p("83")]),
        vec![p("80:81"), p("83")]
    );
}

#[test]
fn yaml_documents_keep_norway_strings_and_expand_lists() {
    let docs = calico_k8s::types::parse_yaml_documents(
        "apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y, flag: on}}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: s, namespace: y}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: t, namespace: y}}
",
        "test.yaml",
    )
    .expect("parses");
    assert_eq!(docs.len(), 3);
    let K8sResource::Namespace(ns) = K8sResource::from_value(docs[0].clone()).expect("ns") else {
        panic!("kind")
    };
    assert_eq!(ns.metadata.labels.get("ns").map(String::as_str), Some("y"));
    assert_eq!(
        ns.metadata.labels.get("flag").map(String::as_str),
        Some("on")
    );
    assert!(matches!(
        K8sResource::from_value(docs[2].clone()),
        Ok(K8sResource::ServiceAccount(_))
    ));
    let e = calico_k8s::types::parse_yaml_documents("a: [", "bad.yaml").expect_err("syntax");
    assert!(e.to_string().starts_with("bad.yaml: "), "{e}");
}

#[test]
fn translate_dispatches_on_kind() {
    let ns = load("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n").expect("ns");
    assert!(matches!(
        calico_k8s::translate(&ns),
        Ok(calico_k8s::Translated::Profile(p)) if p.metadata.name == "kns.a"
    ));
    let np = load(&np("  podSelector: {}\n")).expect("np");
    assert!(matches!(
        calico_k8s::translate(&np),
        Ok(calico_k8s::Translated::NetworkPolicy(p)) if p.metadata.name == "knp.default.p"
    ));
    assert!(matches!(
        calico_k8s::translate(&load(POD).expect("pod")),
        Ok(calico_k8s::Translated::PodEndpoint(f)) if f.profiles == ["kns.shop", "ksa.shop.frontend"]
    ));
}
