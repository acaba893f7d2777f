//! The resource envelope (`apiVersion`, `kind`, `metadata`, `spec`, `status`), the [`Spec`] trait
//! every kind implements, and [`AnyResource`], the sum of all kinds.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Errors, FieldError, ModelError, ValidationError};
use crate::meta::ObjectMeta;
use crate::resources::*;

/// The API group/version of every Calico resource.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// What every kind's `spec` type provides: identity of the kind, defaulting and validation as
/// upstream does them.
pub trait Spec:
    Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// `kind` as written in manifests, e.g. `GlobalNetworkPolicy`.
    const KIND: &'static str;
    /// Lower-case plural used in datastore keys and by calicoctl, e.g. `globalnetworkpolicies`.
    const PLURAL: &'static str;
    /// Whether the kind lives in a namespace.
    const NAMESPACED: bool;
    /// Other names calicoctl accepts for the kind (singular lower-case, short names).
    const ALIASES: &'static [&'static str] = &[];

    /// Upstream's defaulting (what the API server or client library fills in on create/update).
    fn apply_defaults(_meta: &mut ObjectMeta, _spec: &mut Self) {}

    /// Validation of `metadata.name` for this kind. Default: upstream's resource name rule
    /// (dot-separated lower-case alphanumerics and `-`, at most 253 characters in all).
    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        crate::resources::common::validate_resource_name("metadata.name", &meta.name, errs);
    }

    /// Validation of the spec (and metadata where the kind constrains it). Every problem is pushed
    /// with its full path, starting at `spec` or `metadata`.
    fn validate(_meta: &ObjectMeta, _spec: &Self, _errs: &mut Errors) {}
}

/// One typed resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec:` with no value (YAML null) is an empty spec, as upstream decodes it.
    #[serde(
        default,
        deserialize_with = "crate::resources::common::null_as_default",
        bound(deserialize = "S: Deserialize<'de> + Default")
    )]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S: Spec> Default for Resource<S> {
    fn default() -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: S::KIND.to_string(),
            metadata: ObjectMeta::default(),
            spec: S::default(),
            status: None,
        }
    }
}

impl<S: Spec> Resource<S> {
    /// A resource of this kind with the given name (and namespace, for namespaced kinds).
    pub fn new(namespace: &str, name: &str, spec: S) -> Self {
        let mut r = Self {
            spec,
            ..Self::default()
        };
        r.metadata.name = name.to_string();
        if S::NAMESPACED {
            r.metadata.namespace = namespace.to_string();
        }
        r
    }

    pub fn apply_defaults(&mut self) {
        self.api_version = API_VERSION.to_string();
        self.kind = S::KIND.to_string();
        if S::NAMESPACED && self.metadata.namespace.is_empty() {
            self.metadata.namespace = "default".to_string();
        }
        S::apply_defaults(&mut self.metadata, &mut self.spec);
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut errs = Errors::default();
        if self.metadata.name.is_empty() {
            errs.push("metadata.name", "name is required");
        } else {
            S::validate_name(&self.metadata, &mut errs);
        }
        if S::NAMESPACED {
            if !self.metadata.namespace.is_empty() {
                crate::resources::common::validate_dns1123_label(
                    "metadata.namespace",
                    &self.metadata.namespace,
                    &mut errs,
                );
            }
        } else if !self.metadata.namespace.is_empty() {
            errs.push(
                "metadata.namespace",
                format!("{} is not namespaced; namespace must be empty", S::KIND),
            );
        }
        S::validate(&self.metadata, &self.spec, &mut errs);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind: S::KIND.to_string(),
                name: self.metadata.name.clone(),
                errors: errs.0,
            })
        }
    }

    /// Datastore key (upstream etcd v3 layout).
    pub fn key(&self) -> String {
        crate::keys::resource_key(
            S::PLURAL,
            S::NAMESPACED,
            &self.metadata.namespace,
            &self.metadata.name,
        )
    }
}

/// Static facts about one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub aliases: &'static [&'static str],
}

impl KindInfo {
    /// Looks a kind up by any name calicoctl accepts: the kind (any case), its plural, or an
    /// alias.
    pub fn lookup(name: &str) -> Option<&'static KindInfo> {
        let lower = name.to_ascii_lowercase();
        KINDS.iter().find(|k| {
            k.kind.eq_ignore_ascii_case(&lower)
                || k.plural == lower
                || k.aliases.iter().any(|a| *a == lower)
        })
    }
}

