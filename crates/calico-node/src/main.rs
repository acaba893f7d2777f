//! `calico-node`: see the library docs. Flags as upstream: `-felix-live`, `-felix-ready`,
//! `-bird-ready` (exit 0 when healthy, 1 with a reason otherwise); no flag runs the agent.

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CALICO_NODE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("calico-node: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.first().map(String::as_str) {
            None => calico_node::run::run().await,
            Some(flag) => calico_node::health::check_flags(&args)
                .await
                .map_err(|e| anyhow::anyhow!("{flag}: {e:#}")),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calico-node: {e:#}");
            if args.is_empty() {
                tracing::error!(error = format!("{e:#}"), "Calico node failed to start");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
