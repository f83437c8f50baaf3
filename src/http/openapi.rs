//! The OpenAPI 3 document of the whole API, served at
//! `GET /api/v1/openapi.json` (no token needed).
//!
//! Each handler describes itself with `#[utoipa::path]` next to its code,
//! and the body and view structs derive their schemas, so the document
//! follows the code. What applies across routes is added here, in one pass
//! over every operation ([`CrossCutting`]), so no route can forget it:
//! - `X-Request-Id` on every response;
//! - 401 `unauthorized` (with `WWW-Authenticate`) where a bearer token is required;
//! - 400 `invalid_json`, 413, 415 and 422 `validation_failed` where there is a body;
//! - 429 `rate_limited` (with `Retry-After`) on every write under `/api/v1`;
//! - 503 `overloaded`/`unavailable` (with `Retry-After`) on every route
//!   admission control can shed;
//! - `Idempotency-Key` and its outcomes on the commands that move money or stock.
//!
//! The unit tests below check that every route declared in `http::routes`
//! is in the document and that the document has no route the engine lacks.

use actix_web::HttpResponse;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, OpenApi as OpenApiDoc, Ref, RefOr, Required, Response, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};

use super::schemas::{ErrorBody, ErrorEnvelope};
use super::{
    analytics, auth, carts, integrations, inventory, ops, orders, products, sagas, users, webhooks,
};
use crate::orders::views::string_enum;

/// The name of the bearer-JWT security scheme in the document.
pub const BEARER: &str = "bearer";

/// Routes whose answers admission control never sheds (`http::admission`).
const NEVER_SHED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The commands that honour `Idempotency-Key` (api.md, Idempotency).
pub const IDEMPOTENT: [(&str, &str); 5] = [
    ("post", "/api/v1/carts/{id}/checkout"),
    ("post", "/api/v1/orders"),
    ("post", "/api/v1/orders/{id}/refunds"),
    ("post", "/api/v1/orders/{id}/cancel"),
    ("post", "/api/v1/orders/{id}/capture"),
];

/// Routes that read their body as raw bytes (they check a signature over
/// it) and so take any content type.
const RAW_BODY: [&str; 1] = ["/api/v1/integrations/stoq/events"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        version = "1",
        description = "The orderflow REST API, v1. JSON in and out; money in integer minor \
units with an ISO-4217 currency; ids are UUIDs except products, keyed by sku. Every error \
has the envelope `{\"error\": {\"code\", \"message\", \"details\"}}` with a stable snake_case \
`code`; `details` is always an object. Lists take `limit` (1..=200, default 50) and an \
opaque `cursor` and answer `{\"items\", \"next_cursor\"}`. A path or method that matches no \
route answers 404 `not_found` or 405 `method_not_allowed`.",
        license(name = "Apache-2.0")
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        ops::versions,
        document,
        auth::register,
        auth::login,
        users::me,
        users::list,
        products::list,
        products::create,
        products::get,
        products::patch,
        inventory::get,
        inventory::restock,
        inventory::adjust,
        carts::create,
        carts::get,
        carts::add_item,
        carts::set_item,
        carts::remove_item,
        carts::checkout,
        orders::list,
        orders::place,
        orders::get,
        orders::events,
        orders::capture,
        orders::cancel,
        orders::ship,
        orders::deliver,
        orders::refund,
        sagas::list,
        sagas::get,
        sagas::resume,
        integrations::stoq_events,
        webhooks::create,
        webhooks::list,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::replay,
        analytics::track,
        analytics::list,
    ),
    components(schemas(ErrorEnvelope, ErrorBody)),
    modifiers(&CrossCutting),
    tags(
        (name = "ops", description = "Liveness, readiness, metrics and versions (outside /api/v1)"),
        (name = "auth", description = "Accounts and access tokens"),
        (name = "users", description = "Accounts"),
        (name = "products", description = "The catalog: admin writes, public reads"),
        (name = "inventory", description = "Stock of each sku (admin)"),
        (name = "carts", description = "A customer's carts and their checkout"),
        (name = "orders", description = "Orders, their audit trail and life-cycle commands"),
        (name = "sagas", description = "Inspection of checkout sagas; resuming a stuck one"),
        (name = "integrations", description = "Inbound events from other systems"),
        (name = "webhooks", description = "Endpoints that receive domain events, signed; their deliveries and replays (admin)"),
        (name = "analytics", description = "Tracking analytics events; listing recorded events (admin)"),
    )
)]
pub struct ApiDoc;

/// The document, with everything [`CrossCutting`] adds.
pub fn document_json() -> OpenApiDoc {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This OpenAPI 3 document", content_type = "application/json", body = Object))
)]
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(document_json())
}

/// Adds what applies across routes (see the module docs).
struct CrossCutting;