macro_rules! kinds {
    ($($variant:ident => $spec:ty),* $(,)?) => {
        /// Any Calico resource.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum AnyResource {
            $($variant(Resource<$spec>),)*
        }

        /// Every kind this model knows, in a stable order.
        pub static KINDS: &[KindInfo] = &[
            $(KindInfo {
                kind: <$spec as Spec>::KIND,
                plural: <$spec as Spec>::PLURAL,
                namespaced: <$spec as Spec>::NAMESPACED,
                aliases: <$spec as Spec>::ALIASES,
            },)*
        ];

        $(
            impl From<Resource<$spec>> for AnyResource {
                fn from(r: Resource<$spec>) -> Self {
                    AnyResource::$variant(r)
                }
            }
            impl TryFrom<AnyResource> for Resource<$spec> {
                type Error = AnyResource;
                fn try_from(r: AnyResource) -> Result<Self, AnyResource> {
                    match r {
                        AnyResource::$variant(x) => Ok(x),
                        #[allow(unreachable_patterns)]
                        other => Err(other),
                    }
                }
            }
        )*

        impl AnyResource {
            /// Strictly decodes one resource from a JSON value (as produced from YAML by
            /// [`crate::load`]). Unknown fields and wrong types are errors naming the field path.
            pub fn from_value(value: serde_json::Value) -> Result<Self, ModelError> {
                let (api_version, kind, name) = crate::load::type_meta(&value)?;
                if api_version != API_VERSION {
                    return Err(ModelError::ApiVersion { api_version, kind });
                }
                match kind.as_str() {
                    $(<$spec as Spec>::KIND => {
                        Ok(AnyResource::$variant(crate::load::decode::<Resource<$spec>>(
                            value, &kind, &name,
                        )?))
                    })*
                    _ => Err(ModelError::UnknownKind(kind)),
                }
            }

            /// Encodes to a JSON value with `apiVersion` and `kind` set.
            pub fn to_value(&self) -> serde_json::Value {
                let v = match self {
                    $(AnyResource::$variant(r) => serde_json::to_value(r),)*
                };
                // Serializing plain data structs into a Value cannot fail.
                v.unwrap_or(serde_json::Value::Null)
            }

            pub fn info(&self) -> &'static KindInfo {
                let kind = self.kind();
                KINDS.iter().find(|k| k.kind == kind).unwrap_or(&KINDS[0])
            }

            pub fn kind(&self) -> &'static str {
                match self {
                    $(AnyResource::$variant(_) => <$spec as Spec>::KIND,)*
                }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(AnyResource::$variant(r) => &r.metadata,)*
                }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(AnyResource::$variant(r) => &mut r.metadata,)*
                }
            }

            pub fn status(&self) -> Option<&serde_json::Value> {
                match self {
                    $(AnyResource::$variant(r) => r.status.as_ref(),)*
                }
            }

            pub fn set_status(&mut self, status: Option<serde_json::Value>) {
                match self {
                    $(AnyResource::$variant(r) => r.status = status,)*
                }
            }

            /// Upstream defaulting for the kind.
            pub fn apply_defaults(&mut self) {
                match self {
                    $(AnyResource::$variant(r) => r.apply_defaults(),)*
                }
            }

            /// Validation with errors naming the resource and every offending field path.
            pub fn validate(&self) -> Result<(), ValidationError> {
                match self {
                    $(AnyResource::$variant(r) => r.validate(),)*
                }
            }

            /// Whether the specs (not metadata or status) are equal.
            pub fn spec_eq(&self, other: &AnyResource) -> bool {
                match (self, other) {
                    $((AnyResource::$variant(a), AnyResource::$variant(b)) => a.spec == b.spec,)*
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }

            /// Datastore key (upstream etcd v3 layout).
            pub fn key(&self) -> String {
                match self {
                    $(AnyResource::$variant(r) => r.key(),)*
                }
            }
        }
    };
}

kinds! {
    NetworkPolicy => NetworkPolicySpec,
    GlobalNetworkPolicy => GlobalNetworkPolicySpec,
    StagedNetworkPolicy => StagedNetworkPolicySpec,
    StagedGlobalNetworkPolicy => StagedGlobalNetworkPolicySpec,
    Tier => TierSpec,
    Profile => ProfileSpec,
    WorkloadEndpoint => WorkloadEndpointSpec,
    HostEndpoint => HostEndpointSpec,
    NetworkSet => NetworkSetSpec,
    GlobalNetworkSet => GlobalNetworkSetSpec,
    IPPool => IPPoolSpec,
    IPReservation => IPReservationSpec,
    IPAMConfiguration => IPAMConfigurationSpec,
    BGPConfiguration => BGPConfigurationSpec,
    BGPPeer => BGPPeerSpec,
    BGPFilter => BGPFilterSpec,
    FelixConfiguration => FelixConfigurationSpec,
    KubeControllersConfiguration => KubeControllersConfigurationSpec,
    Node => NodeSpec,
    ClusterInformation => ClusterInformationSpec,
}

impl AnyResource {
    /// `kind/namespace/name` or `kind/name`, for messages.
    pub fn id(&self) -> String {
        let m = self.metadata();
        if m.namespace.is_empty() {
            format!("{}({})", self.kind(), m.name)
        } else {
            format!("{}({}/{})", self.kind(), m.namespace, m.name)
        }
    }
}

/// Convenience for validators: a field error with a path.
pub fn field_error(path: impl Into<String>, msg: impl Into<String>) -> FieldError {
    FieldError::new(path, msg)
}
