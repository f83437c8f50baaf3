//! The `orderflow` command line: `serve` (the default), `migrate`, and
//! `user create`. Start-up errors are reported once, plainly, and exit 1.

use clap::{Args, Parser, Subcommand};

use crate::auth::accounts::{AccountError, Accounts};
use crate::auth::token::TokenService;
use crate::config::Settings;
use crate::db::Database;
use crate::domain::user::{NewUser, Role};
use crate::orders::CheckoutEngines;
use crate::startup::Application;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "orderflow",
    version,
    about = "Actor-based order-processing engine"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine (the default): migrate, then serve HTTP.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Default, Args)]
struct ServeArgs {
    /// How checkouts run: `orderflow` (the saga), or another engine this
    /// binary was built with. Default: `checkout.engine` from the settings.
    #[arg(long)]
    engine: Option<String>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user (a customer unless --admin).
    Create(CreateUser),
}

#[derive(Debug, Args)]
struct CreateUser {
    #[arg(long)]
    admin: bool,
    #[arg(long)]
    email: String,
    /// Prefer ORDERFLOW_USER_PASSWORD to keep it out of shell history.
    #[arg(long, env = "ORDERFLOW_USER_PASSWORD", hide_env_values = true)]
    password: String,
    #[arg(long)]
    name: String,
}

pub async fn run() -> anyhow::Result<()> {
    run_with(&CheckoutEngines::new()).await
}

/// The command line of a binary that offers more checkout engines than the
/// saga (the load benches' `orderflow-bench-engine`).
pub async fn run_with(checkout_engines: &CheckoutEngines) -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load()?;
    telemetry::init_tracing(&settings.telemetry);
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            if let Some(engine) = &args.engine {
                settings.checkout.engine.clone_from(engine);
                settings.check_engine()?;
            }
            serve(settings, checkout_engines).await
        }
        Command::Migrate => migrate(settings).await,
        Command::User(UserCommand::Create(args)) => create_user(settings, args).await,
    }
}

async fn serve(settings: Settings, checkout_engines: &CheckoutEngines) -> anyhow::Result<()> {
    tracing::info!(
        environment = %settings.environment,
        checkout.engine = %settings.checkout.engine,
        "starting orderflow"
    );
    let app = Application::build_with(settings, checkout_engines).await?;
    // Plain stdout, not a log line: scripts and tests read the bound port here.
    println!("orderflow listening on {}", app.address());
    app.run_until_signalled().await?;
    tracing::info!("orderflow stopped");
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database)?;
    let applied = db.migrate().await?;
    println!(
        "applied {applied} migration(s) on {}",
        db.backend().as_str()
    );
    Ok(())
}

async fn create_user(settings: Settings, args: CreateUser) -> anyhow::Result<()> {
    let db = Database::connect(&settings.database)?;
    db.migrate().await?;
    let tokens = TokenService::new(&settings.auth.jwt_secret, settings.auth.token_ttl_s);
    let accounts = Accounts::new(
        db,
        tokens,
        &settings.rate_limits,
        std::time::Duration::ZERO,
        None,
    );
    let role = if args.admin {
        Role::Admin
    } else {
        Role::Customer
    };
    let new = NewUser::parse(&args.email, &args.password, &args.name, role).map_err(|errors| {
        let reasons: Vec<String> = errors
            .iter()
            .map(|e| format!("{} {}", e.field, e.message))
            .collect();
        anyhow::anyhow!("invalid user: {}", reasons.join("; "))
    })?;
    match accounts.create(new).await {
        Ok(user) => {
            println!("{}", serde_json::to_string(&user)?);
            Ok(())
        }
        Err(AccountError::EmailTaken) => {
            anyhow::bail!("a user with email {} already exists", args.email.trim())
        }
        Err(e) => Err(anyhow::anyhow!("creating user: {e}")),
    }
}
