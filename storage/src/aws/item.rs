//! DynamoDB item helpers: building attribute values and reading typed fields back with a clear error.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use eventfleet_schema::Timestamp;

use crate::StorageError;

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// Every item a scan finds, page after page (the SDK's paginator follows `LastEvaluatedKey`).
pub(super) async fn scan_all(
    scan: aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
    what: &str,
) -> Result<Vec<Item>, StorageError> {
    let mut items = scan.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(item) = items.next().await {
        out.push(item.map_err(|e| super::unavailable(what, e))?);
    }
    Ok(out)
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn ts(t: Timestamp) -> AttributeValue {
    n(t.as_millis())
}

/// The TTL attribute for an expiry: epoch seconds, rounded up so DynamoDB never deletes an item before
/// `expires_at` (reads filter on the exact milliseconds).
pub fn ttl(expires_at: Timestamp) -> AttributeValue {
    n(expires_at.as_millis().div_euclid(1000) + 1)
}

/// Typed reads of an item's fields.
pub struct Reader<'a> {
    item: &'a Item,
    table: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, table: &'static str) -> Self {
        Self { item, table }
    }

    fn corrupt(&self, field: &str, what: &str) -> StorageError {
        StorageError::Corrupt(format!("{} item: field {field} {what}", self.table))
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<String>, StorageError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.corrupt(field, "is not a string")),
        }
    }

    pub fn str(&self, field: &str) -> Result<String, StorageError> {
        self.opt_str(field)?.ok_or_else(|| self.corrupt(field, "is missing"))
    }

    pub fn opt_i64(&self, field: &str) -> Result<Option<i64>, StorageError> {
        match self.item.get(field) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.corrupt(field, "is not an integer")),
            Some(_) => Err(self.corrupt(field, "is not a number")),
        }
    }

    pub fn i64(&self, field: &str) -> Result<i64, StorageError> {
        self.opt_i64(field)?.ok_or_else(|| self.corrupt(field, "is missing"))
    }

    pub fn u32(&self, field: &str) -> Result<u32, StorageError> {
        u32::try_from(self.i64(field)?).map_err(|_| self.corrupt(field, "is out of range"))
    }

    pub fn ts(&self, field: &str) -> Result<Timestamp, StorageError> {
        self.i64(field).map(Timestamp::from_millis)
    }

    pub fn opt_ts(&self, field: &str) -> Result<Option<Timestamp>, StorageError> {
        Ok(self.opt_i64(field)?.map(Timestamp::from_millis))
    }

    pub fn bool(&self, field: &str) -> Result<bool, StorageError> {
        match self.item.get(field) {
            Some(AttributeValue::Bool(v)) => Ok(*v),
            Some(_) => Err(self.corrupt(field, "is not a boolean")),
            None => Err(self.corrupt(field, "is missing")),
        }
    }

    /// Parses a string field with `parse`, naming the field when it fails.
    pub fn parsed<T>(&self, field: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, StorageError> {
        let text = self.str(field)?;
        parse(&text).ok_or_else(|| self.corrupt(field, &format!("has an unknown value {text:?}")))
    }
}
