//! Everything before the loop: the store and the snapshot the core is restored from, the
//! embedded broker (or the external one's settings), the signing key and the epoch, the MQTT
//! client and its event-loop task, the HTTP listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use log::{error, info, warn};
use tether_core::presence::State;
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;

use super::{Bound, Clock, MqttInput, RunConfig, RunError, unix_secs};
use crate::api::{self, Envelope, SharedTokens, Tokens};
use crate::api_tls::HttpsListener;
use crate::broker::{BrokerConfig, ClientSettings, ClientTls, EmbeddedBroker};
use crate::core::{Config, Master};
use crate::keys;
use crate::model::{ApiToken, Role};
use crate::passwords::{self, Passwords, Verdict};
use crate::store::{PostgresStore, SqliteStore, Store, StoreLocation};
use crate::tls_listener;

/// A master ready to serve: what the loop owns.
pub(super) struct Ready {
    pub(super) store: Box<dyn Store>,
    pub(super) core: Master,
    pub(super) client: rumqttc::AsyncClient,
    pub(super) mqtt_rx: mpsc::Receiver<MqttInput>,
    pub(super) api_rx: mpsc::Receiver<Envelope>,
    /// Where committed changes are announced to the API's event streams.
    pub(super) hub: api::Hub,
    pub(super) bound: Bound,
    pub(super) clock: Clock,
    pub(super) tokens: SharedTokens,
    pub(super) retention: super::retention::Retention,
    /// The embedded broker, kept for as long as the loop runs (rumqttd has no shutdown).
    pub(super) _broker: Option<EmbeddedBroker>,
}

