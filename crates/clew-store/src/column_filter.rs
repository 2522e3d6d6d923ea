//! Searches and trace lookups compiled to column predicates that run inside the Parquet reader
//! (a `RowFilter`): the reader decodes the few predicate columns first and materializes the output
//! columns only for matching rows. This is what keeps a search over millions of spans from decoding
//! every column of every row.
//!
//! What compiles: service, operation, time range, durations, typed conditions on intrinsics,
//! attributes with a dedicated column (exact unless the block's `dedicated_spills` lists the key),
//! and span attributes of the generic list, read from the list's key/str/int/double/bool leaves
//! when the block's tag catalog says no resource carries the key (a resource value is a fallback
//! only the row path sees), and resource `service.name` equality (the `service_name` column).
//! Everything else — other resource-scoped attributes, Jaeger pseudo tags,
//! blocks without a catalog — takes the row-by-row path in `block.rs`, which answers the same
//! (`tests/search_conditions.rs` checks both against a naive evaluator).

use crate::api::{AttrScope, CompareOp, SpanField};
use crate::matcher::{compare, Lit, Matcher, Val};
use crate::schema::{col, DedicatedType, DEDICATED};
use crate::tags::{TagCatalog, TYPE_OTHER, TYPE_STR};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, BooleanArray, DictionaryArray, FixedSizeBinaryArray, Float64Array, Int32Array,
    Int64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use arrow_schema::ArrowError;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, RowFilter};
