//! Catalog products: validated input for creating and changing them.
//!
//! Money is an integer in minor units plus an ISO-4217 code; never a float.

use super::inventory::{Sku, MAX_STOCK_CHANGE};
use super::FieldError;

pub const MAX_AMOUNT: i64 = 1_000_000_000_000;
pub const NAME_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 5000;

/// An ISO-4217-shaped currency code: three upper-case letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Currency, FieldError> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Currency(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "currency",
                "must be a three-letter ISO-4217 code such as USD",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn parse_price(price: i64) -> Result<i64, FieldError> {
    if (0..=MAX_AMOUNT).contains(&price) {
        Ok(price)
    } else {
        Err(FieldError::new(
            "price",
            format!("must be between 0 and {MAX_AMOUNT} (minor units)"),
        ))
    }
}

fn parse_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    if name.is_empty()
        || name.chars().count() > NAME_MAX_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(FieldError::new(
            "name",
            format!("must be 1-{NAME_MAX_CHARS} characters without control characters"),
        ));
    }
    Ok(name.to_owned())
}

fn parse_description(raw: Option<&str>) -> Result<Option<String>, FieldError> {
    match raw {
        Some(d) if d.chars().count() > DESCRIPTION_MAX_CHARS => Err(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub currency: Currency,
    pub initial_stock: i64,
}

impl NewProduct {
    pub fn parse(
        sku: &str,
        name: &str,
        description: Option<&str>,
        price: i64,
        currency: &str,
        initial_stock: Option<i64>,
    ) -> Result<NewProduct, Vec<FieldError>> {
        let initial_stock = initial_stock.unwrap_or(0);
        let stock = if (0..=MAX_STOCK_CHANGE).contains(&initial_stock) {
            Ok(initial_stock)
        } else {
            Err(FieldError::new(
                "initial_stock",
                format!("must be between 0 and {MAX_STOCK_CHANGE}"),
            ))
        };
        match (
            Sku::parse(sku),
            parse_name(name),
            parse_description(description),
            parse_price(price),
            Currency::parse(currency),
            stock,
        ) {
            (Ok(sku), Ok(name), Ok(description), Ok(price), Ok(currency), Ok(initial_stock)) => {
                Ok(NewProduct {
                    sku,
                    name,
                    description,
                    price,
                    currency,
                    initial_stock,
                })
            }
            (sku, name, description, price, currency, stock) => Err([
                sku.err(),
                name.err(),
                description.err(),
                price.err(),
                currency.err(),
                stock.err(),
            ]
            .into_iter()
            .flatten()
            .collect()),
        }
    }
}

/// A partial change: `None` leaves a field as it is; `description:
/// Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price: Option<i64>,
    pub active: Option<bool>,
}

impl ProductPatch {
    pub fn parse(
        name: Option<&str>,
        description: Option<Option<&str>>,
        price: Option<i64>,
        active: Option<bool>,
    ) -> Result<ProductPatch, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = name.map(parse_name).transpose().unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let description = match description {
            None => None,
            Some(d) => match parse_description(d) {
                Ok(d) => Some(d),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let price = price.map(parse_price).transpose().unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        if name.is_none() && description.is_none() && price.is_none() && active.is_none() {
            return Err(vec![FieldError::new(
                "body",
                "must change at least one of name, description, price, active",
            )]);
        }
        Ok(ProductPatch {
            name,
            description,
            price,
            active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_product_reports_every_bad_field() {
        let errors = NewProduct::parse("bad sku", "", None, -1, "usd", Some(-5)).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["sku", "name", "price", "currency", "initial_stock"]
        );
    }

    #[test]
    fn price_is_bounded() {
        assert!(parse_price(0).is_ok());
        assert!(parse_price(MAX_AMOUNT).is_ok());
        assert!(parse_price(MAX_AMOUNT + 1).is_err());
    }

    #[test]
    fn empty_patch_is_refused() {
        assert!(ProductPatch::parse(None, None, None, None).is_err());
        assert!(ProductPatch::parse(None, Some(None), None, None).is_ok());
    }
}
