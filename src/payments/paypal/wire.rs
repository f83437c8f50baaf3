//! Reading PayPal's answers and writing its amounts: ids checked before they
//! go into a URL, money in PayPal's decimal strings, statuses, declines,
//! and error summaries that never carry a secret.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{Reply, DECLINE_ISSUES};
use crate::payments::{PaymentError, PaymentRequest, PaymentResult};

/// A PayPal id goes into a URL path: only the characters PayPal ids use.
pub(super) fn checked_id<'a>(what: &str, id: &'a str) -> Result<&'a str, PaymentError> {
    if !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(id)
    } else {
        Err(PaymentError::Permanent(format!("malformed PayPal {what}")))
    }
}

pub(super) fn reference(request: &PaymentRequest) -> Result<&str, PaymentError> {
    request.reference.as_deref().ok_or_else(|| {
        PaymentError::Permanent(format!(
            "{} needs the reference of an earlier step",
            request.operation.as_str()
        ))
    })
}

pub(super) fn money(request: &PaymentRequest) -> Result<Value, PaymentError> {
    Ok(json!({
        "currency_code": request.currency,
        "value": paypal_amount(request.amount, &request.currency)?,
    }))
}

/// `minor` units of `currency` as PayPal's exact decimal string.
pub fn paypal_amount(minor: i64, currency: &str) -> Result<String, PaymentError> {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(PaymentError::Permanent(
            "the currency must be an ISO 4217 code".to_owned(),
        ));
    }
    if minor < 0 {
        return Err(PaymentError::Permanent(
            "a payment amount cannot be negative".to_owned(),
        ));
    }
    let decimals: u32 = match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        // Two decimals in ISO 4217, whole units only at PayPal.
        "HUF" | "TWD" => {
            if minor % 100 != 0 {
                return Err(PaymentError::Permanent(format!(
                    "PayPal takes whole {currency} amounts only"
                )));
            }
            return Ok((minor / 100).to_string());
        }
        _ => 2,
    };
    if decimals == 0 {
        return Ok(minor.to_string());
    }
    let unit = 10_i64.pow(decimals);
    Ok(format!(
        "{}.{:0width$}",
        minor / unit,
        minor % unit,
        width = decimals as usize
    ))
}

pub(super) fn first_authorization(order: &Value) -> Option<&Value> {
    order
        .pointer("/purchase_units/0/payments/authorizations/0")
        .filter(|a| a.is_object())
}

pub(super) fn authorization_result(authorization: &Value) -> Result<PaymentResult, PaymentError> {
    match (id_of(authorization), status_of(authorization)) {
        (Some(id), "CREATED" | "PENDING" | "CAPTURED" | "PARTIALLY_CAPTURED") => {
            Ok(PaymentResult::Approved { reference: id })
        }
        (_, status @ ("DENIED" | "VOIDED" | "EXPIRED")) => {
            let detail = authorization
                .pointer("/status_details/reason")
                .and_then(Value::as_str)
                .and_then(code)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            Ok(PaymentResult::Declined {
                reason: format!("authorization {status}{detail}"),
            })
        }
        (_, status) => Err(unexpected("authorize", status)),
    }
}

pub(super) fn id_of(body: &Value) -> Option<String> {
    body.get("id")
        .and_then(Value::as_str)
        .filter(|id| checked_id("id", id).is_ok())
        .map(str::to_owned)
}

pub(super) fn status_of(body: &Value) -> &str {
    body.get("status").and_then(Value::as_str).unwrap_or("")
}

pub(super) fn unexpected(what: &str, status: &str) -> PaymentError {
    let status = code(status).unwrap_or("none");
    PaymentError::Permanent(format!("{what}: unexpected PayPal status {status}"))
}

/// A 422 whose issue is a payment decision.
pub(super) fn decline(reply: &Reply) -> Option<PaymentResult> {
    if reply.status != StatusCode::UNPROCESSABLE_ENTITY {
        return None;
    }
    issues(&reply.body)
        .find(|issue| DECLINE_ISSUES.contains(issue))
        .map(|issue| PaymentResult::Declined {
            reason: issue.to_owned(),
        })
}

pub(super) fn issues(body: &Value) -> impl Iterator<Item = &str> {
    body.get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("issue").and_then(Value::as_str))
}

/// PayPal's error codes, without free text, and without any secret.
pub(super) fn summarize(body: &Value, secrets: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for field in ["name", "error"] {
        if let Some(name) = body.get(field).and_then(Value::as_str).and_then(code) {
            parts.push(name.to_owned());
        }
    }
    parts.extend(issues(body).filter_map(code).map(str::to_owned));
    if let Some(id) = body.get("debug_id").and_then(Value::as_str).and_then(code) {
        parts.push(format!("debug_id {id}"));
    }
    let mut summary = parts.join(", ");
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        summary = summary.replace(secret, "[redacted]");
    }
    summary
}

/// `s` if it looks like a code (short, `[A-Za-z0-9_-]`), not free text.
pub(super) fn code(s: &str) -> Option<&str> {
    (!s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(s)
}

pub(super) fn status_error(what: &str, status: StatusCode, summary: &str) -> PaymentError {
    let message = if summary.is_empty() {
        format!("{what}: HTTP {}", status.as_u16())
    } else {
        format!("{what}: HTTP {} ({summary})", status.as_u16())
    };
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        PaymentError::Transient(message)
    } else {
        PaymentError::Permanent(message)
    }
}

/// A failure below HTTP. The error's own text is left out: it is not needed
/// and keeps the message free of anything the transport may quote.
pub(super) fn transport(what: &str, error: &reqwest::Error) -> PaymentError {
    if error.is_connect() {
        PaymentError::Transient(format!("{what}: cannot connect to PayPal"))
    } else if error.is_timeout() {
        PaymentError::Timeout
    } else if error.is_builder() {
        PaymentError::Permanent(format!("{what}: the request could not be built"))
    } else {
        PaymentError::Transient(format!("{what}: the connection to PayPal failed"))
    }
}
