//! Shared rules for the engine's own outbound HTTP (payment provider,
//! webhooks).

use std::net::IpAddr;

use reqwest::Url;

/// True for `localhost` and loopback addresses: such requests never go
/// through the environment's proxy, which could not reach them.
pub fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}
