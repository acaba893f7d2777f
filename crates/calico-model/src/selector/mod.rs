//! PLACEHOLDER: the Calico selector language (tokenizer, parser, evaluator, canonical form,
//! unique ID). To be written.
