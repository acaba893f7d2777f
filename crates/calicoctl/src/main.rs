//! The `calicoctl` binary: everything lives in the library; this only passes the arguments and
//! the environment in and the exit code out.

fn main() {
    let env = calico_datastore::config::DatastoreConfig::process_env();
    std::process::exit(calicoctl::run(std::env::args_os().collect(), env));
}
