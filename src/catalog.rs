//! Catalog use cases: create, read, list and change products. Stock changes
//! go through the SKU actors (`inventory::Inventory`). Single-product reads are
//! served from the product cache, which every product or stock write
//! invalidates before it is acknowledged (see `cache`); misses read the
//! database, which every engine process writes through.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::cache::{Lookup, ProductCache};
use crate::db::inventory::{InventoryRow, NewMovementRow};
use crate::db::products::{self, NewProductRow, ProductChanges, ProductRow};
use crate::db::{Database, DbError};
use crate::domain::inventory::{MovementKind, Sku, StockLevels};
use crate::domain::product::{NewProduct, ProductPatch};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("a product with this sku already exists")]
    SkuTaken,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for CatalogError {
    fn from(e: diesel::result::Error) -> Self {
        CatalogError::Db(DbError::Query(e))
    }
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Availability {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

impl From<StockLevels> for Availability {
    fn from(l: StockLevels) -> Self {
        Availability {
            on_hand: l.on_hand,
            reserved: l.reserved,
            available: l.available(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub currency: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<Availability>,
}

impl Product {
    fn from_rows(row: ProductRow, stock: Option<&InventoryRow>) -> Product {
        Product {
            sku: row.sku,
            name: row.name,
            description: row.description,
            price: row.price,
            currency: row.currency,
            active: row.active,
            created_at: row.created_at.and_utc(),
            updated_at: row.updated_at.and_utc(),
            availability: stock.map(|s| {
                StockLevels {
                    on_hand: s.on_hand,
                    reserved: s.reserved,
                }
                .into()
            }),
        }
    }
}

#[derive(Clone)]
pub struct Catalog {
    db: Database,
    cache: ProductCache,
}

impl Catalog {
    pub fn new(db: Database, cache: ProductCache) -> Catalog {
        Catalog { db, cache }
    }

    /// The product as a JSON document, from the cache when it holds the
    /// current one, else from the database (and then cached).
    /// Drops `sku` from the product cache after a stock write made outside
    /// the SKU actors (the baseline checkout).
    pub async fn invalidate(&self, sku: &str) {
        self.cache.invalidate(sku).await;
    }

    pub async fn get_document(&self, sku: &Sku) -> Result<Option<Arc<str>>, CatalogError> {
        let tag = match self.cache.lookup(sku.as_str()).await {
            Lookup::Hit(document) => return Ok(Some(document)),
            Lookup::Miss(tag) => Some(tag),
            Lookup::Bypass => None,
        };
        let Some(product) = self.get(sku).await? else {
            return Ok(None);
        };
        let document: Arc<str> = serde_json::to_string(&product)
            .map_err(|e| CatalogError::Db(DbError::Unavailable(format!("encoding product: {e}"))))?
            .into();
        if let Some(tag) = tag {
            self.cache.store(sku.as_str(), tag, &document).await;
        }
        Ok(Some(document))
    }

    /// Creates the product and its stock, with the `initial` ledger entry, in
    /// one transaction. A duplicate sku is [`CatalogError::SkuTaken`].
    pub async fn create(&self, new: &NewProduct) -> Result<Product, CatalogError> {
        let now = Utc::now().naive_utc();
        let row = NewProductRow {
            sku: new.sku.as_str(),
            name: &new.name,
            description: new.description.as_deref(),
            price: new.price,
            currency: new.currency.as_str(),
            active: true,
            created_at: now,
            updated_at: now,
        };
        let initial = (new.initial_stock > 0).then(|| NewMovementRow {
            id: Uuid::now_v7().to_string(),
            sku: new.sku.as_str().to_owned(),
            kind: MovementKind::Initial.as_str().to_owned(),
            on_hand_delta: new.initial_stock,
            reserved_delta: 0,
            order_id: None,
            note: None,
            created_at: now,
        });
        // The connection goes back to the pool before the cache is awaited.
        let created = {
            let mut conn = self.db.conn().await?;
            products::create_with_stock(&mut conn, &row, new.initial_stock, initial.as_ref()).await
        };
        match created {
            Ok((product, stock)) => {
                self.cache.invalidate(new.sku.as_str()).await;
                Ok(Product::from_rows(product, Some(&stock)))
            }
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Err(CatalogError::SkuTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get(&self, sku: &Sku) -> Result<Option<Product>, CatalogError> {
        let mut conn = self.db.conn().await?;
        let found = products::find(&mut conn, sku.as_str()).await?;
        Ok(found.map(|(row, stock)| Product::from_rows(row, Some(&stock))))
    }

    pub async fn list(
        &self,
        after: Option<&Sku>,
        limit: i64,
        include_inactive: bool,
    ) -> Result<Vec<Product>, CatalogError> {
        let mut conn = self.db.conn().await?;
        let rows =
            products::list(&mut conn, after.map(Sku::as_str), limit, include_inactive).await?;
        Ok(rows
            .into_iter()
            .map(|row| Product::from_rows(row, None))
            .collect())
    }

    pub async fn patch(
        &self,
        sku: &Sku,
        patch: ProductPatch,
    ) -> Result<Option<Product>, CatalogError> {
        let changes = ProductChanges {
            name: patch.name,
            description: patch.description,
            price: patch.price,
            active: patch.active,
            updated_at: Some(Utc::now().naive_utc()),
        };
        let mut conn = self.db.conn().await?;
        if products::update(&mut conn, sku.as_str(), &changes)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        drop(conn);
        self.cache.invalidate(sku.as_str()).await;
        self.get(sku).await
    }
}
