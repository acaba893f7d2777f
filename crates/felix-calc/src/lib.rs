//! Felix's calculation graph: datastore updates in, dataplane changes out.
//!
//! Pure and synchronous (no I/O, no async). Feed [`Update`]s to a [`CalcGraph`] and call
//! [`CalcGraph::flush`] to get the coalesced, dependency-ordered [`ToDataplane`] messages.

pub mod backend;
mod convert;
mod graph;
mod index;
mod ipsets;
pub mod msg;
mod rules;

pub use convert::{
    CalcError, LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, ResourceId, Update,
};
pub use graph::CalcGraph;
pub use msg::ToDataplane;
