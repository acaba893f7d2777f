//! The Felix agent (upstream `felix/`): a datastore syncer, the calculation graph
//! ([`felix_calc`]), the nftables dataplane ([`felix_nft`]), an endpoint manager (workload
//! routes, ARP, sysctls, endpoint status), state reporting, health and Prometheus metrics.
//!
//! The binary `calico-felix` runs [`agent::run`] in the network namespace it was started in.
//! See `docs/dev/CONTRACTS.md` §1 for its environment and HTTP interface.

pub mod agent;
pub mod config;
pub mod endpoints;
pub mod ifacemon;
pub mod report;
pub mod status;
pub mod syncer;
pub mod testsupport;
