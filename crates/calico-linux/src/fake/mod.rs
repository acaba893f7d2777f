//! In-memory fakes of [`crate::Netlink`], [`crate::Sysctl`] and [`crate::Nft`] for unit tests of
//! the CNI plugin and Felix. Each keeps state the way the kernel would (within reason), records
//! every call, and can be told to fail the next call of an operation.

mod netlink;
mod nft;
mod sysctl;

pub use netlink::{FakeNetlink, FakeNetlinkState};
pub use nft::FakeNft;
pub use sysctl::FakeSysctl;
