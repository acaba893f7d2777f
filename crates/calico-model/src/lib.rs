//! The `projectcalico.org/v3` resource model: typed resources, defaulting, validation, the
//! selector language and the label index. Pure: no I/O, no async runtime.
//!
//! Entry points: [`AnyResource`] (any kind, parsed from YAML/JSON with strict field checking),
//! [`Resource`] (one typed kind), [`selector::Selector`], [`labelindex::LabelIndex`].

pub mod error;
pub mod keys;
pub mod labelindex;
pub mod load;
pub mod meta;
pub mod resource;
pub mod resources;
pub mod selector;

pub use error::{FieldError, ModelError, ValidationError};
pub use meta::ObjectMeta;
pub use resource::{API_VERSION, AnyResource, KINDS, KindInfo, Resource, Spec};
