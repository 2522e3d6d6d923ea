//! The block schema: one Parquet row per span, and the conversions between [`FlatSpan`]s and Arrow
//! record batches.
//!
//! Layout choices (see ARCHITECTURE.md): ids as fixed-size binary; common semantic-convention
//! attributes in dedicated typed columns (fast search, good compression); every other attribute in
//! a generic `attributes` list of typed structs, so any Parquet tool can read them and every
//! `AnyValue` type round-trips exactly (arrays and maps as protobuf-encoded `AnyValue`). Resource
//! and scope are protobuf-encoded binaries: they repeat across a batch, so dictionary encoding
//! stores each once per row group. Events and links are one protobuf-encoded binary per span.

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder, StructBuilder, UInt32Builder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array, Int32Array,
    Int64Array, ListArray, RecordBatch, StringArray, StructArray, UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};
use clew_model::otlp::common::{any_value::Value, AnyValue, InstrumentationScope, KeyValue};
use clew_model::otlp::resource::Resource;
use clew_model::otlp::trace::{status::StatusCode, Span, Status};
use clew_model::otlp::Message;
use clew_model::FlatSpan;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

pub mod col {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const FLAGS: &str = "flags";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const START: &str = "start_time_unix_nano";
    pub const END: &str = "end_time_unix_nano";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const SERVICE_NAME: &str = "service_name";
    pub const RESOURCE: &str = "resource";
    pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
    pub const SCOPE: &str = "scope";
    pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
    pub const ATTRIBUTES: &str = "attributes";
    pub const DROPPED_ATTRIBUTES: &str = "dropped_attributes_count";
    pub const EVENTS_LINKS: &str = "events_links";
}

/// Type of a dedicated attribute column. An attribute whose value has another type stays in the
/// generic column, so its type survives the round trip.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DedicatedType {
    Str,
    Int,
}

/// Semantic-convention attributes with their own column: (attribute key, column name, type).
pub const DEDICATED: &[(&str, &str, DedicatedType)] = &[
    (
        "http.request.method",
        "http_request_method",
        DedicatedType::Str,
    ),
    ("http.route", "http_route", DedicatedType::Str),
    (
        "http.response.status_code",
        "http_response_status_code",
        DedicatedType::Int,
    ),
    ("url.full", "url_full", DedicatedType::Str),
    ("server.address", "server_address", DedicatedType::Str),
    ("peer.service", "peer_service", DedicatedType::Str),
    ("db.system", "db_system", DedicatedType::Str),
    ("db.system.name", "db_system_name", DedicatedType::Str),
    ("rpc.method", "rpc_method", DedicatedType::Str),
    (
        "messaging.destination.name",
        "messaging_destination_name",
        DedicatedType::Str,
    ),
];

/// Dedicated keys of `span` whose value does not land in the dedicated column (another type, or a
/// repeated key), so searches on them must also look at the generic list.
pub fn span_dedicated_spills(span: &Span, out: &mut std::collections::BTreeSet<&'static str>) {
    let mut taken = [false; 16];
    for kv in &span.attributes {
        if let Some(i) = dedicated_index(&kv.key) {
            let fits = matches!(
                (
                    DEDICATED[i].2,
                    kv.value.as_ref().and_then(|v| v.value.as_ref())
                ),
                (DedicatedType::Str, Some(Value::StringValue(_)))
                    | (DedicatedType::Int, Some(Value::IntValue(_)))
            );
            if fits && !taken.get(i).copied().unwrap_or(true) {
                taken[i] = true;
            } else {
                out.insert(DEDICATED[i].0);
            }
        }
    }
}

/// Dedicated keys present as resource attributes (a search falls back to the resource).
pub fn resource_dedicated_spills(
    resource: &clew_model::otlp::resource::Resource,
    out: &mut std::collections::BTreeSet<&'static str>,
) {
    for kv in &resource.attributes {
        if let Some(i) = dedicated_index(&kv.key) {
            out.insert(DEDICATED[i].0);
        }
    }
}

pub fn dedicated_index(key: &str) -> Option<usize> {
    DEDICATED.iter().position(|(k, _, _)| *k == key)
}

fn attr_struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("str", DataType::Utf8, true),
        Field::new("int", DataType::Int64, true),
        Field::new("double", DataType::Float64, true),
        Field::new("bool", DataType::Boolean, true),
        Field::new("bytes", DataType::Binary, true),
        // Arrays and key-value lists, as a protobuf-encoded AnyValue.
        Field::new("complex", DataType::Binary, true),
    ])
}

pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let mut fields = vec![
                Field::new(col::TRACE_ID, DataType::FixedSizeBinary(16), false),
                Field::new(col::SPAN_ID, DataType::FixedSizeBinary(8), false),
                Field::new(col::PARENT_SPAN_ID, DataType::FixedSizeBinary(8), true),
                Field::new(col::TRACE_STATE, DataType::Utf8, false),
                Field::new(col::FLAGS, DataType::UInt32, false),
                Field::new(col::NAME, DataType::Utf8, false),
                Field::new(col::KIND, DataType::Int32, false),
                Field::new(col::START, DataType::Int64, false),
                Field::new(col::END, DataType::Int64, false),
                Field::new(col::STATUS_CODE, DataType::Int32, false),
                Field::new(col::STATUS_MESSAGE, DataType::Utf8, false),
                Field::new(col::SERVICE_NAME, DataType::Utf8, false),
                Field::new(col::RESOURCE, DataType::Binary, false),
                Field::new(col::RESOURCE_SCHEMA_URL, DataType::Utf8, false),
                Field::new(col::SCOPE, DataType::Binary, false),
                Field::new(col::SCOPE_SCHEMA_URL, DataType::Utf8, false),
            ];
            for (_, name, ty) in DEDICATED {
                let dt = match ty {
                    DedicatedType::Str => DataType::Utf8,
                    DedicatedType::Int => DataType::Int64,
                };
                fields.push(Field::new(*name, dt, true));
            }
            let item = Field::new("item", DataType::Struct(attr_struct_fields()), false);
            fields.push(Field::new(
                col::ATTRIBUTES,
                DataType::List(Arc::new(item)),
                false,
            ));
            fields.push(Field::new(col::DROPPED_ATTRIBUTES, DataType::UInt32, false));
            fields.push(Field::new(col::EVENTS_LINKS, DataType::Binary, true));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Converts spans (already in the order wanted) into one record batch.
