//! Account use cases: register, log in, look up, create (CLI) and the
//! bootstrap admin.
//!
//! Login failures are rate limited per email and per client IP. Each attempt
//! takes one unit of both budgets *before* the password is checked, and a
//! successful login gives them back; so concurrent guesses cannot overrun the
//! budget, and once it is spent a guesser learns nothing more. Unknown emails
//! cost the same time as wrong passwords, and both get the same answer.
//! Rate-limit keys are hashed, so no email address is stored in Redis.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use dashmap::DashMap;
use uuid::Uuid;

use super::password;
use super::token::{IssuedToken, TokenService};
use crate::config::{AuthSettings, RateLimitSettings};
use crate::db::users::{self, NewUserRow, UserRow};
use crate::db::{Database, DbError};
use crate::domain::user::{Email, NewUser, Role, User};
use crate::domain::FieldError;
use crate::rate_limit::{Decision, Quota, RateLimiter};
use crate::redis_conn::RedisConn;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("email already registered")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed logins")]
    RateLimited { retry_after: Duration },
    /// Too many password hashes already running; retry shortly.
    #[error("password hashing is at capacity")]
    Overloaded,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for AccountError {
    fn from(e: diesel::result::Error) -> Self {
        AccountError::Db(DbError::Query(e))
    }
}

#[derive(Clone)]
pub struct Accounts {
    db: Database,
    tokens: TokenService,
    failures_by_email: RateLimiter,
    failures_by_ip: RateLimiter,
    /// Recently checked accounts: their role, or `None` for one that does
    /// not exist (see [`Accounts::role_now`]).
    confirmed: Arc<DashMap<Uuid, (Option<Role>, Instant)>>,
    confirm_ttl: Duration,
    last_sweep: Arc<std::sync::Mutex<Instant>>,
}

/// Past this many confirmed accounts, stale ones are swept.
const CONFIRMED_SWEEP_AT: usize = 100_000;

impl Accounts {
    pub fn new(
        db: Database,
        tokens: TokenService,
        limits: &RateLimitSettings,
        confirm_ttl: Duration,
        redis: Option<RedisConn>,
    ) -> Accounts {
        let window = Duration::from_secs(limits.login_window_s);
        let quota = |limit| Quota { limit, window };
        Accounts {
            db,
            tokens,
            failures_by_email: RateLimiter::new(
                "login_email",
                quota(limits.login_failures_per_email),
                redis.clone(),
            ),
            failures_by_ip: RateLimiter::new(
                "login_ip",
                quota(limits.login_failures_per_ip),
                redis,
            ),
            confirmed: Arc::default(),
            confirm_ttl,
            last_sweep: Arc::new(std::sync::Mutex::new(Instant::now())),
        }
    }

    /// The role the account `id` has now, or `None` when it no longer
    /// exists: a valid token of a deleted user is refused, and a changed
    /// role counts, not the one in the token. Answers, "no such account"
    /// included, are kept for `auth.account_check_ttl_ms`, so a change takes
    /// effect within it and a deleted account's token costs one query per
    /// period, not one per request.
    pub async fn role_now(&self, id: Uuid) -> Result<Option<Role>, AccountError> {
        let now = Instant::now();
        if let Some(entry) = self.confirmed.get(&id) {
            let (role, at) = *entry;
            if now.duration_since(at) < self.confirm_ttl {
                return Ok(role);
            }
        }
        // In a task of its own: this runs in an extractor, whose future
        // actix drops when another extractor of the handler fails first, and
        // a database call must never be dropped half-way (SQLite's
        // connection wrapper cannot be cancelled on actix's runtimes).
        let lookup = {
            let this = self.clone();
            tokio::spawn(async move { this.find(id).await })
        };
        let role = lookup
            .await
            .map_err(|e| AccountError::Internal(anyhow::anyhow!("account lookup failed: {e}")))??
            .map(|user| user.role);
        if !self.confirm_ttl.is_zero() {
            self.sweep_confirmed(now);
            self.confirmed.insert(id, (role, now));
        }
        Ok(role)
    }

