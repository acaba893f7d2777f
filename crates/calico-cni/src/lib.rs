//! The CNI plugins `calico` and `calico-ipam`.
//!
//! [`spec`] is the CNI protocol itself (pure): request environment, network configuration,
//! results in the shape of every supported spec version, and error results.

pub mod naming;
pub mod plugin;
pub mod spec;
