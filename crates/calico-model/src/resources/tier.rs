//! `Tier`: an ordered group of policies with a default action.

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::resource::Spec;
use crate::resources::common::{is_dns1123_label, validate_meta_labels_annotations};
use crate::resources::policy::Action;

/// Name of the tier every policy without a tier belongs to.
pub const DEFAULT_TIER_NAME: &str = "default";
/// Order of the `default` tier.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;
/// Name of the tier holding Kubernetes admin cluster network policies.
pub const KUBE_ADMIN_TIER_NAME: &str = "kube-admin";
/// Order of the `kube-admin` tier.
pub const KUBE_ADMIN_TIER_ORDER: f64 = 1_000.0;
/// Name of the tier holding Kubernetes baseline cluster network policies.
pub const KUBE_BASELINE_TIER_NAME: &str = "kube-baseline";
/// Order of the `kube-baseline` tier.
pub const KUBE_BASELINE_TIER_ORDER: f64 = 10_000_000.0;

/// `Tier.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    /// Tiers apply in ascending order; unset sorts last.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::resources::policy::serialize_order"
    )]
    pub order: Option<f64>,
    /// What happens to traffic a policy in this tier selected but no rule ended: `Deny`
    /// (default) or `Pass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

impl TierSpec {
    /// The default action, `Deny` when unset.
    pub fn default_action_or_deny(&self) -> Action {
        self.default_action.unwrap_or(Action::Deny)
    }

    /// The spec upstream creates for a well-known tier, if `name` is one.
    pub fn well_known(name: &str) -> Option<TierSpec> {
        let (order, action) = match name {
            DEFAULT_TIER_NAME => (DEFAULT_TIER_ORDER, Action::Deny),
            KUBE_ADMIN_TIER_NAME => (KUBE_ADMIN_TIER_ORDER, Action::Pass),
            KUBE_BASELINE_TIER_NAME => (KUBE_BASELINE_TIER_ORDER, Action::Pass),
            _ => return None,
        };
        Some(TierSpec {
            order: Some(order),
            default_action: Some(action),
        })
    }
}

impl Spec for TierSpec {
    const KIND: &'static str = "Tier";
    const PLURAL: &'static str = "tiers";
    const NAMESPACED: bool = false;
    const ALIASES: &'static [&'static str] = &["tier"];

    fn apply_defaults(_meta: &mut ObjectMeta, spec: &mut Self) {
        if spec.default_action.is_none() {
            spec.default_action = Some(Action::Deny);
        }
    }

    /// Tier names are single DNS-1123 labels (no dots, at most 63 characters): they are used
    /// as policy-name prefixes and label values.
    fn validate_name(meta: &ObjectMeta, errs: &mut Errors) {
        if meta.name.len() > 63 {
            errs.push(
                "metadata.name",
                format!("tier name is too long by {} bytes", meta.name.len() - 63),
            );
        } else if !is_dns1123_label(&meta.name) {
            errs.push(
                "metadata.name",
                format!(
                    "{:?} is not a valid tier name: must be lower-case alphanumerics or '-', \
                     starting and ending alphanumeric (no '.')",
                    meta.name
                ),
            );
        }
    }

    fn validate(meta: &ObjectMeta, spec: &Self, errs: &mut Errors) {
        validate_meta_labels_annotations(meta, errs);
        let action = spec.default_action_or_deny();
        if !matches!(action, Action::Deny | Action::Pass) {
            errs.push(
                "spec.defaultAction",
                format!("{action} is not one of Deny, Pass"),
            );
        }
        if let Some(o) = spec.order
            && !o.is_finite()
        {
            errs.push("spec.order", "order must be a finite number");
        }
        if let Some(wk) = TierSpec::well_known(&meta.name) {
            let (want_order, want_action) =
                (wk.order.unwrap_or_default(), wk.default_action_or_deny());
            if spec.order != Some(want_order) {
                errs.push(
                    "spec.order",
                    format!("the {:?} tier must have order {want_order}", meta.name),
                );
            }
            if action != want_action {
                errs.push(
                    "spec.defaultAction",
                    format!(
                        "the {:?} tier must have default action '{want_action}'",
                        meta.name
                    ),
                );
            }
        }
    }
}