/// Builds the master from its configuration; every error is one line for the operator.
pub(super) async fn setup(config: RunConfig) -> Result<Ready, RunError> {
    // The API's TLS files first: a bad one stops the start before anything else is up.
    let api_acceptor = match &config.api_tls {
        Some(files) => Some(
            files
                .acceptor()
                .map_err(|e| RunError::Config(format!("API TLS: {e}")))?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| RunError::Io(format!("creating {}", config.data_dir.display()), e))?;
    let store: Box<dyn Store> = match &config.store {
        StoreLocation::Sqlite(path) => Box::new(SqliteStore::open(path).map_err(RunError::Store)?),
        StoreLocation::Postgres(url) => {
            Box::new(PostgresStore::open(url).map_err(RunError::Store)?)
        }
    };
    info!("store: {}", config.store);
    let snapshot = store.load().map_err(RunError::Store)?;
    let tokens = api_tokens(store.as_ref(), &config.data_dir)?;

    let embedded_only = |what: &str| {
        RunError::Config(format!(
            "{what} configures the embedded broker; it does not apply with --broker"
        ))
    };
    let mut credentials = config.client_credentials.clone();
    // The embedded broker lives as long as the process (rumqttd has no shutdown).
    let (mqtt_addr, broker, mqtts) = match &config.broker {
        Some(addr) => {
            if config.tls_listen.is_some() {
                return Err(embedded_only("--tls-listen"));
            }
            if config.broker_passwords.is_some() {
                return Err(embedded_only("--broker-passwords"));
            }
            (addr.clone(), None, None)
        }
        None => {
            let mut broker_config = match &config.broker_config {
                Some(path) => BrokerConfig::from_path(path),
                None => BrokerConfig::builtin(),
            }
            .map_err(RunError::Broker)?;
            broker_config.set_listen(config.listen);
            if let Some(n) = config.broker_max_connections {
                broker_config.set_max_connections(n);
            }
            if let Some(path) = &config.broker_passwords {
                let passwords = Arc::new(
                    Passwords::load(path)
                        .map_err(|e| RunError::Config(format!("--broker-passwords: {e}")))?,
                );
                credentials = Some(passwords.master_credentials());
                broker_config.set_auth_handler(move |client_id, user, password| {
                    let passwords = Arc::clone(&passwords);
                    // rumqttd serves every connection of a listener on one thread: the key
                    // derivation runs on the blocking pool so CONNECTs do not stall traffic
                    // (spawned when polled, inside rumqttd's runtime).
                    async move {
                        let check = tokio::task::spawn_blocking(move || {
                            let verdict = passwords.check(&client_id, &user, &password);
                            if verdict != Verdict::Accepted {
                                warn!(
                                    "broker refused client `{client_id}` (user `{user}`): {verdict}"
                                );
                            }
                            verdict == Verdict::Accepted
                        });
                        check.await.unwrap_or(false)
                    }
                });
            }
            let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(broker_config))
                .await
                .map_err(|e| RunError::Config(format!("broker start: {e}")))?
                .map_err(RunError::Broker)?;
            let plain = broker.broker_addr();
            let mqtts = match &config.tls_listen {
                Some(listen) => {
                    let upstream = SocketAddr::new(
                        plain.host.parse().map_err(|_| {
                            RunError::Config(format!("broker address {plain} is not an IP"))
                        })?,
                        plain.port,
                    );
                    Some(
                        tls_listener::start(listen, upstream)
                            .await
                            .map_err(|e| RunError::Config(format!("--tls-listen: {e}")))?,
                    )
                }
                None => None,
            };
            (plain, Some(broker), mqtts)
        }
    };
    let client_tls = match &config.client_tls {
        Some(files) => Some(ClientTls(Arc::new(
            tether_tls::client_config_from_files(
                &files.ca,
                files
                    .identity
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )
            .map_err(|e| RunError::Config(format!("broker TLS: {e}")))?,
        ))),
        None => None,
    };

    let key_path = config
        .signing_key
        .clone()
        .unwrap_or_else(|| config.data_dir.join("master.key"));
    let signing_key = keys::load_or_create(&key_path).map_err(RunError::Config)?;
    let public_key = signing_key.public_key();
    if config.insecure_agents {
        warn!(
            "INSECURE: agents without a key are trusted; any broker client can speak for them \
             (--insecure-agents)"
        );
    }
    // Committed before anything is published under it: agents refuse every older epoch.
    let epoch = match store.next_epoch(unix_secs()) {
        Ok(epoch) => epoch,
        // A full disk must not keep the master down: this epoch is above every stored one and
        // the clock's seconds, which the next start's epoch will be above too.
        Err(e) if e.is_full() => {
            let stored = store.epoch().map_err(RunError::Store)?;
            let epoch = stored.saturating_add(1).max(unix_secs());
            warn!("{e}: starting under epoch {epoch:08x} without storing it; writes are refused");
            epoch
        }
        Err(e) => return Err(RunError::Store(e)),
    };
    let clock = Clock(TokioInstant::now());
    let period = tether_core::Duration::from_millis(config.heartbeat_period.as_millis() as u64);
    let mut core_config = Config::new(&config.prefix, epoch, signing_key);
    core_config.heartbeat_period = period;
    core_config.schedule_horizon =
        tether_core::Duration::from_millis(config.schedule_horizon.as_millis() as u64);
    core_config.cancel_duplicates = config.cancel_duplicates;
    core_config.insecure_agents = config.insecure_agents;
    let core = Master::restore(core_config, snapshot, clock.now())
        .map_err(|e| RunError::Config(e.to_string()))?;

    let mut settings = ClientSettings::master(
        passwords::MASTER_USER,
        &config.prefix,
        epoch,
        config.heartbeat_period,
    );
    settings.credentials = credentials;
    settings.tls = client_tls;
    settings.will = Some(core.presence(State::Lost));
    let (client, mut eventloop) = settings
        .connect(&mqtt_addr, 1024)
        .map_err(|e| RunError::Config(e.to_string()))?;
    let (mqtt_tx, mqtt_rx) = mpsc::channel::<MqttInput>(1024);
    tokio::spawn(async move {
        loop {
            let input = match eventloop.poll().await {
                Ok(ev) => MqttInput::Event(ev, TokioInstant::now()),
                Err(e) => MqttInput::Down(e),
            };
            let down = matches!(input, MqttInput::Down(_));
            if mqtt_tx.send(input).await.is_err() {
                return;
            }
            if down {
                // rumqttc reconnects on the next poll without pausing: pace it.
                tokio::time::sleep(StdDuration::from_millis(500)).await;
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| RunError::Io(format!("binding HTTP on {}", config.http), e))?;
    let http = listener
        .local_addr()
        .map_err(|e| RunError::Io("HTTP listener address".into(), e))?;
    let (api_tx, api_rx) = mpsc::channel::<Envelope>(64);
    let hub = api::Hub::default();
    let router = api::router(
        api_tx,
        config.api_guard.clone(),
        tokens.clone(),
        hub.clone(),
    );
    match api_acceptor {
        Some(acceptor) => {
            let listener = HttpsListener::new(listener, acceptor)
                .map_err(|e| RunError::Io("HTTPS listener address".into(), e))?;
            info!(
                "HTTP API on https://{http} (client certificates {})",
                if config
                    .api_tls
                    .as_ref()
                    .is_some_and(|t| t.client_ca.is_some())
                {
                    "required"
                } else {
                    "not asked for"
                }
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    error!("HTTPS server stopped: {e}");
                }
            });
        }
        None => {
            info!("HTTP API on http://{http}");
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    error!("HTTP server stopped: {e}");
                }
            });
        }
    }

    let bound = Bound {
        mqtt: mqtt_addr.clone(),
        http,
        https: config.api_tls.is_some(),
        epoch,
        mqtts,
        public_key,
    };
    info!("{bound}");
    Ok(Ready {
        store,
        core,
        client,
        mqtt_rx,
        api_rx,
        bound,
        clock,
        tokens,
        hub,
        retention: super::retention::Retention::new(config.retain_history),
        _broker: broker,
    })
}

/// The name of the file the first admin token is written to, in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The tokens the API accepts. On first start (no token stored) an admin token is made and
/// written to `DATA_DIR/admin.token` (0600); the log says where, never what.
fn api_tokens(store: &dyn Store, data_dir: &std::path::Path) -> Result<SharedTokens, RunError> {
    let mut stored = store.tokens().map_err(RunError::Store)?;
    if stored.is_empty() {
        let secret = api::new_secret()
            .map_err(|e| RunError::Io("random bytes for the admin token".into(), e))?;
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_secret(&path, &secret)
            .map_err(|e| RunError::Io(format!("writing {}", path.display()), e))?;
        let token = ApiToken {
            name: "admin".into(),
            role: Role::Admin,
            hash: api::hash_hex(&secret),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            created_by: "first start".into(),
            revoked_ms: None,
        };
        store
            .apply(&[crate::core::Change::ApiToken(token.clone())])
            .map_err(RunError::Store)?;
        info!(
            "first start: an admin API token was written to {} (mode 0600); tetherctl reads it \
             with --token-file or TETHER_TOKEN",
            path.display()
        );
        stored.push(token);
    }
    Ok(std::sync::Arc::new(std::sync::RwLock::new(Tokens::new(
        &stored,
    ))))
}

/// Creates `path` with mode 0600 from the start (replacing a stale one) and syncs it.
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}