pub fn to_record_batch(spans: &[&FlatSpan]) -> Result<RecordBatch, ArrowError> {
    let n = spans.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut trace_state = StringBuilder::new();
    let mut flags = UInt32Builder::with_capacity(n);
    let mut name = StringBuilder::new();
    let mut kind = Int32Builder::with_capacity(n);
    let mut start = Int64Builder::with_capacity(n);
    let mut end = Int64Builder::with_capacity(n);
    let mut status_code = Int32Builder::with_capacity(n);
    let mut status_message = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut resource = BinaryBuilder::new();
    let mut resource_schema = StringBuilder::new();
    let mut scope = BinaryBuilder::new();
    let mut scope_schema = StringBuilder::new();
    let mut ded_str: Vec<StringBuilder> = DEDICATED.iter().map(|_| StringBuilder::new()).collect();
    let mut ded_int: Vec<Int64Builder> = DEDICATED.iter().map(|_| Int64Builder::new()).collect();
    let mut attrs =
        ListBuilder::new(StructBuilder::from_fields(attr_struct_fields(), 0)).with_field(Arc::new(
            Field::new("item", DataType::Struct(attr_struct_fields()), false),
        ));
    let mut dropped_attrs = UInt32Builder::with_capacity(n);
    let mut events_links = BinaryBuilder::new();

    // Resources and scopes are shared by many spans: encode each once.
    let mut resource_cache: HashMap<*const Resource, Vec<u8>> = HashMap::new();
    let mut scope_cache: HashMap<*const InstrumentationScope, Vec<u8>> = HashMap::new();
    let mut dedicated_slot: Vec<Option<&AnyValue>> = vec![None; DEDICATED.len()];

    for fs in spans {
        let s = &fs.span;
        trace_id.append_value(&s.trace_id)?;
        span_id.append_value(&s.span_id)?;
        if s.parent_span_id.is_empty() {
            parent.append_null();
        } else {
            parent.append_value(&s.parent_span_id)?;
        }
        trace_state.append_value(&s.trace_state);
        flags.append_value(s.flags);
        name.append_value(&s.name);
        kind.append_value(s.kind);
        start.append_value(s.start_time_unix_nano as i64);
        end.append_value(s.end_time_unix_nano as i64);
        let st = s.status.clone().unwrap_or_default();
        status_code.append_value(st.code);
        status_message.append_value(&st.message);
        service.append_value(fs.service_name());
        let r = resource_cache
            .entry(Arc::as_ptr(&fs.resource))
            .or_insert_with(|| fs.resource.encode_to_vec());
        resource.append_value(r);
        resource_schema.append_value(&*fs.resource_schema_url);
        let sc = scope_cache
            .entry(Arc::as_ptr(&fs.scope))
            .or_insert_with(|| fs.scope.encode_to_vec());
        scope.append_value(sc);
        scope_schema.append_value(&*fs.scope_schema_url);

        dedicated_slot.iter_mut().for_each(|d| *d = None);
        let sb = attrs.values();
        for kv in &s.attributes {
            let value = kv.value.as_ref();
            if let Some(i) = dedicated_index(&kv.key) {
                let fits = matches!(
                    (DEDICATED[i].2, value.and_then(|v| v.value.as_ref())),
                    (DedicatedType::Str, Some(Value::StringValue(_)))
                        | (DedicatedType::Int, Some(Value::IntValue(_)))
                );
                if fits && dedicated_slot[i].is_none() {
                    dedicated_slot[i] = value;
                    continue;
                }
            }
            append_generic_attr(sb, kv);
        }
        attrs.append(true);
        // Both builders of a dedicated column grow by exactly one per row; only the one of the
        // declared type becomes a column.
        for (i, slot) in dedicated_slot.iter().enumerate() {
            match slot.and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(v)) => {
                    ded_str[i].append_value(v);
                    ded_int[i].append_null();
                }
                Some(Value::IntValue(v)) => {
                    ded_int[i].append_value(*v);
                    ded_str[i].append_null();
                }
                _ => {
                    ded_str[i].append_null();
                    ded_int[i].append_null();
                }
            }
        }
        dropped_attrs.append_value(s.dropped_attributes_count);
        if s.events.is_empty()
            && s.links.is_empty()
            && s.dropped_events_count == 0
            && s.dropped_links_count == 0
        {
            events_links.append_null();
        } else {
            let holder = Span {
                events: s.events.clone(),
                links: s.links.clone(),
                dropped_events_count: s.dropped_events_count,
                dropped_links_count: s.dropped_links_count,
                ..Default::default()
            };
            events_links.append_value(holder.encode_to_vec());
        }
    }

    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(flags.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(service.finish()),
        Arc::new(resource.finish()),
        Arc::new(resource_schema.finish()),
        Arc::new(scope.finish()),
        Arc::new(scope_schema.finish()),
    ];
    for (i, (_, _, ty)) in DEDICATED.iter().enumerate() {
        columns.push(match ty {
            DedicatedType::Str => Arc::new(ded_str[i].finish()),
            DedicatedType::Int => Arc::new(ded_int[i].finish()),
        });
    }
    columns.push(Arc::new(attrs.finish()));
    columns.push(Arc::new(dropped_attrs.finish()));
    columns.push(Arc::new(events_links.finish()));
    RecordBatch::try_new(schema(), columns)
}

fn append_generic_attr(sb: &mut StructBuilder, kv: &KeyValue) {
    let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
    macro_rules! field {
        ($i:expr, $t:ty) => {
            sb.field_builder::<$t>($i)
                .expect("attribute struct field types are fixed by attr_struct_fields")
        };
    }
    field!(0, StringBuilder).append_value(&kv.key);
    match v {
        Some(Value::StringValue(s)) => field!(1, StringBuilder).append_value(s),
        _ => field!(1, StringBuilder).append_null(),
    }
    match v {
        Some(Value::IntValue(i)) => field!(2, Int64Builder).append_value(*i),
        _ => field!(2, Int64Builder).append_null(),
    }
    match v {
        Some(Value::DoubleValue(d)) => field!(3, Float64Builder).append_value(*d),
        _ => field!(3, Float64Builder).append_null(),
    }
    match v {
        Some(Value::BoolValue(b)) => field!(4, BooleanBuilder).append_value(*b),
        _ => field!(4, BooleanBuilder).append_null(),
    }
    match v {
        Some(Value::BytesValue(b)) => field!(5, BinaryBuilder).append_value(b),
        _ => field!(5, BinaryBuilder).append_null(),
    }
    match v {
        Some(Value::ArrayValue(_))
        | Some(Value::KvlistValue(_))
        | Some(Value::StringValueStrindex(_)) => {
            let any = kv.value.clone().unwrap_or_default();
            field!(6, BinaryBuilder).append_value(any.encode_to_vec())
        }
        _ => field!(6, BinaryBuilder).append_null(),
    }
    sb.append(true);
}

/// Typed access to the columns of a block record batch (full or projected).
pub struct Columns<'a> {
    batch: &'a RecordBatch,
}

