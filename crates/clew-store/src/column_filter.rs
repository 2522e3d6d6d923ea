//! Searches and trace lookups compiled to column predicates that run inside the Parquet reader
//! (a `RowFilter`): the reader decodes the few predicate columns first and materializes the output
//! columns only for matching rows. This is what keeps a search over millions of spans from decoding
//! every column of every row.
//!
//! Only conditions that live in their own column compile (service, operation, time range,
//! durations, and attributes with a dedicated column); a query that needs the generic attribute list
//! or a Jaeger pseudo tag takes the row-by-row path in `block.rs`, which answers the same.

use crate::schema::{col, DedicatedType, DEDICATED};
use crate::SearchQuery;
use arrow_array::{
    Array, BooleanArray, FixedSizeBinaryArray, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::ArrowError;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
use parquet::arrow::ProjectionMask;
use parquet::schema::types::SchemaDescriptor;

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Str(&'static str, String),
    Int(&'static str, i64),
    Start(Option<u64>, Option<u64>),
    Duration(Option<u64>, Option<u64>),
}

/// A search in column form.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnQuery {
    conds: Vec<Cond>,
    /// Attribute keys answered from their dedicated column.
    dedicated_keys: Vec<&'static str>,
    /// Some condition can never hold (e.g. `http.response.status_code=abc`): no block scan needed.
    pub never: bool,
}

/// Keys Jaeger derives from span fields; they need the row-by-row matcher.
const PSEUDO_TAGS: [&str; 3] = ["error", "span.kind", "otel.status_code"];

impl ColumnQuery {
    /// The column form of `q`, or `None` when some condition needs the generic attribute list.
    pub fn compile(q: &SearchQuery) -> Option<Self> {
        let mut conds = Vec::new();
        let mut never = false;
        let mut dedicated_keys = Vec::new();
        if let Some(s) = &q.service {
            conds.push(Cond::Str(col::SERVICE_NAME, s.clone()));
        }
        if let Some(op) = &q.operation {
            conds.push(Cond::Str(col::NAME, op.clone()));
        }
        if q.start_unix_nano.is_some() || q.end_unix_nano.is_some() {
            conds.push(Cond::Start(q.start_unix_nano, q.end_unix_nano));
        }
        if q.min_duration_nanos.is_some() || q.max_duration_nanos.is_some() {
            conds.push(Cond::Duration(q.min_duration_nanos, q.max_duration_nanos));
        }
        for (key, want) in &q.attributes {
            if PSEUDO_TAGS.contains(&key.as_str()) {
                return None;
            }
            let (dkey, column, ty) = DEDICATED.iter().find(|(k, _, _)| k == key)?;
            dedicated_keys.push(*dkey);
            match ty {
                DedicatedType::Str => conds.push(Cond::Str(column, want.clone())),
                DedicatedType::Int => match want.parse::<i64>() {
                    // Text equality, as the row matcher does: "0500" is not 500.
                    Ok(n) if n.to_string() == *want => conds.push(Cond::Int(column, n)),
                    _ => never = true,
                },
            }
        }
        if conds.is_empty() && !never {
            return None;
        }
        Some(Self {
            conds,
            dedicated_keys,
            never,
        })
    }

    pub fn dedicated_keys(&self) -> &[&'static str] {
        &self.dedicated_keys
    }

    fn columns(&self) -> Vec<&'static str> {
        let mut cols = Vec::new();
        for c in &self.conds {
            match c {
                Cond::Str(c, _) | Cond::Int(c, _) => cols.push(*c),
                Cond::Start(..) => cols.push(col::START),
                Cond::Duration(..) => cols.extend([col::START, col::END]),
            }
        }
        cols.sort_unstable();
        cols.dedup();
        cols
    }

    /// A Parquet row filter evaluating every condition; `roots` maps a column name to its root
    /// index in the file schema.
    pub fn row_filter(
        &self,
        parquet_schema: &SchemaDescriptor,
        root_of: impl Fn(&str) -> Option<usize>,
    ) -> RowFilter {
        let roots: Vec<usize> = self.columns().iter().filter_map(|c| root_of(c)).collect();
        let mask = ProjectionMask::roots(parquet_schema, roots);
        let conds = self.conds.clone();
        let predicate =
            ArrowPredicateFn::new(mask, move |batch: RecordBatch| evaluate(&conds, &batch));
        RowFilter::new(vec![Box::new(predicate)])
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, ArrowError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} missing or mistyped")))
}

