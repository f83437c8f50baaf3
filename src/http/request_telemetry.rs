//! Per-request telemetry middleware: request ids, one tracing span per
//! request, and the `http_server_requests_seconds` metrics.
//!
//! A client's `X-Request-Id` is echoed if it is 1..=128 visible ASCII
//! characters; otherwise a fresh UUID is used. The metric's `uri` label is the
//! matched route template (never the raw path, which would explode the label
//! set); requests that match no route are labelled `UNMATCHED`.

use std::future::{ready, Ready};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage};
use futures_util::future::LocalBoxFuture;
use tracing::Instrument;

use crate::telemetry;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
pub const UNMATCHED_ROUTE: &str = "UNMATCHED";

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub struct RequestTelemetry;

impl<S, B> Transform<S, ServiceRequest> for RequestTelemetry
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = RequestTelemetryMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestTelemetryMiddleware { service }))
    }
}

pub struct RequestTelemetryMiddleware<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for RequestTelemetryMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let request_id =
            incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        req.extensions_mut().insert(RequestId(request_id.clone()));
        let method = method_label(req.method());
        let span = tracing::info_span!(
            "http.request",
            request.id = %request_id,
            http.method = %method,
            http.route = tracing::field::Empty,
            http.status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let fut = self.service.call(req);
        Box::pin(
            async move {
                let mut res = match fut.await {
                    Ok(res) => res,
                    Err(e) => {
                        // Inner layers answer with responses; an error that
                        // escapes them is turned into a response by actix
                        // itself. Count it before handing it on.
                        let status = e.as_response_error().status_code().as_u16();
                        telemetry::record_http_request(&method, UNMATCHED_ROUTE, status, started.elapsed());
                        tracing::warn!(http.status = status, error = %e, "request failed outside the handlers");
                        return Err(e);
                    }
                };
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
                let status = res.status().as_u16();
                let elapsed = started.elapsed();
                let span = tracing::Span::current();
                span.record("http.route", route.as_str());
                span.record("http.status", status);
                span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
                if res.status().is_server_error() {
                    tracing::warn!("request finished");
                } else {
                    tracing::info!("request finished");
                }
                telemetry::record_http_request(&method, &route, status, elapsed);
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    res.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                Ok(res)
            }
            .instrument(span),
        )
    }
}

/// Standard methods by name; anything else as `OTHER`, so that clients cannot
/// mint unbounded metric series with made-up methods.
fn method_label(method: &actix_web::http::Method) -> String {
    use actix_web::http::Method;
    let standard = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    if standard.contains(method) {
        method.as_str().to_owned()
    } else {
        "OTHER".to_owned()
    }
}

fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let valid = (1..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| value.to_owned())
}
