//! Users: email addresses, passwords, display names and roles.
//!
//! Emails are normalised (trimmed, lower-cased) so that uniqueness and login
//! do not depend on how a client typed them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::FieldError;

pub const PASSWORD_MIN_CHARS: usize = 8;
/// Bounds the cost of hashing a hostile input.
pub const PASSWORD_MAX_CHARS: usize = 1024;
pub const NAME_MAX_CHARS: usize = 200;
pub const EMAIL_MAX_CHARS: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, FieldError> {
        let email = raw.trim().to_lowercase();
        let invalid = || FieldError::new("email", "must be a valid email address");
        if email.is_empty() || email.chars().count() > EMAIL_MAX_CHARS {
            return Err(invalid());
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plaintext password that meets the policy. Deliberately not `Debug`-printable.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Password, FieldError> {
        let chars = raw.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(FieldError::new(
                "password",
                format!("must be at least {PASSWORD_MIN_CHARS} characters"),
            ));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(FieldError::new(
                "password",
                format!("must be at most {PASSWORD_MAX_CHARS} characters"),
            ));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<UserName, FieldError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        if name.chars().count() > NAME_MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!("must be at most {NAME_MAX_CHARS} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(UserName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Role::Customer),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role `{other}`")),
        }
    }
}

/// Everything needed to create a user, already validated.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub name: UserName,
    pub role: Role,
}

impl NewUser {
    /// Validates every field and reports all failures at once.
    pub fn parse(
        email: &str,
        password: &str,
        name: &str,
        role: Role,
    ) -> Result<NewUser, Vec<FieldError>> {
        let email = Email::parse(email);
        let password = Password::parse(password);
        let name = UserName::parse(name);
        match (email, password, name) {
            (Ok(email), Ok(password), Ok(name)) => Ok(NewUser {
                email,
                password,
                name,
                role,
            }),
            (email, password, name) => Err([email.err(), password.err(), name.err()]
                .into_iter()
                .flatten()
                .collect()),
        }
    }
}

/// A user as the rest of the engine sees it (never the password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@.example.com",
            "ada@example..com",
            "ada@example.com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn password_needs_eight_characters() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(PASSWORD_MAX_CHARS + 1)).is_err());
    }

    #[test]
    fn password_is_not_printed() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(UserName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(UserName::parse("   ").is_err());
        assert!(UserName::parse(&"n".repeat(NAME_MAX_CHARS + 1)).is_err());
        assert!(UserName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn new_user_reports_every_invalid_field() {
        let errors = NewUser::parse("nope", "short", "", Role::Customer).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["email", "password", "name"]);
    }

    #[test]
    fn role_round_trips() {
        for role in [Role::Customer, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
