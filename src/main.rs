//! The `dialbridge` command line: serve, check-config, user.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use dialbridge::config::{self, Config};
use dialbridge::events::EventBus;
use dialbridge::links::admin;
use dialbridge::money::Money;
use dialbridge::room::{unix_now, Observers, Rooms};
use dialbridge::store::links::{OrgChange, ProjectChange};
use dialbridge::store::Store;
use dialbridge::{api, auth, calls, links, runtime};

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
    /// Manage organizations: the plans and spend limits of call links.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Manage projects: the owners of call links and their API tokens.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Manage project API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization with a subscription (all features, price 0, no spend limit
    /// unless said).
    Add {
        name: String,
        /// The monthly spend limit, e.g. 100.00.
        #[arg(long, value_name = "AMOUNT")]
        spend_limit: Option<Money>,
        /// The price of one participant-minute, e.g. 0.05.
        #[arg(long, value_name = "AMOUNT")]
        price: Option<Money>,
        #[arg(long)]
        no_one_to_one: bool,
        #[arg(long)]
        no_recording: bool,
        #[arg(long)]
        no_dialout: bool,
    },
    /// List organizations with their plans.
    List,
    /// Change an organization's plan; what is not given stays.
    Set {
        name: String,
        #[arg(long, value_name = "AMOUNT", conflicts_with = "no_spend_limit")]
        spend_limit: Option<Money>,
        /// Remove the spend limit.
        #[arg(long)]
        no_spend_limit: bool,
        #[arg(long, value_name = "AMOUNT")]
        price: Option<Money>,
        /// Whether it has a subscription (without one, no link can be created).
        #[arg(long, value_name = "BOOL")]
        subscribed: Option<bool>,
        #[arg(long, value_name = "BOOL")]
        one_to_one: Option<bool>,
        #[arg(long, value_name = "BOOL")]
        recording: Option<bool>,
        #[arg(long, value_name = "BOOL")]
        dialout: Option<bool>,
    },
    /// Remove an organization; its projects stay but can create no links.
    Remove { name: String },
}

/// Settings of a project, for `project add` and `project set`.
#[derive(clap::Args)]
struct ProjectSettings {
    /// Record calls whose creation does not say (`recording` null).
    #[arg(long, value_name = "BOOL")]
    enable_recording: Option<bool>,
    /// Where webhooks are delivered.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<dialbridge::config::HttpUrl>,
    /// The secret webhooks are signed with.
    #[arg(long, value_name = "SECRET")]
    webhook_secret: Option<String>,
    /// How long a link lives without `expiresAt` (e.g. 24h, 90m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    link_lifetime: Option<std::time::Duration>,
    /// How long a started call may stay empty before it ends.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    empty_timeout: Option<std::time::Duration>,
}

