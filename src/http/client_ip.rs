//! The client's address, for per-IP rate limits: the TCP peer, unless the
//! peer is one of `http.trusted_proxies`; then the address that proxy (and
//! any trusted proxy before it) forwarded in `X-Forwarded-For`. Only trusted
//! hops are believed: a client cannot pick its own address by sending the
//! header, since the nearest untrusted hop is taken.

use std::net::IpAddr;

use actix_web::{web, HttpRequest};

pub use crate::domain::network::TrustedProxies;

/// `http.trusted_proxies` applied to requests.
pub trait ClientAddress {
    /// The client address of a request, from its peer and headers.
    fn of(&self, req: &HttpRequest) -> Option<IpAddr>;
}

impl ClientAddress for TrustedProxies {
    fn of(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.client_ip(
            req.peer_addr().map(|a| a.ip()),
            req.headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok()),
        )
    }
}

/// The client address of `req` under the app's trusted proxies.
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    match req.app_data::<web::Data<TrustedProxies>>() {
        Some(trusted) => trusted.of(req),
        None => req.peer_addr().map(|a| a.ip()),
    }
}
