//! PLACEHOLDER: incremental index of selectors against label sets. To be written.
