//! Felix's nftables dataplane: renders the calculation graph's desired state into one
//! `table inet calico` and applies it in minimal atomic `nft -f` transactions.
//!
//! - [`DesiredState`] consumes `felix_calc::msg::ToDataplane` messages.
//! - [`render()`] turns it into a [`Ruleset`] (pure); [`Ruleset::full_script`] is the atomic
//!   replacement, [`Ruleset::diff_script`] the minimal transaction between two renderings.
//! - [`NftDataplane`] applies transactions through the [`calico_linux::nft::Nft`] trait and
//!   repairs drift on [`NftDataplane::resync`].

pub mod dataplane;
pub mod names;
pub mod render;
pub mod rules;
pub mod ruleset;
pub mod state;

pub use dataplane::{ApplyKind, DataplaneError, NftDataplane, TableSummary};
pub use render::{Config, EndpointToHostAction, ProtoPort, RenderError, render};
pub use ruleset::{ChainDef, MapDef, Ruleset, SetDef, rule_tag, tagged_rule};
pub use state::{DesiredState, IpSet, PoolNat, StateError};
