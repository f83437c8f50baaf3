//! Admission control: at most `http.max_in_flight` requests are handled at
//! once. Beyond that the engine answers 503 `overloaded` with `Retry-After`
//! immediately instead of queueing, so latency of admitted requests stays
//! bounded under any load. Health, readiness and metrics are never shed, so
//! operators can see an overloaded engine.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{Error, ResponseError};
use futures_util::future::LocalBoxFuture;
use tokio::sync::Semaphore;

use super::errors::ApiError;
use crate::telemetry::REQUESTS_SHED;

const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
}

impl Admission {
    pub fn new(max_in_flight: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Admission
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = AdmissionMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AdmissionMiddleware {
            service,
            permits: self.permits.clone(),
        }))
    }
}

pub struct AdmissionMiddleware<S> {
    service: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<ServiceRequest> for AdmissionMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if NEVER_SHED.contains(&req.path()) {
            let fut = self.service.call(req);
            return Box::pin(async move { fut.await.map(ServiceResponse::map_into_left_body) });
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let fut = self.service.call(req);
                Box::pin(async move {
                    let res = fut.await;
                    drop(permit);
                    res.map(ServiceResponse::map_into_left_body)
                })
            }
            Err(_) => {
                metrics::counter!(REQUESTS_SHED).increment(1);
                let response = ApiError::Overloaded.error_response();
                Box::pin(async move { Ok(req.into_response(response).map_into_right_body()) })
            }
        }
    }
}
