//! calico-node: the per-node agent that prepares the datastore for this node (name, address,
//! Node resource, default pool, cluster defaults, VXLAN tunnel address) and then supervises
//! Felix and BIRD (upstream `node/pkg/lifecycle/startup` plus runit and confd).
//!
//! Module map: [`config`] (environment, pure autodetection), [`startup`] (datastore writes),
//! [`bird`] (config rendering and reload), [`supervise`] (child processes), [`run`] (the
//! whole agent), [`health`] (`-bird-ready`, `-felix-ready`, `-felix-live`).

pub mod bird;
pub mod config;
pub mod health;
pub mod run;
pub mod startup;
pub mod supervise;
