//! Identity: password hashing, access tokens, and the account use cases
//! (register, login, bootstrap admin) that the HTTP layer calls.

pub mod accounts;
pub mod password;
pub mod token;
