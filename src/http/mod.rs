//! The HTTP layer: a thin shell over the engine. Handlers extract, parse into
//! domain types, call a service, and map the result; business rules live in
//! `domain` and the services. Routes are declared here, in one place.

pub mod admission;
pub mod auth;
pub mod errors;
pub mod extract;
pub mod identity;
pub mod integrations;
pub mod inventory;
pub mod ops;
pub mod pagination;
pub mod products;
pub mod request_telemetry;
pub mod users;

use actix_web::web;

use errors::ApiError;

pub const API_PREFIX: &str = "/api/v1";

/// Every route of the engine.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(extract::query_config())
        .app_data(extract::path_config())
        .service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .service(resource("/api/versions").route(web::get().to(ops::versions)))
        .service(
            web::scope(API_PREFIX)
                .service(resource("/auth/register").route(web::post().to(auth::register)))
                .service(resource("/auth/login").route(web::post().to(auth::login)))
                .service(resource("/users/me").route(web::get().to(users::me)))
                .service(resource("/users").route(web::get().to(users::list)))
                .service(
                    resource("/products")
                        .route(web::get().to(products::list))
                        .route(web::post().to(products::create)),
                )
                .service(
                    resource("/products/{sku}")
                        .route(web::get().to(products::get))
                        .route(web::patch().to(products::patch)),
                )
                .service(resource("/inventory/{sku}").route(web::get().to(inventory::get)))
                .service(
                    resource("/inventory/{sku}/restock").route(web::post().to(inventory::restock)),
                )
                .service(
                    resource("/inventory/{sku}/adjust").route(web::post().to(inventory::adjust)),
                )
                .service(
                    resource("/integrations/stoq/events")
                        .route(web::post().to(integrations::stoq_events)),
                )
                .default_service(web::to(not_found)),
        )
        .default_service(web::to(not_found));
}

/// A resource whose known path with an unknown method is 405, not 404.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
