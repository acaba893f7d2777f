//! Every kernel touchpoint calico-rs needs, each behind a small trait with a real implementation
//! and an in-memory fake (the youki `network/traits.rs` + `fake.rs` pattern).
//!
//! | Touchpoint | Trait | Real | Fake |
//! |---|---|---|---|
//! | network namespaces | — (plain functions, [`netns::NetNs`]) | setns on a dedicated thread | — |
//! | rtnetlink (links, addresses, routes, neighbours, FDB, VXLAN, link and address monitors) | [`Netlink`] | [`RtNetlink`] | [`fake::FakeNetlink`] |
//! | `/proc/sys/net` | [`Sysctl`] | [`ProcSysctl`] | [`fake::FakeSysctl`] |
//! | nftables | [`Nft`] | [`NftCli`] | [`fake::FakeNft`] |
//!
//! [`testlab`] builds uniquely named namespaces for lab tests and cleans them up (also after a
//! killed run, via [`testlab::sweep`]).
//!
//! The crate has no `unsafe`: namespace switching uses nix's safe `setns`, and every
//! namespace switch happens on a thread spawned for that purpose, so the caller's thread never
//! changes namespace.

pub mod fake;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod nftnl;
pub mod sysctl;
pub mod testlab;
pub mod types;

pub use netlink::{Netlink, NetlinkError, RtNetlink};
pub use netns::{NetNs, NetnsError};
pub use nft::{ElementChange, Nft, NftCli, NftError, TableFamily};
pub use sysctl::{IfaceKey, ProcSysctl, Sysctl, SysctlError};
pub use types::*;
