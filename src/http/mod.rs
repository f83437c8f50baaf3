//! The HTTP layer: a thin shell over the engine. Handlers extract, parse into
//! domain types, call a service, and map the result; business rules live in
//! `domain` and the services. Routes are declared here, in one place.

pub mod admission;
pub mod analytics;
pub mod auth;
pub mod carts;
pub mod client_ip;
pub mod errors;
pub mod extract;
pub mod idempotency;
pub mod identity;
pub mod integrations;
pub mod inventory;
pub mod openapi;
pub mod ops;
pub mod order_access;
pub mod orders;
pub mod pagination;
pub mod placing;
pub mod products;
pub mod request_telemetry;
pub mod sagas;
pub mod schemas;
pub mod users;
pub mod webhooks;
pub mod write_limits;

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
                .service(resource("/openapi.json").route(web::get().to(openapi::document)))
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
                .service(resource("/carts").route(web::post().to(carts::create)))
                .service(resource("/carts/{id}").route(web::get().to(carts::get)))
                .service(resource("/carts/{id}/items").route(web::post().to(carts::add_item)))
                .service(
                    resource("/carts/{id}/items/{sku}")
                        .route(web::put().to(carts::set_item))
                        .route(web::delete().to(carts::remove_item)),
                )
                .service(resource("/carts/{id}/checkout").route(web::post().to(carts::checkout)))
                .service(
                    resource("/orders")
                        .route(web::get().to(orders::list))
                        .route(web::post().to(orders::place)),
                )
                .service(resource("/orders/{id}").route(web::get().to(orders::get)))
                .service(resource("/orders/{id}/events").route(web::get().to(orders::events)))
                .service(resource("/orders/{id}/capture").route(web::post().to(orders::capture)))
                .service(resource("/orders/{id}/cancel").route(web::post().to(orders::cancel)))
                .service(resource("/orders/{id}/ship").route(web::post().to(orders::ship)))
                .service(resource("/orders/{id}/deliver").route(web::post().to(orders::deliver)))
                .service(resource("/orders/{id}/refunds").route(web::post().to(orders::refund)))
                .service(resource("/sagas").route(web::get().to(sagas::list)))
                .service(resource("/sagas/{id}").route(web::get().to(sagas::get)))
                .service(resource("/sagas/{id}/resume").route(web::post().to(sagas::resume)))
                .service(
                    resource("/webhooks")
                        .route(web::get().to(webhooks::list))
                        .route(web::post().to(webhooks::create)),
                )
                .service(resource("/webhooks/{id}").route(web::delete().to(webhooks::delete)))
                .service(
                    resource("/webhooks/{id}/deliveries")
                        .route(web::get().to(webhooks::deliveries)),
                )
                .service(
                    resource("/webhooks/deliveries/{delivery_id}/replay")
                        .route(web::post().to(webhooks::replay)),
                )
                .service(resource("/events.track").route(web::post().to(analytics::track)))
                .service(resource("/events").route(web::get().to(analytics::list)))
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
