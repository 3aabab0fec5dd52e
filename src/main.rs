//! The `peat-sidecar` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use peat_sidecar::{
    api::{client, client_data, metrics::MetricsError, output::OutputError, server::ServeError},
    authority,
    config::Command,
    daemon,
    node::{self, endpoint::EndpointError, NodeError},
    settings::{self, SettingsError},
};

fn main() -> ExitCode {
    let cli = match settings::parse_cli(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The client commands make a few calls in sequence: one thread is plenty.
    let workers = match &cli.command {
        Command::Run(args) => args.worker_threads.into(),
        _ => 1,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                daemon::init_logging(args.log_format);
                daemon::run(*args).await
            }
            Command::Status(a) => Ok(client::status(&a).await?),
            Command::Peers(a) => Ok(client::peers(&a).await?),
            Command::Connect(a) => Ok(client::connect_peer(&a).await?),
            Command::Disconnect(a) => Ok(client::disconnect_peer(&a).await?),
            Command::Forget(a) => Ok(client::forget_peer(&a).await?),
            Command::Watch(a) => Ok(client::watch(&a).await?),
            Command::Publish(a) => Ok(client_data::publish(&a).await?),
            Command::Subscribe(a) => Ok(client_data::subscribe(&a).await?),
            Command::Get(a) => Ok(client_data::get(&a).await?),
            Command::Delete(a) => Ok(client_data::delete(&a).await?),
            Command::Authority(a) => authority::run(&a),
            Command::Revoke(a) => Ok(client::revoke(&a).await?),
            Command::Id(a) => {
                let key = node::identity::load_or_create(&a.data_dir)?;
                Ok(peat_sidecar::outln!("{}", key.public())?)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`peers | head`): the command is done, nothing to say.
        Err(e) if closed_stdout(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// 2 for a value the user must change, like clap's own usage errors: a setting that
/// cannot work, or an address (--bind, --listen, --metrics-listen, --discovery-port)
/// that another process holds; 1 for anything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(s) = e.downcast_ref::<SettingsError>() {
        return s.exit_code();
    }
    if e.chain().any(address_in_use) {
        2
    } else {
        1
    }
}

/// Whether `e` says that another socket holds the address asked for.
fn address_in_use(e: &(dyn std::error::Error + 'static)) -> bool {
    let io = e
        .downcast_ref::<std::io::Error>()
        .or_else(|| match e.downcast_ref::<ServeError>() {
            Some(ServeError::Tcp { cause, .. } | ServeError::Unix { cause, .. }) => Some(cause),
            _ => None,
        })
        .or_else(|| match e.downcast_ref::<MetricsError>() {
            Some(MetricsError::Bind { cause, .. }) => Some(cause),
            None => None,
        });
    io.is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
        || matches!(
            e.downcast_ref::<NodeError>(),
            Some(NodeError::Endpoint(EndpointError::Bind {
                in_use: true,
                ..
            }))
        )
}

fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref(), Some(OutputError::Closed))
            || matches!(
                c.downcast_ref(),
                Some(client::ClientError::Output(OutputError::Closed))
            )
    })
}
