//! `tether-master run --data-dir DIR`: the master with its embedded broker (or an external
//! one), its store and its HTTP API. Prints one line with the bound addresses when ready:
//! `tether-master ready mqtt=HOST:PORT http=ADDR epoch=HEX [mqtts=HOST:PORT]` (`https=ADDR`
//! instead of `http=ADDR` when the API speaks HTTPS).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tether_master::api::Guard;
use tether_master::api_tls::ApiTls;
use tether_master::broker::BrokerAddr;
use tether_master::runtime::{self, ClientTlsFiles, RunConfig};
use tether_master::tls_listener::TlsListen;

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
        /// Use this broker (mqtt://host[:port] or host:port, or mqtts://host[:port] with
        /// --broker-ca) instead of the embedded one.
        #[arg(long)]
        broker: Option<String>,
        /// CA (PEM) that signed the external mqtts:// broker's certificate.
        #[arg(long, requires = "broker")]
        broker_ca: Option<PathBuf>,
        /// Client certificate (PEM chain) for the external broker, with --broker-key.
        #[arg(long, requires_all = ["broker_ca", "broker_key"])]
        broker_cert: Option<PathBuf>,
        #[arg(long, requires = "broker_cert")]
        broker_key: Option<PathBuf>,
        /// User name at the external broker; the password comes from TETHER_BROKER_PASSWORD.
        #[arg(long, requires = "broker")]
        broker_username: Option<String>,
        /// The embedded broker admits only the users of this file: mosquitto's password file
        /// (`user:$7$...` lines, what `tetherctl provision --credentials` and mosquitto_passwd
        /// write; `$6$` and, with a warning, clear passwords are read too), re-read when it
        /// changes. A client's id must be its user name.
        #[arg(long)]
        broker_passwords: Option<PathBuf>,
        /// A TLS listener for the embedded broker beside the plain --listen (keep that one on
        /// loopback); port 0: any free port.
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        tls_listen: Option<SocketAddr>,
        /// The TLS listener's certificate chain (PEM, leaf first).
        #[arg(long, requires = "tls_listen")]
        tls_cert: Option<PathBuf>,
        /// The TLS listener's private key (PEM).
        #[arg(long, requires = "tls_listen")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by this CA (PEM) on the TLS listener.
        #[arg(long, requires = "tls_listen")]
        tls_client_ca: Option<PathBuf>,
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
        /// How long finished tasks are kept, with their attempts, output and events: a number
        /// with s, m, h or d (`90d`), or 0 to keep everything.
        #[arg(long, default_value = "30d", value_name = "AGE")]
        retain_history: String,
        /// When a rescheduled task's outcome is decided, cancel its other attempt.
        #[arg(long)]
        cancel_duplicates: bool,
        /// The ed25519 signing seed (64 hex digits) that signs commands, heartbeats and
        /// presence (default: DATA_DIR/master.key, created on first start).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// INSECURE: take unauthenticated messages from agents that have no key
        /// (`tetherctl provision` gives each agent one).
        #[arg(long)]
        insecure_agents: bool,
        /// A host name the HTTP API answers to besides localhost and IP addresses (repeat for
        /// more); any other `Host` is refused, which stops DNS-rebinding pages.
        #[arg(long = "api-host", value_name = "NAME")]
        api_hosts: Vec<String>,
        /// An origin (`https://dash.example`) whose pages may send state-changing requests,
        /// besides the API's own (repeat for more).
        #[arg(long = "api-origin", value_name = "ORIGIN")]
        api_origins: Vec<String>,
        /// Serve the HTTP API over HTTPS only, with this certificate chain (PEM, leaf first);
        /// needs --api-tls-key.
        #[arg(long, env = "TETHER_API_TLS_CERT", value_name = "PATH")]
        api_tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --api-tls-cert.
        #[arg(long, env = "TETHER_API_TLS_KEY", value_name = "PATH")]
        api_tls_key: Option<PathBuf>,
        /// Require API clients to present a certificate signed by this CA (PEM), besides their
        /// bearer token; needs --api-tls-cert.
        #[arg(long, env = "TETHER_API_CLIENT_CA", value_name = "PATH")]
        api_client_ca: Option<PathBuf>,
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
        broker_ca,
        broker_cert,
        broker_key,
        broker_username,
        broker_passwords,
        tls_listen,
        tls_cert,
        tls_key,
        tls_client_ca,
        signing_key,
        insecure_agents,
        api_hosts,
        api_origins,
        api_tls_cert,
        api_tls_key,
        api_client_ca,
        retain_history,
    } = Cli::parse().command;
    let retain_history = match tether_master::runtime::parse_age(&retain_history) {
        Ok(age) => age,
        Err(e) => {
            eprintln!("tether-master: --retain-history {e}");
            return ExitCode::from(2);
        }
    };
    let broker = match broker.as_deref().map(BrokerAddr::parse).transpose() {
        Ok(b) => b,
        Err(e) => {
            let given = broker.as_deref().unwrap_or_default();
            eprintln!("tether-master: --broker `{given}`: {e}");
            return ExitCode::from(2);
        }
    };
    if broker.as_ref().is_some_and(|b| b.tls) != broker_ca.is_some() {
        eprintln!("tether-master: an mqtts:// --broker and --broker-ca go together");
        return ExitCode::from(2);
    }
    let client_credentials = match broker_username {
        Some(user) => match std::env::var("TETHER_BROKER_PASSWORD") {
            Ok(password) => Some((user, password)),
            Err(_) => {
                eprintln!("tether-master: --broker-username needs TETHER_BROKER_PASSWORD");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let client_tls = broker_ca.map(|ca| ClientTlsFiles {
        ca,
        identity: broker_cert.zip(broker_key),
    });
    let tls_listen = match (tls_listen, tls_cert, tls_key) {
        (Some(addr), Some(cert), Some(key)) => Some(TlsListen {
            addr,
            cert,
            key,
            client_ca: tls_client_ca,
        }),
        _ => None,
    };
    // Checked here rather than with clap's `requires`, so the environment variables get the
    // same clear message as the flags.
    let api_tls = match (api_tls_cert, api_tls_key) {
        (Some(cert), Some(key)) => Some(ApiTls {
            cert,
            key,
            client_ca: api_client_ca,
        }),
        (None, None) if api_client_ca.is_some() => {
            eprintln!("tether-master: --api-client-ca needs --api-tls-cert and --api-tls-key");
            return ExitCode::from(2);
        }
        (None, None) => None,
        (Some(_), None) => {
            eprintln!("tether-master: --api-tls-cert needs --api-tls-key (TETHER_API_TLS_KEY)");
            return ExitCode::from(2);
        }
        (None, Some(_)) => {
            eprintln!("tether-master: --api-tls-key needs --api-tls-cert (TETHER_API_TLS_CERT)");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = tether_master::limits::HEARTBEAT_PERIOD_MS.check(heartbeat_period_ms) {
        eprintln!("tether-master: --heartbeat-period-ms: {e}");
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
        tls_listen,
        broker_passwords,
        client_credentials,
        client_tls,
        signing_key,
        insecure_agents,
        api_guard: Guard {
            hosts: api_hosts,
            origins: api_origins,
        },
        api_tls,
        retain_history,
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