impl Modify for CrossCutting {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /auth/register` or `POST /auth/login`: \
                         a JWT signed HS256 with claims `sub`, `role`, `iat`, `exp`.",
                    ))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with(super::API_PREFIX);
            let operations = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(op) = operation.as_mut() else {
                    continue;
                };
                let write = method != "get";
                // Handler names repeat across modules (`create`, `get`): the
                // tag (the module) makes operation ids unique.
                if let (Some(tag), Some(id)) = (
                    op.tags.as_ref().and_then(|t| t.first()),
                    op.operation_id.as_mut(),
                ) {
                    *id = format!("{tag}_{id}");
                }
                if token_required(op) {
                    add_error(
                        op,
                        401,
                        "`unauthorized`: the bearer token is missing, malformed, forged, \
                         expired or not HS256, or its account no longer exists",
                        &["WWW-Authenticate"],
                    );
                }
                if let Some(body) = op.request_body.as_mut() {
                    optional_body_is_not_nullable(body);
                    describe_body_errors(op, path);
                }
                if IDEMPOTENT.contains(&(method, path.as_str())) {
                    describe_idempotency(op);
                }
                if api && write {
                    add_error(
                        op,
                        429,
                        "`rate_limited`: too many writes from this user or client address \
                         (or, on login, too many failed attempts); retry after `Retry-After` \
                         seconds (also in `details.retry_after_s`)",
                        &["Retry-After"],
                    );
                }
                if !NEVER_SHED.contains(&path.as_str()) {
                    add_error(
                        op,
                        503,
                        "`overloaded`: the engine is at capacity (more than \
                         `http.max_in_flight` requests, or an actor's mailbox is full); \
                         `unavailable`: a dependency the route needs (the database) cannot be \
                         reached. Retry after `Retry-After` seconds",
                        &["Retry-After"],
                    );
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "X-Request-Id".to_owned(),
                            header(
                                "The request's id: the client's own if it sent a valid one \
                                 (1..=128 visible ASCII characters), else a fresh UUID",
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Whether `op` needs a token: it has security requirements and none of
/// them is the empty (anonymous) one.
fn token_required(op: &Operation) -> bool {
    op.security
        .as_ref()
        .is_some_and(|reqs| !reqs.is_empty() && !reqs.iter().any(|r| r == &Default::default()))
}

/// utoipa writes an optional body (`request_body = Option<T>`) as not
/// required, with the schema `oneOf: [null, T]`. The body may be left out,
/// but a JSON `null` body is not an object, so it is refused (422): the
/// schema is `T` alone.
fn optional_body_is_not_nullable(body: &mut RequestBody) {
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let not_null: Vec<_> = one_of
            .items
            .iter()
            .filter(
                |s| !matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == Type::Null.into()),
            )
            .cloned()
            .collect();
        if let [only] = not_null.as_slice() {
            content.schema = Some(only.clone());
        }
    }
}

fn describe_body_errors(op: &mut Operation, path: &str) {
    add_error(
        op,
        400,
        "`invalid_json`: the body is not JSON (syntax, trailing characters, nesting too deep)",
        &[],
    );
    add_error(
        op,
        413,
        "`payload_too_large`: the body is larger than `http.body_limit_bytes` (default 64 KiB); \
         `details.limit_bytes`",
        &[],
    );
    if !RAW_BODY.contains(&path) {
        add_error(
            op,
            415,
            "`unsupported_media_type`: the body's `Content-Type` is not `application/json` \
             (or `application/*+json`)",
            &[],
        );
    }
    add_error(
        op,
        422,
        "`validation_failed`: well-formed JSON that is not valid: a missing, unknown or \
         mistyped field, a value out of bounds, or a body that is not a JSON object; \
         `details.fields` maps each bad field to a reason",
        &[],
    );
}

fn describe_idempotency(op: &mut Operation) {
    let key = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes the command safe to retry. Scope: the authenticated user; kept 24 hours. \
             The same key with the same method, path and body replays the first response \
             (same status and body, plus `Idempotent-Replayed: true`) and the effect happens \
             once. A request refused before any effect (400, 401, 403, 404, 413, 415, 422 \
             validation, 429, 503, 409 `invalid_transition` or `cart_checked_out`) is not \
             stored. A retry of a request that crashed after its effect answers from what the \
             effect made. A malformed key is 422 `validation_failed`.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!-~]{1,255}$")),
        ))
        .build();
    op.parameters.get_or_insert_with(Vec::new).push(key);
    for (status, response) in op.responses.responses.iter_mut() {
        if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
            response.headers.insert(
                "Idempotent-Replayed".to_owned(),
                HeaderBuilder::new()
                    .schema(string_enum(["true"]))
                    .description(Some(
                        "`true` when this is the stored response of an earlier request with \
                         the same Idempotency-Key; absent otherwise",
                    ))
                    .build(),
            );
        }
    }
    add_error(
        op,
        409,
        "`idempotency_key_in_use`: a request with this Idempotency-Key is still running",
        &[],
    );
    add_error(
        op,
        422,
        "`idempotency_key_reused`: this Idempotency-Key was used with a different method, \
         path or body; `validation_failed` (field `Idempotency-Key`): the key is not 1-255 \
         visible ASCII characters, or was sent twice",
        &[],
    );
}

fn header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

/// Adds an error response with `description` (a code and when it is given)
/// and `headers`, or adds them to the response the handler already declares
/// for `status`.
fn add_error(op: &mut Operation, status: u16, description: &str, headers: &[&str]) {
    let entry = op
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description("")
                    .content("application/json", error_content())
                    .build(),
            )
        });
    let RefOr::T(response) = entry else {
        return;
    };
    append(response, description);
    for name in headers {
        let text = match *name {
            "Retry-After" => "Seconds to wait before retrying (at least 1)",
            "WWW-Authenticate" => "`Bearer`",
            _ => "",
        };
        response
            .headers
            .entry((*name).to_owned())
            .or_insert_with(|| header(text));
    }
}

fn append(response: &mut Response, description: &str) {
    if response.description.contains(description) {
        return;
    }
    if !response.description.is_empty() {
        response.description.push_str(". ");
    }
    response.description.push_str(description);
}

fn error_content() -> Content {
    Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorEnvelope"))))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// (method, path) of every route declared in `http::routes`, read from
    /// its source: each `resource("...")` with the `web::<method>()` routes
    /// that follow it, prefixed with `/api/v1` inside the API scope.
    fn declared_routes() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let start = source
            .find("pub fn routes(")
            .expect("http::routes is declared in mod.rs");
        let end = start
            + source[start..]
                .find("\n}\n")
                .expect("the end of http::routes");
        let body = &source[start..end];
        let scope_at = body.find("web::scope(API_PREFIX)").expect("the API scope");
        let mut routes = BTreeSet::new();
        let pieces: Vec<(usize, &str)> = body.match_indices("resource(\"").collect();
        for (i, (at, _)) in pieces.iter().enumerate() {
            let rest = &body[at + "resource(\"".len()..];
            let path = &rest[..rest.find('"').expect("a closing quote")];
            let until = pieces.get(i + 1).map_or(body.len(), |(next, _)| *next);
            let segment = &body[*at..until];
            let prefix = if *at > scope_at {
                super::super::API_PREFIX
            } else {
                ""
            };
            for method in ["get", "post", "put", "patch", "delete"] {
                if segment.contains(&format!("web::{method}()")) {
                    routes.insert((method.to_owned(), format!("{prefix}{path}")));
                }
            }
        }
        routes
    }

    fn documented_routes() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(document_json()).unwrap();
        let mut routes = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                routes.insert((method.clone(), path.clone()));
            }
        }
        routes
    }

    #[test]
    fn every_declared_route_is_documented_and_nothing_else() {
        let declared = declared_routes();
        assert!(
            declared.len() > 30,
            "the route table was read: {declared:?}"
        );
        let documented = documented_routes();
        let missing: Vec<_> = declared.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "routes missing from the document: {missing:?}"
        );
        let extra: Vec<_> = documented.difference(&declared).collect();
        assert!(
            extra.is_empty(),
            "documented routes the engine lacks: {extra:?}"
        );
    }

    #[test]
    fn document_is_openapi_3_with_the_bearer_scheme_and_unique_operation_ids() {
        let doc = serde_json::to_value(document_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "operationId {id} is repeated");
            }
        }
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn every_operation_has_responses_with_request_ids_and_api_routes_can_be_shed() {
        let doc = serde_json::to_value(document_json()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|s| s.starts_with('2')),
                    "{method} {path} has a success response"
                );
                for (status, response) in responses {
                    assert!(
                        response["headers"]["X-Request-Id"].is_object(),
                        "{method} {path} {status} names X-Request-Id"
                    );
                    let readiness = path == "/readyz" && status == "503";
                    if !status.starts_with('2') && !readiness {
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorEnvelope",
                            "{method} {path} {status} is an error envelope"
                        );
                    }
                }
                if path.starts_with("/api/v1") {
                    assert!(responses.contains_key("503"), "{method} {path} 503");
                    if method != "get" {
                        assert!(responses.contains_key("429"), "{method} {path} 429");
                    }
                }
                if op["requestBody"].is_object() {
                    for status in ["400", "413", "422"] {
                        assert!(responses.contains_key(status), "{method} {path} {status}");
                    }
                }
            }
        }
    }

    #[test]
    fn idempotent_commands_take_the_key_and_say_what_it_does() {
        let doc = serde_json::to_value(document_json()).unwrap();
        for (method, path) in IDEMPOTENT {
            let op = &doc["paths"][path][method];
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
                "{method} {path}"
            );
            let text = op["responses"].to_string();
            for code in [
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "Idempotent-Replayed",
            ] {
                assert!(text.contains(code), "{method} {path} names {code}");
            }
        }
    }
}