fn downcast<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
}

fn missing(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!(
        "block column {name:?} missing or of the wrong type"
    ))
}

impl<'a> Columns<'a> {
    pub fn new(batch: &'a RecordBatch) -> Self {
        Self { batch }
    }
    pub fn fsb(&self, name: &str) -> Result<&'a FixedSizeBinaryArray, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
    pub fn str(&self, name: &str) -> Result<&'a StringArray, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
    pub fn bin(&self, name: &str) -> Result<&'a BinaryArray, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
    pub fn i64(&self, name: &str) -> Result<&'a Int64Array, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
    pub fn i32(&self, name: &str) -> Result<&'a Int32Array, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
    pub fn u32(&self, name: &str) -> Result<&'a UInt32Array, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
    pub fn list(&self, name: &str) -> Result<&'a ListArray, ArrowError> {
        downcast(self.batch, name).ok_or_else(|| missing(name))
    }
}

/// Reads the generic attributes of one row.
pub struct AttrList<'a> {
    pub keys: &'a StringArray,
    strs: &'a StringArray,
    ints: &'a Int64Array,
    doubles: &'a Float64Array,
    bools: &'a BooleanArray,
    bytes: &'a BinaryArray,
    complex: &'a BinaryArray,
    offsets: &'a [i32],
}

impl<'a> AttrList<'a> {
    pub fn new(list: &'a ListArray) -> Result<Self, ArrowError> {
        let st = list
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| missing(col::ATTRIBUTES))?;
        macro_rules! f {
            ($i:expr, $t:ty) => {
                st.column($i)
                    .as_any()
                    .downcast_ref::<$t>()
                    .ok_or_else(|| missing(col::ATTRIBUTES))?
            };
        }
        if st.num_columns() != 7 {
            return Err(missing(col::ATTRIBUTES));
        }
        Ok(Self {
            keys: f!(0, StringArray),
            strs: f!(1, StringArray),
            ints: f!(2, Int64Array),
            doubles: f!(3, Float64Array),
            bools: f!(4, BooleanArray),
            bytes: f!(5, BinaryArray),
            complex: f!(6, BinaryArray),
            offsets: list.value_offsets(),
        })
    }

    pub fn range(&self, row: usize) -> std::ops::Range<usize> {
        self.offsets[row] as usize..self.offsets[row + 1] as usize
    }

    pub fn value(&self, i: usize) -> AnyValue {
        let value = if self.strs.is_valid(i) {
            Some(Value::StringValue(self.strs.value(i).to_string()))
        } else if self.ints.is_valid(i) {
            Some(Value::IntValue(self.ints.value(i)))
        } else if self.doubles.is_valid(i) {
            Some(Value::DoubleValue(self.doubles.value(i)))
        } else if self.bools.is_valid(i) {
            Some(Value::BoolValue(self.bools.value(i)))
        } else if self.bytes.is_valid(i) {
            Some(Value::BytesValue(self.bytes.value(i).to_vec()))
        } else if self.complex.is_valid(i) {
            return AnyValue::decode(self.complex.value(i)).unwrap_or_default();
        } else {
            None
        };
        AnyValue { value }
    }

    /// Finds `key` in a row, typed, without building the whole list.
    pub fn typed_of(&self, row: usize, key: &str) -> Option<crate::matcher::Val<'a>> {
        use crate::matcher::Val;
        let i = self.range(row).find(|&i| self.keys.value(i) == key)?;
        Some(if self.strs.is_valid(i) {
            Val::Str(std::borrow::Cow::Borrowed(self.strs.value(i)))
        } else if self.ints.is_valid(i) {
            Val::Int(self.ints.value(i))
        } else if self.doubles.is_valid(i) {
            Val::Double(self.doubles.value(i))
        } else if self.bools.is_valid(i) {
            Val::Bool(self.bools.value(i))
        } else {
            Val::Other
        })
    }

    /// Finds `key` in a row and renders it as text, without building the whole list.
    pub fn text_of(&self, row: usize, key: &str) -> Option<String> {
        self.range(row)
            .find(|&i| self.keys.value(i) == key)
            .map(|i| clew_model::attrs::to_text(&self.value(i)))
    }
}

/// Decodes protobuf blobs that repeat across rows once each.
#[derive(Default)]
pub struct DecodeCache {
    resources: HashMap<Vec<u8>, Arc<Resource>>,
    scopes: HashMap<Vec<u8>, Arc<InstrumentationScope>>,
    urls: HashMap<String, Arc<str>>,
}

