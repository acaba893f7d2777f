//! The datastore: one revisioned key/value trait ([`kv::KvStore`]) with two backends —
//! [`sqlite`] (embedded, the single-host default, safe for several processes) and [`etcd`]
//! (etcd v3, for clusters) — plus the typed resource client ([`client::Client`]) and the shared
//! connection configuration ([`config::DatastoreConfig`]) every binary reads the same way.

pub mod client;
pub mod config;
pub mod etcd;
pub mod kv;
pub mod sqlite;

pub use kv::{
    KeyValue, KvError, KvStore, LeaseId, ListResult, Revision, TxnOp, WatchEvent, WatchStream,
};