use parquet::arrow::ProjectionMask;
use parquet::schema::types::SchemaDescriptor;
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Str(&'static str, String),
    Int(&'static str, i64),
    Start(Option<u64>, Option<u64>),
    Duration(Option<u64>, Option<u64>),
    /// A typed condition on one column (null: the field is missing).
    Typed(&'static str, ColType, CompareOp, Lit),
    /// A typed condition on the duration (end minus start).
    TypedDuration(CompareOp, Lit),
    /// A condition on a span attribute of the generic list, read from its key and typed value
    /// leaves only (never the bytes/complex leaves, the resource or the other columns). The flag:
    /// the block's catalog says every span value of the key is a string, so the `key` and `str`
    /// leaves alone answer it (decoding a list leaf is most of a generic search's cost).
    Generic(String, GenericTest, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum GenericTest {
    /// Jaeger tag: text form equality (the key's types are known to be str/int/double/bool).
    Text(String),
    Typed(CompareOp, Lit),
}

/// The leaves of the attribute list a generic condition reads.
const GENERIC_LEAVES: [&str; 5] = ["key", "str", "int", "double", "bool"];
/// The same for keys whose span values are all strings.
const STRING_LEAVES: [&str; 2] = ["key", "str"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum ColType {
    Str,
    I64,
    I32,
}

impl PartialEq for Lit {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Lit::Str(a), Lit::Str(b)) => a == b,
            (Lit::Int(a), Lit::Int(b)) => a == b,
            (Lit::Double(a), Lit::Double(b)) => a.to_bits() == b.to_bits(),
            (Lit::Bool(a), Lit::Bool(b)) => a == b,
            (Lit::Regex(a), Lit::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
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
    /// The column form of `m`, or `None` when some condition needs the generic attribute list or
    /// a resource attribute.
    pub fn compile(m: &Matcher) -> Option<Self> {
        Self::compile_for(m, None)
    }

    /// [`ColumnQuery::compile`] for one block, whose tag catalog (if it has one) says which
    /// generic attributes can be answered from the typed leaves of the attribute list: a span
    /// attribute always; an unscoped one or a Jaeger tag only if no resource of the block has
    /// the key; a Jaeger tag (text comparison) only if the key never holds bytes, arrays or maps.
    pub fn compile_for(m: &Matcher, tags: Option<&TagCatalog>) -> Option<Self> {
        let q = &m.query;
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
            let Some((dkey, column, ty)) = DEDICATED.iter().find(|(k, _, _)| k == key) else {
                let tags = tags?;
                if tags.may_have(AttrScope::Resource, key) {
                    return None;
                }
                let types = tags.span_types(key);
                if types == 0 {
                    never = true;
                } else if types & TYPE_OTHER != 0 {
                    return None;
                } else {
                    conds.push(Cond::Generic(
                        key.clone(),
                        GenericTest::Text(want.clone()),
                        types == TYPE_STR,
                    ));
                }
                continue;
            };
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
        for c in &m.conditions {
            let (op, lit) = (c.op, c.lit.clone());
            match &c.field {
                SpanField::Name => conds.push(Cond::Typed(col::NAME, ColType::Str, op, lit)),
                SpanField::ServiceName => {
                    conds.push(Cond::Typed(col::SERVICE_NAME, ColType::Str, op, lit))
                }
                SpanField::StatusMessage => {
                    conds.push(Cond::Typed(col::STATUS_MESSAGE, ColType::Str, op, lit))
                }
                SpanField::Status => {
                    conds.push(Cond::Typed(col::STATUS_CODE, ColType::I32, op, lit))
                }
                SpanField::Kind => conds.push(Cond::Typed(col::KIND, ColType::I32, op, lit)),
                SpanField::Duration => conds.push(Cond::TypedDuration(op, lit)),
                // A resource attribute lives in the resource blob: row path. A span (or
                // unscoped) attribute with a dedicated column is exact from the column as long as
                // the block has no spill for the key (checked by the caller with
                // `dedicated_keys`: a spill means another type in the list, or a resource value).
                SpanField::Attribute { scope, key } => {
                    if *scope == AttrScope::Resource {
                        // The `service_name` column is the resource's first `service.name`
                        // when that is a non-empty string, else `unknown_service`
                        // (`clew_model::attrs::service_name`); the matcher reads the same first
                        // value. So equality with any other non-empty string is exact from the
                        // column, and structural TraceQL (`{ resource.service.name = "x" } >> …`)
                        // needs no resource decoding.
                        if let (CompareOp::Eq, Lit::Str(want)) = (op, &lit) {
                            if key == clew_model::attrs::SERVICE_NAME
                                && !want.is_empty()
                                && want != clew_model::attrs::UNKNOWN_SERVICE
                            {
                                conds.push(Cond::Typed(col::SERVICE_NAME, ColType::Str, op, lit));
                                continue;
                            }
                        }
                        return None;
                    }
                    let Some((dkey, column, ty)) = DEDICATED.iter().find(|(k, _, _)| k == key)
                    else {
                        if *scope == AttrScope::Any
                            && tags.is_none_or(|t| t.may_have(AttrScope::Resource, key))
                        {
                            return None;
                        }
                        let strings_only = tags.is_some_and(|t| t.span_types(key) == TYPE_STR);
                        conds.push(Cond::Generic(
                            key.clone(),
                            GenericTest::Typed(op, lit),
                            strings_only,
                        ));
                        continue;
                    };
                    dedicated_keys.push(*dkey);
                    let ty = match ty {
                        DedicatedType::Str => ColType::Str,
                        DedicatedType::Int => ColType::I64,
                    };
                    conds.push(Cond::Typed(column, ty, op, lit));
                }
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
                Cond::Str(c, _) | Cond::Int(c, _) | Cond::Typed(c, ..) => cols.push(*c),
                Cond::Start(..) => cols.push(col::START),
                Cond::Duration(..) | Cond::TypedDuration(..) => cols.extend([col::START, col::END]),
                Cond::Generic(..) => {}
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
        let generic = self.conds.iter().any(|c| matches!(c, Cond::Generic(..)));
        let wanted_leaves: &[&str] = if self
            .conds
            .iter()
            .all(|c| !matches!(c, Cond::Generic(_, _, false)))
        {
            &STRING_LEAVES
        } else {
            &GENERIC_LEAVES
        };
        let attrs_root = root_of(col::ATTRIBUTES);
        let leaves: Vec<usize> = (0..parquet_schema.num_columns())
            .filter(|&i| {
                let root = parquet_schema.get_column_root_idx(i);
                roots.contains(&root)
                    || (generic
                        && Some(root) == attrs_root
                        && parquet_schema
                            .column(i)
                            .path()
                            .parts()
                            .last()
                            .is_some_and(|l| wanted_leaves.contains(&l.as_str())))
            })
            .collect();
        let mask = ProjectionMask::leaves(parquet_schema, leaves);
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

/// Applies a test of a string column's value (`None`: null) to the rows still kept. A column
/// read as a dictionary (see [`dictionary_schema`]) is tested once per distinct value, then by key:
/// no string is materialized per row.
fn str_test(
    batch: &RecordBatch,
    name: &str,
    keep: &mut [bool],
    test: impl Fn(Option<&str>) -> bool,
) -> Result<(), ArrowError> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} missing")))?;
    if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
        for (i, k) in keep.iter_mut().enumerate() {
            *k = *k && test(a.is_valid(i).then(|| a.value(i)));
        }
        return Ok(());
    }
    let d = col
        .as_any()
        .downcast_ref::<DictionaryArray<Int32Type>>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} mistyped")))?;
    let values: &StringArray = d
        .values()
        .as_any()
        .downcast_ref()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} dictionary mistyped")))?;
    let by_value: Vec<bool> = (0..values.len())
        .map(|i| test(values.is_valid(i).then(|| values.value(i))))
        .collect();
    let on_null = test(None);
    let keys = d.keys();
    for (i, k) in keep.iter_mut().enumerate() {
        *k = *k
            && if keys.is_valid(i) {
                by_value
                    .get(keys.value(i) as usize)
                    .copied()
                    .unwrap_or(false)
            } else {
                on_null
            };
    }
    Ok(())
}

/// Low-cardinality string columns searches compare: read as Arrow dictionaries by the column
/// path, which then compares each distinct value once per batch.
const DICTIONARY_COLUMNS: &[&str] = &[
    col::NAME,
    col::SERVICE_NAME,
    col::STATUS_MESSAGE,
    "http_request_method",
    "http_route",
    "server_address",
    "peer_service",
    "db_system",
    "db_system_name",
    "rpc_method",
    "messaging_destination_name",
];

/// The block schema with [`DICTIONARY_COLUMNS`] as `Dictionary(Int32, Utf8)`: the reader then
/// keeps Parquet's dictionary pages as they are instead of expanding them.
pub fn dictionary_schema() -> arrow_schema::SchemaRef {
    use arrow_schema::{DataType, Field, Schema};
    static SCHEMA: std::sync::OnceLock<arrow_schema::SchemaRef> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let base = crate::schema::schema();
            let fields: Vec<Field> = base
                .fields()
                .iter()
                .map(|f| {
                    if f.name() == col::ATTRIBUTES {
                        // The list's key leaf too: a few distinct keys over millions of entries.
                        return attributes_with_dictionary_keys(f);
                    }
                    if DICTIONARY_COLUMNS.contains(&f.name().as_str()) {
                        Field::new(
                            f.name(),
                            DataType::Dictionary(
                                Box::new(DataType::Int32),
                                Box::new(DataType::Utf8),
                            ),
                            f.is_nullable(),
                        )
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect();
            std::sync::Arc::new(Schema::new(fields))
        })
        .clone()
}

fn attributes_with_dictionary_keys(f: &arrow_schema::Field) -> arrow_schema::Field {
    use arrow_schema::{DataType, Field, Fields};
    let DataType::List(item) = f.data_type() else {
        return f.clone();
    };
    let DataType::Struct(fields) = item.data_type() else {
        return f.clone();
    };
    let fields: Fields = fields
        .iter()
        .map(|x| {
            if x.name() == "key" {
                std::sync::Arc::new(Field::new(
                    "key",
                    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                    x.is_nullable(),
                ))
            } else {
                x.clone()
            }
        })
        .collect();
    let item = Field::new(item.name(), DataType::Struct(fields), item.is_nullable());
    Field::new(
        f.name(),
        DataType::List(std::sync::Arc::new(item)),
        f.is_nullable(),
    )
}

fn evaluate(conds: &[Cond], batch: &RecordBatch) -> Result<BooleanArray, ArrowError> {
    let n = batch.num_rows();
    let mut keep = vec![true; n];
    for c in conds {
        match c {
            Cond::Str(name, want) => {
                str_test(batch, name, &mut keep, |v| v == Some(want.as_str()))?;
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
            Cond::Typed(name, ty, op, lit) => match ty {
                ColType::Str => {
                    str_test(batch, name, &mut keep, |v| {
                        let v = v.map(|s| Val::Str(Cow::Borrowed(s)));
                        compare(v.as_ref(), *op, lit)
                    })?;
                }
                ColType::I64 => {
                    let a: &Int64Array = column(batch, name)?;
                    for (i, k) in keep.iter_mut().enumerate() {
                        *k = *k && {
                            let v = a.is_valid(i).then(|| Val::Int(a.value(i)));
                            compare(v.as_ref(), *op, lit)
                        };
                    }
                }
                ColType::I32 => {
                    let a: &Int32Array = column(batch, name)?;
                    for (i, k) in keep.iter_mut().enumerate() {
                        *k = *k && {
                            let v = a.is_valid(i).then(|| Val::Int(a.value(i) as i64));
                            compare(v.as_ref(), *op, lit)
                        };
                    }
                }
            },
            Cond::Generic(key, test, _) => {
                let list = column::<ListArray>(batch, col::ATTRIBUTES)?;
                let leaves = Leaves::new(list)?;
                let offsets = list.value_offsets();
                let has_key = leaves.keys.matcher(key);
                // Text tests against an int compare numbers: parsed once, and only when the text
                // is an int's canonical form ("0500" is not 500).
                let want_int = match test {
                    GenericTest::Text(w) => w.parse::<i64>().ok().filter(|n| n.to_string() == *w),
                    GenericTest::Typed(..) => None,
                };
                for (row, k) in keep.iter_mut().enumerate() {
                    if !*k {
                        continue;
                    }
                    let (lo, hi) = (offsets[row] as usize, offsets[row + 1] as usize);
                    let found = (lo..hi).find(|&i| has_key(i));
                    let got = found.map(|i| leaves.typed(i));
                    *k = match test {
                        GenericTest::Typed(op, lit) => compare(got.as_ref(), *op, lit),
                        GenericTest::Text(want) => match got {
                            Some(Val::Str(s)) => s == want.as_str(),
                            Some(Val::Int(n)) => want_int == Some(n),
                            Some(Val::Double(d)) => d.to_string() == *want,
                            Some(Val::Bool(b)) => b.to_string() == *want,
                            Some(Val::Other) | None => false,
                        },
                    };
                }
            }
            Cond::TypedDuration(op, lit) => {
                let s: &Int64Array = column(batch, col::START)?;
                let e: &Int64Array = column(batch, col::END)?;
                for (i, k) in keep.iter_mut().enumerate() {
                    let d = (e.value(i) as u64).saturating_sub(s.value(i) as u64);
                    *k = *k && compare(Some(&Val::Int(d as i64)), *op, lit);
                }
            }
        }
    }
    Ok(BooleanArray::from(keep))
}

/// The attribute list's key leaf: plain, or a dictionary (few distinct keys: compared once each).
enum KeyLeaf<'a> {
    Plain(&'a StringArray),
    Dict(&'a arrow_array::PrimitiveArray<Int32Type>, &'a StringArray),
}

impl KeyLeaf<'_> {
    /// A test "entry `i` has key `key`".
    fn matcher(&self, key: &str) -> impl Fn(usize) -> bool + '_ {
        let (plain, codes, wanted) = match self {
            KeyLeaf::Plain(a) => (Some(*a), None, Vec::new()),
            KeyLeaf::Dict(codes, values) => (
                None,
                Some(*codes),
                (0..values.len())
                    .map(|i| values.is_valid(i) && values.value(i) == key)
                    .collect(),
            ),
        };
        let key = key.to_string();
        move |i| match (plain, codes) {
            (Some(a), _) => a.is_valid(i) && a.value(i) == key,
            (None, Some(c)) => {
                c.is_valid(i) && wanted.get(c.value(i) as usize).copied().unwrap_or(false)
            }
            (None, None) => false,
        }
    }
}

/// The typed leaves of the attribute list, as projected for generic conditions.
struct Leaves<'a> {
    keys: KeyLeaf<'a>,
    strs: &'a StringArray,
    /// Not projected when every generic condition is on a strings-only key.
    ints: Option<&'a Int64Array>,
    doubles: Option<&'a Float64Array>,
    bools: Option<&'a BooleanArray>,
}

impl<'a> Leaves<'a> {
    fn new(list: &'a ListArray) -> Result<Self, ArrowError> {
        let st = list
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| ArrowError::SchemaError("attributes: not a list of structs".into()))?;
        fn leaf<'b, T: 'static>(st: &'b StructArray, name: &str) -> Result<&'b T, ArrowError> {
            st.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<T>())
                .ok_or_else(|| ArrowError::SchemaError(format!("attributes.{name} missing")))
        }
        // Absent: not projected. Present with another type: a schema error, as for `str`.
        fn opt_leaf<'b, T: 'static>(
            st: &'b StructArray,
            name: &str,
        ) -> Result<Option<&'b T>, ArrowError> {
            match st.column_by_name(name) {
                None => Ok(None),
                Some(_) => leaf(st, name).map(Some),
            }
        }
        let key_col = st
            .column_by_name("key")
            .ok_or_else(|| ArrowError::SchemaError("attributes.key missing".into()))?;
        let keys = if let Some(a) = key_col.as_any().downcast_ref::<StringArray>() {
            KeyLeaf::Plain(a)
        } else {
            let d = key_col
                .as_any()
                .downcast_ref::<DictionaryArray<Int32Type>>()
                .ok_or_else(|| ArrowError::SchemaError("attributes.key mistyped".into()))?;
            let values = d
                .values()
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| ArrowError::SchemaError("attributes.key mistyped".into()))?;
            KeyLeaf::Dict(d.keys(), values)
        };
        Ok(Self {
            keys,
            strs: leaf(st, "str")?,
            ints: opt_leaf(st, "int")?,
            doubles: opt_leaf(st, "double")?,
            bools: opt_leaf(st, "bool")?,
        })
    }

    /// The entry's value as the row matcher sees it (`AttrList::typed_of`): bytes, arrays and
    /// maps, whose leaves are not read, are `Other`.
    fn typed(&self, i: usize) -> Val<'a> {
        if self.strs.is_valid(i) {
            return Val::Str(Cow::Borrowed(self.strs.value(i)));
        }
        if let Some(a) = self.ints.filter(|a| a.is_valid(i)) {
            Val::Int(a.value(i))
        } else if let Some(a) = self.doubles.filter(|a| a.is_valid(i)) {
            Val::Double(a.value(i))
        } else if let Some(a) = self.bools.filter(|a| a.is_valid(i)) {
            Val::Bool(a.value(i))
        } else {
            Val::Other
        }
    }
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

    use crate::SearchQuery;

    fn compile(q: &SearchQuery) -> Option<ColumnQuery> {
        ColumnQuery::compile(&Matcher::new(q).unwrap())
    }

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
        assert!(compile(&q(&[("http.route", "/a")])).is_some());
        assert!(compile(&q(&[("client.address", "1.2.3.4")])).is_none());
        assert!(compile(&q(&[("error", "true")])).is_none());
        assert!(compile(&SearchQuery::default()).is_none());
        let c = compile(&q(&[("http.response.status_code", "0500")])).unwrap();
        assert!(c.never);
        let c = compile(&q(&[("http.response.status_code", "500")])).unwrap();
        assert!(!c.never);
        let with_service = SearchQuery {
            service: Some("cart".into()),
            min_duration_nanos: Some(5),
            ..Default::default()
        };
        let c = compile(&with_service).unwrap();
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
