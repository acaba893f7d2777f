//! `calico-lab`: whole Calico clusters inside network namespaces on one machine, and the
//! scenario conformance runner (`/work/shared/scenarios/FORMAT.md`).
//!
//! A lab is a *fabric* namespace holding a bridge, one namespace per node joined to the bridge
//! by a veth (node addresses on a lab-private subnet), one `calico-node` (or, until that exists,
//! `calico-felix`) per node namespace, and pods: namespaces networked by the real `calico` CNI
//! binary, invoked exactly as a container runtime would. Everything a lab creates is named with
//! its per-lab prefix ([`names`]), its processes carry an environment tag, and its state lives
//! in `/run/calico-lab/<lab>/` so separate CLI invocations work and [`sweep`] can remove what a
//! killed lab left behind. Nothing here touches the root namespace's network.

pub mod bench;
pub mod bins;
pub mod error;
pub mod fabric;
pub mod lab;
pub mod names;
pub mod probe;
pub mod procs;
pub mod scenario;
pub mod state;
pub mod sweep;

pub use error::LabError;
pub use lab::{DatastoreKind, Lab, LabSpec, Routing};
