//! The CNI protocol (spec versions 0.1.0 to 1.1.0), independent of what the plugin does.

pub mod env;
pub mod error;
pub mod netconf;
pub mod result;
pub mod version;

pub use env::{CniArgs, Command, Request};
pub use error::{CniError, ErrorCode};
pub use netconf::NetConf;
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::{SUPPORTED_VERSIONS, SpecVersion};