fn evaluate(conds: &[Cond], batch: &RecordBatch) -> Result<BooleanArray, ArrowError> {
    let n = batch.num_rows();
    let mut keep = vec![true; n];
    for c in conds {
        match c {
            Cond::Str(name, want) => {
                let a: &StringArray = column(batch, name)?;
                for (i, k) in keep.iter_mut().enumerate() {
                    *k = *k && a.is_valid(i) && a.value(i) == want;
                }
            }
            Cond::Int(name, want) => {
                let a: &Int64Array = column(batch, name)?;
                for (i, k) in keep.iter_mut().enumerate() {
                    *k = *k && a.is_valid(i) && a.value(i) == *want;
                }
            }
            Cond::Start(lo, hi) => {
                let a: &Int64Array = column(batch, col::START)?;
                for (i, k) in keep.iter_mut().enumerate() {
                    let s = a.value(i) as u64;
                    *k = *k && lo.is_none_or(|t| s >= t) && hi.is_none_or(|t| s <= t);
                }
            }
            Cond::Duration(min, max) => {
                let s: &Int64Array = column(batch, col::START)?;
                let e: &Int64Array = column(batch, col::END)?;
                for (i, k) in keep.iter_mut().enumerate() {
                    let d = (e.value(i) as u64).saturating_sub(s.value(i) as u64);
                    *k = *k && min.is_none_or(|t| d >= t) && max.is_none_or(|t| d <= t);
                }
            }
        }
    }
    Ok(BooleanArray::from(keep))
}

/// A row filter keeping the rows of one trace id.
pub fn trace_id_filter(parquet_schema: &SchemaDescriptor, root: usize, id: [u8; 16]) -> RowFilter {
    let mask = ProjectionMask::roots(parquet_schema, [root]);
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let ids: &FixedSizeBinaryArray = column(&batch, col::TRACE_ID)?;
        Ok(BooleanArray::from_iter(
            (0..ids.len()).map(|i| Some(ids.value(i) == id)),
        ))
    });
    RowFilter::new(vec![Box::new(predicate)])
}

/// A row filter keeping rows whose trace id's first 8 bytes (big-endian) lie in `lo..=hi`.
pub fn trace_prefix_range_filter(
    parquet_schema: &SchemaDescriptor,
    root: usize,
    lo: u64,
    hi: u64,
) -> RowFilter {
    let mask = ProjectionMask::roots(parquet_schema, [root]);
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let ids: &FixedSizeBinaryArray = column(&batch, col::TRACE_ID)?;
        Ok(BooleanArray::from_iter((0..ids.len()).map(|i| {
            let v = ids.value(i);
            let p = v
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some(lo <= p && p <= hi)
        })))
    });
    RowFilter::new(vec![Box::new(predicate)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(attrs: &[(&str, &str)]) -> SearchQuery {
        SearchQuery {
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn compiles_dedicated_and_field_conditions_only() {
        assert!(ColumnQuery::compile(&q(&[("http.route", "/a")])).is_some());
        assert!(ColumnQuery::compile(&q(&[("client.address", "1.2.3.4")])).is_none());
        assert!(ColumnQuery::compile(&q(&[("error", "true")])).is_none());
        assert!(ColumnQuery::compile(&SearchQuery::default()).is_none());
        let c = ColumnQuery::compile(&q(&[("http.response.status_code", "0500")])).unwrap();
        assert!(c.never);
        let c = ColumnQuery::compile(&q(&[("http.response.status_code", "500")])).unwrap();
        assert!(!c.never);
        let with_service = SearchQuery {
            service: Some("cart".into()),
            min_duration_nanos: Some(5),
            ..Default::default()
        };
        let c = ColumnQuery::compile(&with_service).unwrap();
        assert_eq!(c.columns(), vec![col::END, col::SERVICE_NAME, col::START]);
    }

    #[test]
    fn evaluates_conditions_on_a_batch() {
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter(vec![
            (
                col::SERVICE_NAME,
                Arc::new(StringArray::from(vec!["a", "b", "a"])) as _,
            ),
            (
                col::START,
                Arc::new(Int64Array::from(vec![10, 20, 30])) as _,
            ),
            (col::END, Arc::new(Int64Array::from(vec![15, 40, 31])) as _),
        ])
        .unwrap();
        let conds = vec![
            Cond::Str(col::SERVICE_NAME, "a".into()),
            Cond::Duration(Some(2), None),
        ];
        let got = evaluate(&conds, &batch).unwrap();
        assert_eq!(got, BooleanArray::from(vec![true, false, false]));
        let got = evaluate(&[Cond::Start(Some(15), Some(30))], &batch).unwrap();
        assert_eq!(got, BooleanArray::from(vec![false, true, true]));
        assert!(evaluate(&[Cond::Int("nope", 1)], &batch).is_err());
    }
}