impl ProjectSettings {
    fn change(&self, no_webhook: bool) -> ProjectChange {
        let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs() as i64);
        ProjectChange {
            organization_id: None,
            enable_recording: self.enable_recording,
            webhook_url: if no_webhook {
                Some(None)
            } else {
                self.webhook_url.as_ref().map(|u| Some(u.0.clone()))
            },
            webhook_secret: self.webhook_secret.clone().map(Some),
            link_lifetime: secs(self.link_lifetime),
            empty_timeout: secs(self.empty_timeout),
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .ok()
        .or_else(|| s.parse().ok().map(std::time::Duration::from_secs))
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{s}` is not a positive duration like 24h or 90s"))
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project in an organization.
    Add {
        name: String,
        #[arg(long)]
        org: String,
        #[command(flatten)]
        settings: ProjectSettings,
    },
    /// List projects with their settings.
    List,
    /// Change a project's settings; what is not given stays.
    Set {
        name: String,
        /// Move the project to another organization.
        #[arg(long)]
        org: Option<String>,
        /// Stop delivering webhooks.
        #[arg(long, conflicts_with = "webhook_url")]
        no_webhook: bool,
        #[command(flatten)]
        settings: ProjectSettings,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a project and print it (shown once; only its hash is stored).
    Add {
        #[arg(long)]
        project: String,
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
        Command::Org { command, config } => load(config).and_then(|c| org_command(&c, command)),
        Command::Project { command, config } => {
            load(config).and_then(|c| project_command(&c, command))
        }
        Command::Token { command, config } => {
            load(config).and_then(|c| token_command(&c, command))
        }
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

fn print_org(org: &dialbridge::store::links::OrgRow) {
    let flag = |on: bool, name: &str| {
        if on {
            name.to_string()
        } else {
            format!("no-{name}")
        }
    };
    println!(
        "{}\tsubscribed={}\tprice={}\tspend_limit={}\t{},{},{}",
        org.name,
        org.subscribed,
        Money(org.price_micros),
        org.spend_limit_micros
            .map(|m| Money(m).to_string())
            .unwrap_or_else(|| "none".into()),
        flag(org.one_to_one, "one-to-one"),
        flag(org.recording, "recording"),
        flag(org.dialout, "dialout"),
    );
}

fn org_command(config: &Config, command: OrgCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        OrgCommand::Add {
            name,
            spend_limit,
            price,
            no_one_to_one,
            no_recording,
            no_dialout,
        } => {
            let name: config::Name = name.parse().map_err(anyhow::Error::msg)?;
            let change = OrgChange {
                subscribed: Some(true),
                price_micros: price.map(Money::micros),
                spend_limit_micros: Some(spend_limit.map(Money::micros)),
                one_to_one: Some(!no_one_to_one),
                recording: Some(!no_recording),
                dialout: Some(!no_dialout),
            };
            let org = admin::add_org(&store, &name, &change)?;
            print_org(&org);
        }
        OrgCommand::List => {
            for org in admin::orgs(&store)? {
                print_org(&org);
            }
        }
        OrgCommand::Set {
            name,
            spend_limit,
            no_spend_limit,
            price,
            subscribed,
            one_to_one,
            recording,
            dialout,
        } => {
            let change = OrgChange {
                subscribed,
                price_micros: price.map(Money::micros),
                spend_limit_micros: if no_spend_limit {
                    Some(None)
                } else {
                    spend_limit.map(|m| Some(m.micros()))
                },
                one_to_one,
                recording,
                dialout,
            };
            let org = admin::set_org(&store, &name, &change)?;
            print_org(&org);
        }
        OrgCommand::Remove { name } => {
            admin::remove_org(&store, &name)?;
            eprintln!("removed organization `{name}`; its projects can no longer create links");
        }
    }
    Ok(())
}

fn print_project(project: &dialbridge::store::links::ProjectRow, org: Option<&str>) {
    println!(
        "{}\torg={}\trecording={}\twebhook={}\tlink_lifetime={}s\tempty_timeout={}s",
        project.name,
        org.unwrap_or("(none)"),
        project.enable_recording,
        project.webhook_url.as_deref().unwrap_or("none"),
        project.link_lifetime,
        project.empty_timeout,
    );
}

fn project_command(config: &Config, command: ProjectCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        ProjectCommand::Add {
            name,
            org,
            settings,
        } => {
            let name: config::Name = name.parse().map_err(anyhow::Error::msg)?;
            if settings.webhook_url.is_some() && settings.webhook_secret.is_none() {
                anyhow::bail!(
                    "a webhook needs a secret to sign its deliveries: add --webhook-secret"
                );
            }
            let project = admin::add_project(&store, config, &name, &org, &settings.change(false))?;
            print_project(&project, Some(&org));
        }
        ProjectCommand::List => {
            for (project, org) in admin::projects(&store)? {
                print_project(&project, org.as_deref());
            }
        }
        ProjectCommand::Set {
            name,
            org,
            no_webhook,
            settings,
        } => {
            let project =
                admin::set_project(&store, &name, org.as_deref(), &settings.change(no_webhook))?;
            let org = admin::projects(&store)?
                .into_iter()
                .find(|(p, _)| p.id == project.id)
                .and_then(|(_, org)| org);
            print_project(&project, org.as_deref());
        }
    }
    Ok(())
}

fn token_command(config: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        TokenCommand::Add { project } => {
            let token = admin::add_token(&store, &project)?;
            println!("{token}");
            eprintln!("created a token for project `{project}`; it is shown only once");
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
    links::admin::apply_config(&store, &config)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let events = Arc::new(EventBus::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let media = runtime::media::start(&config.media, events.clone())?;
    match calls::wav::prompt(calls::pin::Prompt::Recorded) {
        Ok(notice) => media.set_recording_notice(notice),
        Err(e) => tracing::warn!(error = %e, "the recording notice cannot be played to phones"),
    }

    let (sip_events_tx, sip_events) = tokio::sync::mpsc::unbounded_channel();
    let sip = runtime::sip::start_with_timers(
        &config.sip.listen,
        config.sip.timers(),
        config.sip.user_agent.clone(),
        config.sip.session_timer(),
        runtime::sip::SipTls::from_config(&config)?,
        sip_events_tx,
        shutdown_rx.clone(),
    )
    .await?;
    let router = Arc::new(calls::router::CallRouter::default());
    let rooms = Rooms::new(store.clone(), events.clone())
        .with_reserved_numbers(calls::dialin::DialIn::reserved_numbers(&config));
    // Call links are the policy of their rooms: joins, dial-outs and the meter.
    let call_links = links::CallLinks::new(&config, rooms.clone());
    // Phone legs of both directions; without [[trunks]] dial-out answers 501.
    let legs = calls::legs::PhoneLegs::new(
        &config,
        sip.clone(),
        media.clone(),
        rooms.for_calls(),
        router.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    legs.spawn_metrics();
    call_links.set_phone_legs(legs.clone());
    call_links.set_media(media.clone());
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
    call_links.set_public_url(public_url.clone());
    call_links.start(shutdown_rx.clone())?;
    let rooms = rooms.with_dialer(dialer).with_phone_controls(legs.clone());
    let user_bus = Arc::new(dialbridge::direct::UserBus::default());
    let voice = dialbridge::voice::VoiceCalls::new(
        store.clone(),
        events.clone(),
        user_bus.clone(),
        dialbridge::voice::push::Push::new(store.clone(), config.push.clone())?,
        config.push.clone(),
    );
    let direct = dialbridge::direct::DirectCalls::new(
        rooms.clone(),
        events.clone(),
        user_bus,
        dialbridge::direct::DirectConfig {
            one_to_one: config.calls.one_to_one,
            ring_time: config.calls.ring_time.0,
        },
        public_url.clone(),
    );
    let state = Arc::new(api::AppState {
        rooms,
        direct,
        voice,
        events,
        metrics,
        media: media.clone(),
        trunks: registrations.clone(),
        public_url,
        links: call_links,
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
