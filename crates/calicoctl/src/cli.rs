//! Command-line definition, following upstream calicoctl's commands and flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "calicoctl",
    about = "The calicoctl command line tool is used to manage Calico network and security policy.",
    disable_version_flag = true
)]
pub struct Cli {
    /// Set the log level (one of panic, fatal, error, warn, info, debug).
    #[arg(
        short = 'l',
        long = "log-level",
        global = true,
        default_value = "panic"
    )]
    pub log_level: String,
    /// Allow client and cluster versions mismatch.
    #[arg(long = "allow-version-mismatch", global = true)]
    pub allow_version_mismatch: bool,
    /// Path to the file containing connection configuration in YAML or JSON format
    /// [default: /etc/calico/calicoctl.cfg].
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Kubeconfig context (accepted for compatibility; unused by this datastore).
    #[arg(long = "context", global = true, hide = true)]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a resource by file, directory or stdin.
    Create(CreateArgs),
    /// Apply a resource by file, directory or stdin (create or update).
    Apply(FileArgs),
    /// Replace a resource by file, directory or stdin.
    Replace(FileArgs),
    /// Delete a resource identified by file, directory, stdin or resource type and name.
    Delete(DeleteArgs),
    /// Get a resource identified by file, directory, stdin or resource type and name.
    Get(GetArgs),
    /// Patch a pre-existing resource in place.
    Patch(PatchArgs),
    /// Add or update labels of resources.
    Label(LabelArgs),
    /// Validate resources by file, directory or stdin without connecting to a datastore.
    Validate(ValidateArgs),
    /// Display the version of this binary.
    Version(VersionArgs),
    /// IP address management: show, check, release, configure.
    #[command(subcommand)]
    Ipam(crate::ipam::IpamCommand),
    /// Calico node management: status.
    #[command(subcommand)]
    Node(crate::node::NodeCommand),
    /// Evaluate or canonicalise a selector expression.
    #[command(subcommand)]
    Selector(SelectorCommand),
    /// Benchmark helpers (not part of the upstream interface).
    #[command(hide = true, subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args, Clone)]
pub struct FileArgs {
    /// Filename to use ("-" for stdin). A directory processes its .yaml, .yml and .json files.
    #[arg(short = 'f', long = "filename", required = true)]
    pub filename: String,
    /// Process the directory given with -f recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Do not error if the files contain no data.
    #[arg(long = "skip-empty")]
    pub skip_empty: bool,
    /// Namespace of the resources (namespaced kinds only; default "default").
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub file: FileArgs,
    /// Skip over and treat as successful any attempts to create an entry that already exists.
    #[arg(long = "skip-exists")]
    pub skip_exists: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Resource type.
    pub kind: Option<String>,
    /// Resource names.
    pub names: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub filename: Option<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(long = "skip-empty")]
    pub skip_empty: bool,
    /// Skip over and treat as successful resources that don't exist.
    #[arg(short = 's', long = "skip-not-exists")]
    pub skip_not_exists: bool,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Resource type.
    pub kind: Option<String>,
    /// Resource names.
    pub names: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub filename: Option<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(long = "skip-empty")]
    pub skip_empty: bool,
    /// Output format: ps, wide, custom-columns=<COLS>, yaml, json.
    #[arg(short = 'o', long = "output", default_value = "ps")]
    pub output: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// List the requested objects across all namespaces.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Strip cluster-specific metadata (uid, resourceVersion, creationTimestamp).
    #[arg(long)]
    pub export: bool,
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    pub kind: String,
    pub name: String,
    /// The patch to apply (JSON, or YAML).
    #[arg(short = 'p', long = "patch")]
    pub patch: String,
    /// Patch type: strategic, merge or json.
    #[arg(short = 't', long = "type", default_value = "strategic")]
    pub patch_type: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    pub kind: String,
    pub name: String,
    /// `key=value` to set, or `key` with --remove.
    pub label: String,
    /// Overwrite the value when the key is already present.
    #[arg(long)]
    pub overwrite: bool,
    /// Remove the label with the given key.
    #[arg(long, conflicts_with = "overwrite")]
    pub remove: bool,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[arg(short = 'f', long = "filename", required = true)]
    pub filename: String,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(long = "skip-empty")]
    pub skip_empty: bool,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Display only the client version.
    #[arg(long)]
    pub client: bool,
}

#[derive(Debug, Subcommand)]
pub enum SelectorCommand {
    /// Evaluate a selector against a set of labels; prints true or false.
    Eval {
        selector: String,
        /// Labels as a JSON object, e.g. '{"app":"db"}'.
        #[arg(long, default_value = "{}")]
        labels: String,
    },
    /// Print a selector's canonical form and unique ID.
    Parse { selector: String },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Write a file with N GlobalNetworkPolicies (for timing `calicoctl apply -f`).
    Generate {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
    },
}
