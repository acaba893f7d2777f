//! PLACEHOLDER: to be written.
