//! Request extractors whose failures are [`ApiError`]s, so every bad input
//! gets the error envelope.
//!
//! [`Json`] reads at most `http.body_limit_bytes` (413 beyond), insists on a
//! JSON content type (415), tells malformed JSON (400 `invalid_json`) from
//! well-formed JSON of the wrong shape (422 `validation_failed`, naming the
//! field). serde_json's recursion limit bounds nesting depth.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::errors::ApiError;

/// The body limit, as app data, so extractors and the app agree on it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        read_json(req, payload)
    }
}

/// A JSON body that may be left out entirely (no body, no content type),
/// for commands whose every field is optional.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let empty = req.headers().get(header::CONTENT_TYPE).is_none()
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            return Box::pin(async { Ok(OptionalJson(None)) });
        }
        let read = read_json::<T>(req, payload);
        Box::pin(async move { read.await.map(|Json(v)| OptionalJson(Some(v))) })
    }
}

fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
) -> LocalBoxFuture<'static, Result<Json<T>, ApiError>> {
    {
        let limit = req
            .app_data::<web::Data<BodyLimit>>()
            .map(|l| l.0)
            .unwrap_or(65_536);
        let early = check_headers(req, limit);
        let mut payload = payload.take();
        Box::pin(async move {
            early?;
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|e| ApiError::InvalidJson(format!("could not read the body: {e}")))?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
    }
}

fn check_headers(req: &HttpRequest, limit: usize) -> Result<(), ApiError> {
    let is_json = match req.mime_type() {
        Ok(Some(mime)) => {
            mime.type_() == mime::APPLICATION
                && (mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
        }
        Ok(None) | Err(_) => false,
    };
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}

/// Parses `body` as `T`, classifying failures: not JSON at all (including
/// trailing garbage and excessive nesting) is 400; JSON that is not an object,
/// or an object of the wrong shape, is 422 naming the field. Every request
/// body of the API is a JSON object.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map_err(|e| ApiError::InvalidJson(strip_position(&e.to_string())))?;
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    // PostgreSQL text cannot hold NUL; no field of the API needs one.
    if contains_nul(body) {
        return Err(ApiError::field(
            "body",
            "strings must not contain NUL characters (\\u0000)",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        classify(&inner, &path)
    })
}

/// Whether valid JSON text holds a NUL character. JSON has backslashes only
/// inside strings, and a raw NUL is not valid JSON, so a NUL is a `\u0000`
/// whose backslash is not itself escaped (an even run of backslashes
/// precedes it).
fn contains_nul(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(at, window)| {
        window == b"\\u0000"
            && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

fn classify(err: &serde_json::Error, path: &str) -> ApiError {
    use serde_json::error::Category;
    let message = strip_position(&err.to_string());
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::InvalidJson(message),
        Category::Data => {
            // serde_path_to_error's path ends at the unknown field itself,
            // but stops at the parent of a missing one.
            let field = match named_field(&message) {
                Some(name) if path == "." => name.to_owned(),
                Some(name) if path.rsplit('.').next() != Some(name) => format!("{path}.{name}"),
                _ if path == "." => "body".to_owned(),
                _ => path.to_owned(),
            };
            ApiError::field(field, message)
        }
    }
}

/// serde names the culprit of missing and unknown fields in backticks.
fn named_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Query-string failures become 400 `invalid_query`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::InvalidQuery(err.to_string()).into())
}

/// A path segment that does not parse names nothing that exists: 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err, _req| ApiError::NotFound.into())
}

/// A sku in a path that is not a valid sku names nothing: 404.
pub fn path_sku(raw: &str) -> Result<crate::domain::inventory::Sku, ApiError> {
    crate::domain::inventory::Sku::parse(raw).map_err(|_| ApiError::NotFound)
}

/// An id in a path that is not a UUID names nothing: 404.
pub fn path_uuid(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        count: u32,
    }

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::Validation(fields) => fields.keys().next().unwrap().clone(),
            other => panic!("expected validation, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_invalid_json() {
        assert!(matches!(
            parse_json::<Body>(b"{\"email\": "),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(b"not json"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"email":"a","count":1} trailing"#),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"email":"a"} trailing"#),
            Err(ApiError::InvalidJson(_))
        ));
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"count":1}"#).unwrap_err()),
            "email"
        );
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"email":"a","count":-1}"#).unwrap_err()),
            "count"
        );
        assert_eq!(
            field_of(parse_json::<Body>(br#"{"email":"a","count":1,"admin":true}"#).unwrap_err()),
            "admin"
        );
        assert_eq!(
            field_of(parse_json::<Body>(br#"["a", 1]"#).unwrap_err()),
            "body"
        );
        assert_eq!(field_of(parse_json::<Body>(b"42").unwrap_err()), "body");
    }

    #[test]
    fn nul_characters_are_refused_but_escaped_backslashes_are_not_nul() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Text {
            text: String,
        }
        for nul in [
            r#"{"text":"a\u0000b"}"#,
            r#"{"text":"\\\u0000"}"#,
            r#"{"\u0000":1,"text":""}"#,
        ] {
            assert_eq!(
                field_of(parse_json::<Text>(nul.as_bytes()).unwrap_err()),
                "body",
                "{nul}"
            );
        }
        for fine in [
            r#"{"text":"\\u0000"}"#,
            r#"{"text":"u0000"}"#,
            r#"{"text":"\\\\u0000"}"#,
        ] {
            assert!(parse_json::<Text>(fine.as_bytes()).is_ok(), "{fine}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse_json::<serde_json::Value>(deep.as_bytes()),
            Err(ApiError::InvalidJson(_))
        ));
    }
}