    /// Past a size, drops stale answers, at most once per TTL.
    fn sweep_confirmed(&self, now: Instant) {
        if self.confirmed.len() < CONFIRMED_SWEEP_AT {
            return;
        }
        let ttl = self.confirm_ttl;
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*last) < ttl {
                return;
            }
            *last = now;
        }
        self.confirmed
            .retain(|_, (_, at)| now.duration_since(*at) < ttl);
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<(User, IssuedToken), AccountError> {
        let new =
            NewUser::parse(email, password, name, Role::Customer).map_err(AccountError::Invalid)?;
        let user = self.create(new).await?;
        let token = self.tokens.issue(user.id, user.role)?;
        Ok((user, token))
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<(User, IssuedToken), AccountError> {
        let parsed = Email::parse(email).ok();
        let email_key = limit_key(parsed.as_ref().map_or("<invalid email>", Email::as_str));
        let ip_key = client_ip.map(|ip| limit_key(&ip.to_string()));
        self.take_attempt(&email_key, ip_key.as_deref()).await?;

        let outcome = self.check_credentials(parsed.as_ref(), password).await;
        if matches!(
            outcome,
            Ok(_) | Err(AccountError::Db(_) | AccountError::Internal(_) | AccountError::Overloaded)
        ) {
            // Only a wrong password counts against the budget.
            self.give_back_attempt(&email_key, ip_key.as_deref()).await;
        }
        let user = outcome?;
        let token = self.tokens.issue(user.id, user.role)?;
        Ok((user, token))
    }

    async fn check_credentials(
        &self,
        email: Option<&Email>,
        password: &str,
    ) -> Result<User, AccountError> {
        let row = match email {
            Some(email) => {
                let mut conn = self.db.conn().await?;
                users::find_by_email(&mut conn, email.as_str()).await?
            }
            None => None,
        };
        let phc = row
            .as_ref()
            .map(|r| r.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let matches = password::verify(password.to_owned(), phc)
            .await
            .map_err(password_error)?;
        match row {
            Some(row) if matches => to_user(row),
            _ => Err(AccountError::InvalidCredentials),
        }
    }

    async fn take_attempt(
        &self,
        email_key: &str,
        ip_key: Option<&str>,
    ) -> Result<(), AccountError> {
        if let Decision::Limited { retry_after } = self.failures_by_email.record(email_key).await {
            return Err(AccountError::RateLimited { retry_after });
        }
        if let Some(ip) = ip_key {
            if let Decision::Limited { retry_after } = self.failures_by_ip.record(ip).await {
                self.failures_by_email.refund(email_key).await;
                return Err(AccountError::RateLimited { retry_after });
            }
        }
        Ok(())
    }

    async fn give_back_attempt(&self, email_key: &str, ip_key: Option<&str>) {
        self.failures_by_email.refund(email_key).await;
        if let Some(ip) = ip_key {
            self.failures_by_ip.refund(ip).await;
        }
    }

    pub async fn find(&self, id: Uuid) -> Result<Option<User>, AccountError> {
        let mut conn = self.db.conn().await?;
        let row = users::find_by_id(&mut conn, &id.to_string()).await?;
        row.map(to_user).transpose()
    }

    pub async fn list(&self, after: Option<Uuid>, limit: i64) -> Result<Vec<User>, AccountError> {
        let mut conn = self.db.conn().await?;
        let after = after.map(|id| id.to_string());
        let rows = users::list(&mut conn, after.as_deref(), limit).await?;
        rows.into_iter().map(to_user).collect()
    }

    /// Creates a user from validated input. A duplicate email is
    /// [`AccountError::EmailTaken`], decided by the unique index, so two
    /// concurrent registrations cannot both win.
    pub async fn create(&self, new: NewUser) -> Result<User, AccountError> {
        let hash = password::hash(new.password.expose().to_owned())
            .await
            .map_err(password_error)?;
        let id = Uuid::now_v7();
        let now = Utc::now().naive_utc();
        let id_text = id.to_string();
        let row = NewUserRow {
            id: &id_text,
            email: new.email.as_str(),
            name: new.name.as_str(),
            password_hash: &hash,
            role: new.role.as_str(),
            created_at: now,
            updated_at: now,
        };
        let mut conn = self.db.conn().await?;
        match users::insert(&mut conn, &row).await {
            Ok(row) => to_user(row),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Err(AccountError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the configured admin if no account has that email. An existing
    /// account is left as it is (its password is not reset).
    pub async fn ensure_bootstrap_admin(&self, auth: &AuthSettings) -> anyhow::Result<()> {
        use secrecy::ExposeSecret;
        let (Some(email), Some(password)) =
            (&auth.bootstrap_admin_email, &auth.bootstrap_admin_password)
        else {
            return Ok(());
        };
        let new = NewUser::parse(
            email,
            password.expose_secret(),
            "Administrator",
            Role::Admin,
        )
        .map_err(|errors| {
            let reasons: Vec<String> = errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect();
            anyhow::anyhow!("bootstrap admin is invalid: {}", reasons.join("; "))
        })?;
        match self.create(new).await {
            Ok(user) => {
                tracing::info!(user.id = %user.id, "created bootstrap admin");
                Ok(())
            }
            Err(AccountError::EmailTaken) => {
                let mut conn = self.db.conn().await?;
                let normalized = Email::parse(email).map_err(|e| anyhow::anyhow!(e.message))?;
                if let Some(row) = users::find_by_email(&mut conn, normalized.as_str()).await? {
                    if row.role != Role::Admin.as_str() {
                        tracing::warn!(user.id = %row.id, "bootstrap admin email belongs to a non-admin account; left unchanged");
                    }
                }
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!("creating bootstrap admin: {e}")),
        }
    }
}

fn password_error(e: password::HashError) -> AccountError {
    match e {
        password::HashError::Busy => AccountError::Overloaded,
        password::HashError::Failed(e) => AccountError::Internal(e),
    }
}

/// Rate-limit keys: a short digest, so that keys are bounded in size and
/// carry no personal data.
fn limit_key(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn to_user(row: UserRow) -> Result<User, AccountError> {
    let id = Uuid::parse_str(&row.id)
        .map_err(|e| anyhow::anyhow!("user id `{}` is not a UUID: {e}", row.id))?;
    let role = row.role.parse::<Role>().map_err(|e| anyhow::anyhow!(e))?;
    Ok(User {
        id,
        email: row.email,
        name: row.name,
        role,
        created_at: row.created_at.and_utc(),
    })
}
