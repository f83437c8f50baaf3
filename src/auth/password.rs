//! argon2id password hashes in PHC string format.
//!
//! Hashing is deliberately slow (about 20 ms and 19 MiB each), so both
//! operations run on the blocking pool, never on an async worker thread, and
//! at most two per core run at once: a flood of registrations or logins
//! queues briefly and then gets 503 instead of exhausting memory and CPU.
//! The limit is process-wide because the CPU and memory it guards are.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

/// How long a request waits for a hashing slot before it is shed.
const SLOT_WAIT: Duration = Duration::from_secs(5);

static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new(cores * 2)
});

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing is at capacity")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

async fn with_slot<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashError> {
    let _slot = tokio::time::timeout(SLOT_WAIT, SLOTS.acquire())
        .await
        .map_err(|_| HashError::Busy)?
        .map_err(|_| HashError::Busy)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HashError::Failed(anyhow::anyhow!("password task failed: {e}")))
}

/// Hashes `password` with argon2id and a random salt.
pub async fn hash(password: String) -> Result<String, HashError> {
    with_slot(move || hash_blocking(&password))
        .await?
        .map_err(HashError::Failed)
}

/// True when `password` matches `phc`. A malformed stored hash counts as a
/// mismatch (and is logged), never as a success.
pub async fn verify(password: String, phc: String) -> Result<bool, HashError> {
    with_slot(move || verify_blocking(&password, &phc)).await
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored password hash is malformed");
            false
        }
    }
}

/// A valid hash of a random password, checked against when the account does
/// not exist so that a login for an unknown email costs the same time as one
/// with a wrong password. Computed once; call it at start-up (off the async
/// workers) so no request pays for it.
pub fn dummy_hash() -> &'static str {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_blocking(&uuid::Uuid::new_v4().to_string())
            .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$invalid".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify_round_trips() {
        let phc = hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!verify("wrong horse".into(), phc).await.unwrap());
    }

    #[tokio::test]
    async fn malformed_hash_never_verifies() {
        assert!(!verify("x".into(), "not-a-hash".into()).await.unwrap());
    }
}
