//! The `calico` CNI plugin.
fn main() -> std::process::ExitCode {
    calico_cni::plugin::entry(calico_cni::plugin::Binary::Calico)
}
