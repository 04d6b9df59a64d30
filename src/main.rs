//! The `dialbridge` command line: serve, check-config, user.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use dialbridge::config::{self, Config};
use dialbridge::events::EventBus;
use dialbridge::room::{unix_now, Observers, Rooms};
use dialbridge::store::Store;
use dialbridge::{api, auth, calls, runtime};

#[derive(Parser)]
#[command(name = "dialbridge", version, about = "SIP-bridging telephony gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file; without it the embedded default configuration is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print what is wrong with it.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage API users.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print its new API token (shown once; only its hash is stored).
    Add {
        id: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List users.
    List,
    /// Remove a user: its token stops working at once, and its open event streams end within
    /// seconds (a running gateway checks them again periodically).
    Remove { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve { config } => load(config).and_then(serve),
        Command::CheckConfig { config } => load(config).map(|c| {
            println!(
                "configuration is valid: http {}, {} SIP listener(s), {} trunk(s), {} declared user(s)",
                c.http.listen,
                c.sip.listen.len(),
                c.trunks.len(),
                c.users.len()
            );
        }),
        Command::User { command, config } => load(config).and_then(|c| user_command(&c, command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dialbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(Config::load(path.as_deref())?)
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.store.path)
        .with_context(|| format!("cannot open the store at {}", config.store.path.display()))
}

fn user_command(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        UserCommand::Add { id, display_name } => {
            let id: config::UserId = id.parse().map_err(anyhow::Error::msg)?;
            let token = auth::new_token();
            let display_name = display_name.unwrap_or_else(|| id.0.clone());
            let created = store.write(|tx| {
                if tx.user(&id.0)?.is_some() {
                    return Ok(false);
                }
                tx.upsert_user(&id.0, &display_name, &auth::hash_token(&token), unix_now())
            })?;
            if !created {
                anyhow::bail!("user `{}` already exists", id.0);
            }
            println!("{token}");
            eprintln!(
                "created user `{}`; the token above is shown only once",
                id.0
            );
        }
        UserCommand::Remove { id } => {
            if !store.write(|tx| tx.delete_user(&id))? {
                anyhow::bail!("no user `{id}`");
            }
            eprintln!("removed user `{id}`; its token no longer works");
        }
        UserCommand::List => {
            for user in store.write(|tx| tx.users())? {
                println!("{}\t{}", user.id, user.display_name);
            }
        }
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let open_files = api::server::raise_open_file_limit();
    let limits = api::server::HttpLimits::new(&config.http, open_files);
    let store = Arc::new(open_store(&config)?);
    let recovery = store.recover(unix_now())?;
    if recovery.sessions > 0 || recovery.call_records > 0 {
        tracing::warn!(
            sessions = recovery.sessions,
            call_records = recovery.call_records,
            "closed out sessions and calls left open by the previous run"
        );
    }
    // Their phones still think these calls are up: each gets a BYE once SIP runs.
    let left_over = calls::dialogs::left_over(&store);
    for user in &config.users {
        let name = user
            .display_name
            .clone()
            .unwrap_or_else(|| user.id.0.clone());
        store.write(|tx| {
            tx.upsert_user(
                &user.id.0,
                &name,
                &auth::hash_token(&user.token.0),
                unix_now(),
            )
        })?;
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let events = Arc::new(EventBus::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let media = runtime::media::start(&config.media, events.clone())?;

    let (sip_events_tx, sip_events) = tokio::sync::mpsc::unbounded_channel();
    let sip = runtime::sip::start_with_timers(
        &config.sip.listen,
        config.sip.timers(),
        config.sip.user_agent.clone(),
        config.sip.session_timer(),
        sip_events_tx,
        shutdown_rx.clone(),
    )
    .await?;
    let router = Arc::new(calls::router::CallRouter::default());
    let rooms = Rooms::new(store.clone(), events.clone())
        .with_reserved_numbers(calls::dialin::DialIn::reserved_numbers(&config));
    // Phone legs of both directions; without [[trunks]] dial-out answers 501.
    let legs = calls::legs::PhoneLegs::new(
        &config,
        sip.clone(),
        media.clone(),
        rooms.for_calls(),
        router.clone(),
    );
    legs.spawn_metrics();
    let dialer = calls::dialout::TrunkDialer::new(&config, legs.clone())?;
    let dialin = Arc::new(calls::dialin::DialIn::new(
        &config,
        rooms.for_calls(),
        Some((legs.clone(), router.clone())),
    ));
    rooms.set_call_observer(Arc::new(Observers(vec![
        Arc::new(media.clone()),
        legs.clone(),
    ])));
    let registrations = calls::registration::TrunkRegistrations::new(&config);
    tokio::spawn(calls::run_sip_events(
        sip.clone(),
        sip_events,
        dialin,
        router.clone(),
        registrations.clone(),
    ));
    registrations.start(&sip).await;
    calls::dialogs::hang_up_left_over(left_over, store.clone(), sip.clone(), router.clone());

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    // Without a configured public URL, Location headers name the address actually bound.
    let public_url = match &config.http.public_url {
        Some(_) => config.public_url(),
        None => format!("http://{http_addr}"),
    };
    tracing::info!(%http_addr, %public_url, "HTTP API listening");
    let state = Arc::new(api::AppState {
        rooms: rooms.with_dialer(dialer).with_phone_controls(legs.clone()),
        events,
        metrics,
        media: media.clone(),
        trunks: registrations.clone(),
        public_url,
        shutdown: shutdown_rx.clone(),
        auth_failures: api::AppState::auth_failure_limiter(
            config.http.auth_failures_per_minute.get(),
        ),
    });
    // One line on stdout once every socket is bound, for scripts and tests that start with port 0.
    let sip_addrs: Vec<String> = sip
        .local_addrs
        .iter()
        .map(|(transport, addr)| format!("{}:{addr}", transport.name()))
        .collect();
    println!(
        "dialbridge ready http={http_addr} sip={} webrtc={}",
        sip_addrs.join(","),
        media.local_addr()
    );

    api::server::serve(listener, api::router(state), limits, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        // Phones hear a BYE while the SIP driver still runs.
        legs.shutdown(std::time::Duration::from_secs(5)).await;
        registrations
            .shutdown(&sip, std::time::Duration::from_secs(5))
            .await;
        let _ = shutdown_tx.send(true);
    })
    .await;
    media.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the service");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
