//! The `opswire` command: `serve` (the default), `token`, `agent`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use opswire::auth::{mint, now_s, Claims};
use opswire::config::{Config, ConfigError};
use opswire::signal::wait_for_signal;
use opswire::startup::Application;

#[derive(Parser)]
#[command(
    name = "opswire",
    version,
    about = "Realtime backend for live operations dashboards"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the hub (the default when no command is given).
    Serve(ServeArgs),
    /// Mint a JWT from the configured key, to try authentication.
    Token(TokenArgs),
    /// Sample this host and follow log files; publish both to a hub.
    Agent(AgentArgs),
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "OPSWIRE_BIND")]
    bind: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "OPSWIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Serve anonymous clients on a non-loopback address (no auth key).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
struct TokenArgs {
    /// Team the token grants (repeat for several; `*` for every team).
    #[arg(long = "team", required = true)]
    teams: Vec<String>,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h")]
    ttl: humantime::Duration,
    /// Subject (who the token is for). Every connection of one subject
    /// shares its op budget (limits.subject_*) [default: `cli-` and 8
    /// random characters, a subject of its own].
    #[arg(long)]
    sub: Option<String>,
    /// `read` (subscribe) or `ingest` (also publish).
    #[arg(long, default_value = "read", value_parser = ["read", "ingest"])]
    scope: String,
    /// Sign with this RS256/ES256 private key (PEM) instead of the HS256 secret.
    #[arg(long)]
    private_key: Option<PathBuf>,
    /// TOML configuration file (for auth.jwt_secret).
    #[arg(long, env = "OPSWIRE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct AgentArgs {
    /// The hub, e.g. wss://hub.example:8443 or ws://hub.example:8080 (`/ws`
    /// is added when no path is given).
    #[arg(long, env = "OPSWIRE_AGENT_HUB")]
    hub: String,
    /// For a wss:// hub: trust only the CA certificate(s) in this PEM file
    /// (a private CA) [default: the system's trusted roots].
    #[arg(long, env = "OPSWIRE_AGENT_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// An `ingest` token for the team (prefer the environment variable:
    /// arguments are visible in `ps`).
    #[arg(long, env = "OPSWIRE_AGENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Host name to report [default: the OS host name].
    #[arg(long)]
    host: Option<String>,
    /// Team to publish to [default: the token's only team].
    #[arg(long)]
    team: Option<String>,
    /// Follow this file like `tail -F` (repeat for several).
    #[arg(long = "tail", value_name = "FILE")]
    tail: Vec<PathBuf>,
    /// In a container: where the host's / is mounted (e.g. /host, from
    /// `-v /:/host:ro,rslave`); disks and processes are then the host's.
    #[arg(long, env = "OPSWIRE_AGENT_HOST_ROOT", value_name = "DIR")]
    host_root: Option<PathBuf>,
    /// Milliseconds between samples of this host.
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(50..=60_000)
    )]
    tick_ms: u64,
    /// Milliseconds one disk's statvfs may take; past it the disk is left
    /// out until the call returns (a hung NFS mount).
    #[arg(
        long,
        env = "OPSWIRE_AGENT_MOUNT_TIMEOUT_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(10..=60_000)
    )]
    mount_timeout_ms: u64,
    /// Log lines kept while the hub is unreachable (oldest dropped first).
    #[arg(
        long,
        default_value_t = 10_000,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000)
    )]
    buffer_lines: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(args),
        Some(Command::Agent(args)) => opswire::agent::main(opswire::agent::AgentConfig {
            hub: args.hub,
            ca_file: args.ca_file,
            token: args.token,
            host: args.host,
            team: args.team,
            tail: args.tail,
            host_root: args.host_root,
            tick: Duration::from_millis(args.tick_ms),
            mount_timeout: Duration::from_millis(args.mount_timeout_ms),
            buffer_lines: args.buffer_lines,
        }),
        // Flags may come before or after `serve`; after wins.
        Some(Command::Serve(args)) => serve(ServeArgs {
            bind: args.bind.or(cli.serve.bind),
            config: args.config.or(cli.serve.config),
            insecure: args.insecure || cli.serve.insecure,
        }),
        None => serve(cli.serve),
    }
}

fn load_config(file: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(file).map_err(|e| {
        eprintln!("opswire: configuration error: {e}");
        ExitCode::from(2)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(bind) = &args.bind {
        match bind.parse() {
            Ok(addr) => config.bind = addr,
            Err(e) => {
                eprintln!("opswire: configuration error: bind: `{bind}` is not an address like 127.0.0.1:8080 ({e})");
                return ExitCode::from(2);
            }
        }
    }
    config.insecure |= args.insecure;
    if let Err(e) = config.validate() {
        // Where the value was written; a flag's value is named by the flag.
        let e = match &e {
            ConfigError::Invalid { field, .. } if field == "bind" && args.bind.is_some() => {
                ConfigError::At {
                    at: "--bind".into(),
                    error: Box::new(e),
                }
            }
            _ => e.locate(args.config.as_deref()),
        };
        eprintln!("opswire: configuration error: {e}");
        return ExitCode::from(2);
    }
    let telemetry = match opswire::telemetry::init(&config.log, &config.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("opswire: {e}");
            return ExitCode::from(1);
        }
    };
    if telemetry.exporting() {
        tracing::info!("exporting traces and logs over OTLP");
    }
    let shutdown_timeout = Duration::from_secs(config.shutdown_timeout_s);
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config)?;
        if app.state().auth.dev_mode() {
            tracing::warn!("dev mode: no auth key configured, anonymous clients get every team");
        }
        let token = app.shutdown_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received");
            token.cancel();
            // A second signal, or a stuck drain, ends the process.
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = tokio::time::sleep(shutdown_timeout + Duration::from_secs(5)) => {}
            }
            tracing::warn!("forced exit");
            std::process::exit(1);
        });
        println!("opswire listening on {}://{}", app.scheme(), app.addr());
        app.run_until_stopped().await?;
        Ok::<(), opswire::startup::StartError>(())
    });
    // Outside the server's runtime: flushing cannot starve its own I/O.
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opswire: {e}");
            ExitCode::from(1)
        }
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let key = match &args.private_key {
        Some(p) => match std::fs::read(p) {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("opswire: --private-key {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let now = now_s();
    let claims = Claims {
        sub: args.sub.unwrap_or_else(|| {
            let name = opswire::session::session_name();
            format!("cli-{}", &name[2..10])
        }),
        teams: args.teams,
        exp: now + Duration::from(args.ttl).as_secs(),
        iat: Some(now),
        scope: Some(args.scope),
    };
    if key.is_none() {
        if let Some(s) = &config.auth.jwt_secret {
            if s.len() < 32 {
                eprintln!("opswire: auth.jwt_secret is {} bytes; an HS256 secret needs at least 32 (the server would refuse it)", s.len());
                return ExitCode::from(2);
            }
        }
    }
    match mint(&claims, config.auth.jwt_secret.as_deref(), key.as_deref()) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opswire: {e}");
            ExitCode::from(2)
        }
    }
}