impl DecodeCache {
    pub fn resource(&mut self, bytes: &[u8]) -> Arc<Resource> {
        if let Some(r) = self.resources.get(bytes) {
            return r.clone();
        }
        let r = Arc::new(Resource::decode(bytes).unwrap_or_default());
        self.resources.insert(bytes.to_vec(), r.clone());
        r
    }
    pub fn scope(&mut self, bytes: &[u8]) -> Arc<InstrumentationScope> {
        if let Some(s) = self.scopes.get(bytes) {
            return s.clone();
        }
        let s = Arc::new(InstrumentationScope::decode(bytes).unwrap_or_default());
        self.scopes.insert(bytes.to_vec(), s.clone());
        s
    }
    pub fn url(&mut self, s: &str) -> Arc<str> {
        if let Some(u) = self.urls.get(s) {
            return u.clone();
        }
        let u: Arc<str> = Arc::from(s);
        self.urls.insert(s.to_string(), u.clone());
        u
    }
}

/// Converts selected rows of a full record batch back into spans.
pub fn rows_to_spans(
    batch: &RecordBatch,
    rows: impl IntoIterator<Item = usize>,
    cache: &mut DecodeCache,
) -> Result<Vec<FlatSpan>, ArrowError> {
    let c = Columns::new(batch);
    let trace_id = c.fsb(col::TRACE_ID)?;
    let span_id = c.fsb(col::SPAN_ID)?;
    let parent = c.fsb(col::PARENT_SPAN_ID)?;
    let trace_state = c.str(col::TRACE_STATE)?;
    let flags = c.u32(col::FLAGS)?;
    let name = c.str(col::NAME)?;
    let kind = c.i32(col::KIND)?;
    let start = c.i64(col::START)?;
    let end = c.i64(col::END)?;
    let status_code = c.i32(col::STATUS_CODE)?;
    let status_message = c.str(col::STATUS_MESSAGE)?;
    let resource = c.bin(col::RESOURCE)?;
    let resource_schema = c.str(col::RESOURCE_SCHEMA_URL)?;
    let scope = c.bin(col::SCOPE)?;
    let scope_schema = c.str(col::SCOPE_SCHEMA_URL)?;
    let attrs = AttrList::new(c.list(col::ATTRIBUTES)?)?;
    let dropped = c.u32(col::DROPPED_ATTRIBUTES)?;
    let events_links = c.bin(col::EVENTS_LINKS)?;
    let mut ded_str = Vec::new();
    let mut ded_int = Vec::new();
    for (_, colname, ty) in DEDICATED {
        match ty {
            DedicatedType::Str => ded_str.push(Some(c.str(colname)?)),
            DedicatedType::Int => ded_str.push(None),
        }
        match ty {
            DedicatedType::Int => ded_int.push(Some(c.i64(colname)?)),
            DedicatedType::Str => ded_int.push(None),
        }
    }

    let mut out = Vec::new();
    for row in rows {
        let mut attributes: Vec<KeyValue> = attrs
            .range(row)
            .map(|i| KeyValue {
                key: attrs.keys.value(i).to_string(),
                value: Some(attrs.value(i)),
                ..Default::default()
            })
            .collect();
        for (i, (key, _, _)) in DEDICATED.iter().enumerate() {
            let v = if let Some(a) = ded_str[i] {
                a.is_valid(row)
                    .then(|| Value::StringValue(a.value(row).to_string()))
            } else if let Some(a) = ded_int[i] {
                a.is_valid(row).then(|| Value::IntValue(a.value(row)))
            } else {
                None
            };
            if let Some(v) = v {
                attributes.push(KeyValue {
                    key: key.to_string(),
                    value: Some(AnyValue { value: Some(v) }),
                    ..Default::default()
                });
            }
        }
        let extra = if events_links.is_valid(row) {
            Span::decode(events_links.value(row)).unwrap_or_default()
        } else {
            Span::default()
        };
        let code = status_code.value(row);
        let message = status_message.value(row);
        let status = (code != StatusCode::Unset as i32 || !message.is_empty()).then(|| Status {
            code,
            message: message.to_string(),
        });
        let span = Span {
            trace_id: trace_id.value(row).to_vec(),
            span_id: span_id.value(row).to_vec(),
            trace_state: trace_state.value(row).to_string(),
            parent_span_id: if parent.is_valid(row) {
                parent.value(row).to_vec()
            } else {
                Vec::new()
            },
            flags: flags.value(row),
            name: name.value(row).to_string(),
            kind: kind.value(row),
            start_time_unix_nano: start.value(row) as u64,
            end_time_unix_nano: end.value(row) as u64,
            attributes,
            dropped_attributes_count: dropped.value(row),
            events: extra.events,
            dropped_events_count: extra.dropped_events_count,
            links: extra.links,
            dropped_links_count: extra.dropped_links_count,
            status,
        };
        out.push(FlatSpan {
            resource: cache.resource(resource.value(row)),
            resource_schema_url: cache.url(resource_schema.value(row)),
            scope: cache.scope(scope.value(row)),
            scope_schema_url: cache.url(scope_schema.value(row)),
            span,
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clew_model::attrs::{kv, kv_int, kv_str};
    use clew_model::otlp::common::{ArrayValue, KeyValueList};
    use clew_model::otlp::trace::span::{Event, Link};

    /// A span using every field and every attribute type.
    pub fn rich_span(trace: u8, span: u8, parent: Option<u8>) -> FlatSpan {
        let resource = Arc::new(Resource {
            attributes: vec![
                kv_str("service.name", "checkout"),
                kv_str("host.name", "h1"),
            ],
            dropped_attributes_count: 1,
            ..Default::default()
        });
        let scope = Arc::new(InstrumentationScope {
            name: "lib".into(),
            version: "1.2".into(),
            ..Default::default()
        });
        FlatSpan {
            resource,
            resource_schema_url: Arc::from("https://opentelemetry.io/schemas/1.26.0"),
            scope,
            scope_schema_url: Arc::from(""),
            span: Span {
                trace_id: vec![trace; 16],
                span_id: vec![span; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                trace_state: "vendor=x".into(),
                flags: 0x301,
                name: "GET /cart".into(),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + span as u64,
                end_time_unix_nano: 1_700_000_000_050_000_000,
                attributes: vec![
                    kv_str("http.request.method", "GET"),
                    kv_int("http.response.status_code", 200),
                    // Wrong type for its dedicated column: must stay generic and keep its type.
                    kv_int("http.route", 7),
                    kv_str("s", "v"),
                    kv("b", Value::BoolValue(true)),
                    kv("d", Value::DoubleValue(2.5)),
                    kv("by", Value::BytesValue(vec![0, 1, 255])),
                    kv(
                        "arr",
                        Value::ArrayValue(ArrayValue {
                            values: vec![clew_model::attrs::string_value("x")],
                        }),
                    ),
                    kv(
                        "map",
                        Value::KvlistValue(KeyValueList {
                            values: vec![kv_int("k", 1)],
                        }),
                    ),
                ],
                dropped_attributes_count: 3,
                events: vec![Event {
                    time_unix_nano: 5,
                    name: "exception".into(),
                    attributes: vec![kv_str("exception.type", "E")],
                    dropped_attributes_count: 0,
                }],
                dropped_events_count: 1,
                links: vec![Link {
                    trace_id: vec![9; 16],
                    span_id: vec![8; 8],
                    trace_state: "a=b".into(),
                    attributes: vec![],
                    dropped_attributes_count: 0,
                    flags: 1,
                }],
                dropped_links_count: 2,
                status: Some(Status {
                    code: 2,
                    message: "boom".into(),
                }),
            },
        }
    }

    fn sorted_attrs(mut s: FlatSpan) -> FlatSpan {
        s.span.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        s
    }

    #[test]
    fn every_field_round_trips() {
        let spans = vec![rich_span(1, 1, None), rich_span(1, 2, Some(1))];
        let batch = to_record_batch(&spans.iter().collect::<Vec<_>>()).unwrap();
        let back = rows_to_spans(&batch, 0..2, &mut DecodeCache::default()).unwrap();
        for (a, b) in spans.into_iter().zip(back) {
            assert_eq!(sorted_attrs(a), sorted_attrs(b));
        }
    }

    #[test]
    fn dedicated_columns_take_only_their_type() {
        let batch = to_record_batch(&[&rich_span(1, 1, None)]).unwrap();
        let c = Columns::new(&batch);
        assert_eq!(c.str("http_request_method").unwrap().value(0), "GET");
        assert_eq!(c.i64("http_response_status_code").unwrap().value(0), 200);
        assert!(c.str("http_route").unwrap().is_null(0));
        let attrs = AttrList::new(c.list(col::ATTRIBUTES).unwrap()).unwrap();
        assert_eq!(attrs.text_of(0, "http.route").as_deref(), Some("7"));
    }
}
