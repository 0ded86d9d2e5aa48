//! `tether-master run --data-dir DIR`: the master with its embedded broker (or an external
//! one), its store and its HTTP API. Prints one line with the bound addresses when ready:
//! `tether-master ready mqtt=HOST:PORT http=ADDR epoch=HEX`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tether_master::broker::BrokerAddr;
use tether_master::runtime::{self, RunConfig};

#[derive(Debug, Parser)]
#[command(name = "tether-master", version, about = "The Tether master")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the master until SIGINT or SIGTERM.
    Run {
        /// Where the database lives (created if missing).
        #[arg(long)]
        data_dir: PathBuf,
        /// Address of the embedded MQTT broker (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
        /// Address of the HTTP API (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// Use this broker (mqtt://host:port) instead of the embedded one.
        #[arg(long)]
        broker: Option<String>,
        /// rumqttd configuration for the embedded broker (default: the built-in
        /// broker-config/rumqttd.toml).
        #[arg(long)]
        broker_config: Option<PathBuf>,
        /// Topic prefix.
        #[arg(long, default_value = "tether")]
        prefix: String,
        /// The master's heartbeat period in milliseconds (shorter while a task asks for it).
        #[arg(long, default_value_t = 10_000)]
        heartbeat_period_ms: u64,
        /// When a rescheduled task's outcome is decided, cancel its other attempt.
        #[arg(long)]
        cancel_duplicates: bool,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,rumqttd=off"))
        .init();
    let Command::Run {
        data_dir,
        listen,
        http,
        broker,
        broker_config,
        prefix,
        heartbeat_period_ms,
        cancel_duplicates,
    } = Cli::parse().command;
    let broker = match broker.as_deref().map(BrokerAddr::parse).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tether-master: --broker: {e}");
            return ExitCode::from(2);
        }
    };
    if heartbeat_period_ms == 0 {
        eprintln!("tether-master: --heartbeat-period-ms must be greater than zero");
        return ExitCode::from(2);
    }
    let config = RunConfig {
        data_dir,
        listen,
        http,
        broker,
        broker_config,
        prefix,
        heartbeat_period: Duration::from_millis(heartbeat_period_ms),
        cancel_duplicates,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-master: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(runtime::run(config, runtime::print_ready)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether-master: {e}");
            ExitCode::FAILURE
        }
    }
}
