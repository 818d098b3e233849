//! Firehose's record format conversion: JSON records to Parquet objects.
//!
//! Records are checked when they enter a buffer: against the declared columns (a record
//! that does not fit goes to the error output as `format-conversion-failed` at once), or
//! — with `schema = "infer"` — against the schema of the records already in the same
//! buffer, which each record may widen (new fields, integers meeting fractions, nulls
//! taking a type) but not change. Under `infer` a record that does not fit stays in the
//! buffer, marked: which records of a conflicting buffer are refused is decided at the
//! flush ([`decide`]), in the order of their shards and sequences rather than the order
//! they happened to arrive in, so a replay after a crash (which interleaves shards
//! otherwise) refuses exactly the same records. The refused ones leave with the object
//! as a `format-conversion-failed` object of their own, under the same intent.
//!
//! An inferred schema is the partition's: a buffer starts from the schema its partition's
//! previous object ended with (`Delivery` carries it, and the intent log keeps it across
//! restarts), and the intent of each object records the schema it started from, so a
//! replay decides against the same schema and rebuilds the very same object. At the
//! flush, the buffer's lines are decoded into Arrow batches and written as one Parquet
//! file, compressed inside with the pipeline's `compression`.
//!
//! Why arrival order is enough when nothing conflicts: widening is a join (commutative,
//! associative; the field limits only grow with it), so records that all fit in one order
//! fit in every order and make the same schema (only the order of columns may differ).

use crate::spec::{Codec, Column, ColumnType, Compression, SchemaSpec};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::sync::Arc;

/// Most rows decoded at a time ...
const BATCH_ROWS: usize = 8192;
/// ... and about this many bytes of records (large records make smaller batches).
const BATCH_BYTES: usize = 8 << 20;
/// A row group ends when its encoded size passes this, whatever its rows: the writer's
/// memory stays bounded for records of any size.
pub const ROW_GROUP_BYTES: usize = 64 << 20;
/// Rows per row group: readers (DuckDB, DataFusion, Spark) split work by row group, and
/// about 128 Ki rows keeps groups large enough to compress well, small enough to prune.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Why a record does not convert, or a buffer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The record is not what the schema wants (the message names the field).
    #[error("{0}")]
    Record(String),
    /// Arrow refused the lines (a bug: every line was checked on the way in).
    #[error("cannot convert the buffer to Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The Parquet writer failed.
    #[error("cannot write Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// Why a record does not convert (the message names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Misfit(pub String);

/// What a field has held so far in one partition (`schema = "infer"`). Persisted in the
/// intent log (serde's externally tagged form: `"Int"`, `{"Object": [["a", "Int"]]}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Inferred {
    /// Only nulls.
    Null,
    /// Booleans.
    Bool,
    /// Integers.
    Int,
    /// Numbers with fractions (or integers beyond 64 bits).
    Float,
    /// Text.
    Text,
    /// Objects: fields in the order they first appeared.
    Object(Vec<(String, Inferred)>),
    /// Arrays of this.
    List(Box<Inferred>),
}

impl Inferred {
    fn name(&self) -> &'static str {
        match self {
            Inferred::Null => "null",
            Inferred::Bool => "boolean",
            Inferred::Int => "integer",
            Inferred::Float => "number",
            Inferred::Text => "string",
            Inferred::Object(_) => "object",
            Inferred::List(_) => "array",
        }
    }

    /// Whether a schema read back from disk is one inference could have built: objects
    /// of at most [`MAX_FIELDS`] distinct fields, nested at most [`MAX_DEPTH`] deep.
    /// Anything else (a damaged or hand-edited log) is not used.
    pub fn plausible(&self) -> bool {
        fn walk(t: &Inferred, depth: usize) -> bool {
            if depth > MAX_DEPTH {
                return false;
            }
            match t {
                Inferred::Object(fields) => {
                    let mut names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                    names.sort_unstable();
                    names.dedup();
                    fields.len() <= MAX_FIELDS
                        && names.len() == fields.len()
                        && fields.iter().all(|(_, t)| walk(t, depth + 1))
                }
                Inferred::List(item) => walk(item, depth + 1),
                _ => true,
            }
        }
        matches!(self, Inferred::Object(_)) && walk(self, 0) && self.nodes() <= MAX_NODES
    }

    /// Fields at every level, lists' items included: the schema's size.
    pub fn nodes(&self) -> usize {
        match self {
            Inferred::Object(fields) => fields.iter().map(|(_, t)| 1 + t.nodes()).sum(),
            Inferred::List(item) => 1 + item.nodes(),
            _ => 0,
        }
    }

    /// The type of one JSON value (for messages).
    fn of(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

/// The inferred type of one JSON value, or why its parts conflict (an array holding
/// both text and numbers).
pub fn infer(v: &Value, path: &str) -> Result<Inferred, Misfit> {
    Ok(match v {
        Value::Null => Inferred::Null,
        Value::Bool(_) => Inferred::Bool,
        Value::Number(n) if n.is_i64() => Inferred::Int,
        Value::Number(_) => Inferred::Float,
        Value::String(_) => Inferred::Text,
        Value::Array(a) => {
            let sub = format!("{path}[]");
            let mut item = Inferred::Null;
            for x in a {
                item = widen(&item, &infer(x, &sub)?, &sub)?;
            }
            Inferred::List(Box::new(item))
        }
        Value::Object(m) if m.len() > MAX_FIELDS => {
            return Err(Misfit(format!(
                "{} has more than {MAX_FIELDS} fields",
                if path.is_empty() { "the record" } else { path }
            )))
        }
        Value::Object(m) => Inferred::Object(
            m.iter()
                .map(|(k, v)| {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    infer(v, &sub).map(|t| (k.clone(), t))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Whether a schema has a field a Parquet file can store as a column (`{}` and
/// `{"a": {}}` have none). Checked on a buffer's whole schema at the flush, not per
/// record: `{}` after `{"a": 1}` is a record like any other.
pub fn has_column(t: &Inferred) -> bool {
    arrow_type(t).is_some()
}

/// `a` widened to hold `b` too, or why it cannot (`path` names the field).
fn widen(a: &Inferred, b: &Inferred, path: &str) -> Result<Inferred, Misfit> {
    use Inferred::*;
    Ok(match (a, b) {
        (Null, x) | (x, Null) => x.clone(),
        (Int, Float) | (Float, Int) => Float,
        (Object(fa), Object(fb)) => {
            let mut out = fa.clone();
            for (k, vb) in fb {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let full = out.len() >= MAX_FIELDS;
                match out.iter_mut().find(|(ka, _)| ka == k) {
                    Some((_, va)) => *va = widen(va, vb, &sub)?,
                    None if full => {
                        return Err(Misfit(format!(
                            "{} would have more than {MAX_FIELDS} fields",
                            if path.is_empty() { "the schema" } else { path }
                        )))
                    }
                    None => out.push((k.clone(), vb.clone())),
                }
            }
            Object(out)
        }
        (List(ia), List(ib)) => List(Box::new(widen(ia, ib, &format!("{path}[]"))?)),
        (x, y) if x == y => x.clone(),
        (x, y) => {
            return Err(Misfit(format!(
                "field `{path}` holds {} in this partition's earlier records, not {}",
                x.name(),
                y.name()
            )))
        }
    })
}

/// A buffer's conversion state: the inferred schema it started from (its partition's,
/// recorded in the object's intent) and the one its records have widened it to.
#[derive(Debug, Clone, Default)]
pub struct BufferSchema {
    start: Option<Inferred>,
    inferred: Option<Inferred>,
}

impl BufferSchema {
    /// The state of a new buffer whose partition's schema is `start` (`None`: the
    /// partition has none yet, its first record will make it).
    pub fn starting(start: Option<Inferred>) -> BufferSchema {
        BufferSchema {
            inferred: start.clone(),
            start,
        }
    }

    /// The schema the buffer started from.
    pub fn start(&self) -> Option<&Inferred> {
        self.start.as_ref()
    }

    /// The schema the buffer's records have built (the partition's from now on).
    pub fn inferred(&self) -> Option<&Inferred> {
        self.inferred.as_ref()
    }

    /// Takes a record into the buffer's inferred schema, or says why it does not fit what
    /// the partition's earlier records hold (the schema is then unchanged). A record the
    /// schema already covers — the usual case — costs a walk and no allocation.
    /// `raw` is the record as written: the first record's fields become columns in its
    /// order, at every level (the parsed map is sorted by name); fields a later record
    /// adds follow, in that record's order.
    pub fn take(&mut self, record: &Value, raw: &[u8]) -> Result<(), Misfit> {
        match &mut self.inferred {
            None => {
                let mut t = infer(record, "")?;
                reorder(&mut t, &written_order(raw));
                self.inferred = Some(t);
            }
            Some(cur) if covers(cur, record) => {}
            Some(cur) => {
                let mut more = infer(record, "")?;
                reorder(&mut more, &written_order(raw));
                let wider = widen(cur, &more, "")?;
                if wider.nodes() > MAX_NODES {
                    return Err(Misfit(format!(
                        "the schema would have more than {MAX_NODES} fields in all"
                    )));
                }
                *cur = wider;
            }
        }
        Ok(())
    }
}

/// What the flush decided for a buffer under `schema = "infer"` whose records conflict
/// (or make no column at all): the schema of the records kept and the records refused.
#[derive(Debug)]
pub struct Decided {
    /// The schema the kept records make, from the buffer's start.
    pub schema: BufferSchema,
    /// The refused records, by line index: (index, why, the line without its newline).
    pub refused: Vec<(usize, String, Vec<u8>)>,
}

/// Decides which lines of a buffer a Parquet object keeps, in canonical order: by shard
/// tag (`tags[i]` is line `i`'s), then by position within the shard — arrival order
/// within one shard — starting from the schema the buffer started from. How arrival
/// interleaved the shards does not matter, so a replay decides the same. `open` reads the
/// lines again; it is called once per distinct tag (a pass keeps only its tag's lines),
/// so memory stays one line, whatever the buffer's size.
pub fn decide<'a>(
    start: Option<Inferred>,
    tags: &[u64],
    mut open: impl FnMut() -> std::io::Result<Box<dyn BufRead + 'a>>,
) -> std::io::Result<Decided> {
    let mut order = tags.to_vec();
    order.sort_unstable();
    order.dedup();
    let mut schema = BufferSchema::starting(start);
    let mut refused = Vec::new();
    for tag in order {
        each_line(open()?, |i, raw| {
            if tags.get(i) == Some(&tag) {
                let fit = serde_json::from_slice::<Value>(raw)
                    .map_err(|e| Misfit(format!("not JSON: {e}")))
                    .and_then(|v| schema.take(&v, raw));
                if let Err(e) = fit {
                    refused.push((i, e.0, raw.to_vec()));
                }
            }
        })?;
    }
    if !schema.inferred().is_some_and(has_column) {
        // Nothing the partition's records hold makes a column: none of them converts.
        refused.clear();
        each_line(open()?, |i, raw| {
            refused.push((
                i,
                "the partition's records have no field to store as a column".into(),
                raw.to_vec(),
            ));
        })?;
    }
    refused.sort_unstable_by_key(|r| r.0);
    Ok(Decided { schema, refused })
}

/// Calls `f` with the index and the bytes (without the newline) of every line of `input`.
fn each_line(mut input: impl BufRead, mut f: impl FnMut(usize, &[u8])) -> std::io::Result<()> {
    let mut line = Vec::new();
    let mut i = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        f(i, line.strip_suffix(b"\n").unwrap_or(&line));
        i += 1;
    }
}

/// The lines of `inner` but those whose index is in `skip` (sorted): a buffer's lines
/// without its refused records, for the Parquet writer.
pub struct SkipLines<'s, R> {
    inner: R,
    skip: &'s [usize],
    line: usize,
    buf: Vec<u8>,
    at: usize,
}

impl<'s, R: BufRead> SkipLines<'s, R> {
    /// `inner` without the lines at `skip` (sorted indices).
    pub fn new(inner: R, skip: &'s [usize]) -> Self {
        SkipLines {
            inner,
            skip,
            line: 0,
            buf: Vec::new(),
            at: 0,
        }
    }
}

impl<R: BufRead> std::io::Read for SkipLines<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let b = self.fill_buf()?;
            let n = b.len().min(out.len());
            out[..n].copy_from_slice(&b[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for SkipLines<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.at >= self.buf.len() {
            self.buf.clear();
            self.at = 0;
            if self.inner.read_until(b'\n', &mut self.buf)? == 0 {
                break;
            }
            let i = self.line;
            self.line += 1;
            if self.skip.first() == Some(&i) {
                self.skip = &self.skip[1..];
                self.buf.clear();
            }
        }
        Ok(&self.buf[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
    }
}

/// `schema = "infer"`: each partition's schema as its last object left it, by partition
/// id. Bounded: past the cap (at least [`MIN_CARRIED`], more with a larger
/// `max_active_partitions`) the least recently used are forgotten, an eighth at a time,
/// and those partitions infer afresh.
pub struct PartitionSchemas {
    map: std::collections::HashMap<String, (Inferred, u64)>,
    clock: u64,
    cap: usize,
}

/// Fewest partition schemas a pipeline keeps.
pub const MIN_CARRIED: usize = 10_000;

impl PartitionSchemas {
    /// The schemas found in the intent log, for a pipeline with this many active
    /// partitions at most.
    pub fn new(
        found: std::collections::HashMap<String, Inferred>,
        max_active_partitions: u32,
    ) -> PartitionSchemas {
        PartitionSchemas {
            map: found.into_iter().map(|(p, s)| (p, (s, 0))).collect(),
            clock: 0,
            cap: MIN_CARRIED.max(max_active_partitions as usize),
        }
    }

    /// Partitions with a schema.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The schema a new buffer of `partition` starts from.
    pub fn get(&mut self, partition: &str) -> Option<Inferred> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(partition).map(|(s, used)| {
            *used = clock;
            s.clone()
        })
    }

    /// Makes `schema` the partition's (a flushed object ended with it). Returns whether
    /// that changed anything, and the partitions forgotten to stay under the cap.
    pub fn keep(&mut self, partition: &str, schema: &Inferred) -> (bool, Vec<String>) {
        self.clock += 1;
        let clock = self.clock;
        if let Some((s, used)) = self.map.get_mut(partition) {
            *used = clock;
            if s == schema {
                return (false, Vec::new());
            }
            *s = schema.clone();
            return (true, Vec::new());
        }
        self.map
            .insert(partition.to_string(), (schema.clone(), clock));
        let mut forgotten = Vec::new();
        if self.map.len() > self.cap + self.cap / 8 {
            let mut by_use: Vec<(u64, &String)> =
                self.map.iter().map(|(p, (_, used))| (*used, p)).collect();
            by_use.sort_unstable();
            forgotten = by_use
                .into_iter()
                .take(self.map.len() - self.cap)
                .map(|(_, p)| p.clone())
                .collect();
            for p in &forgotten {
                self.map.remove(p);
            }
        }
        (true, forgotten)
    }
}

/// The member names of a JSON value's objects in the order written, at every level; for
/// an array, its first element's (the rest are skipped: one pass, no merging).
#[derive(Debug, Default, PartialEq)]
struct Order(Vec<(String, Order)>);

impl<'de> serde::Deserialize<'de> for Order {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Order, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Order;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Order, E> {
                Ok(Order::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Order, E> {
                Ok(Order::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Order, E> {
                Ok(Order::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Order, E> {
                Ok(Order::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Order, E> {
                Ok(Order::default())
            }
            fn visit_unit<E>(self) -> Result<Order, E> {
                Ok(Order::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Order, A::Error> {
                let first = seq.next_element::<Order>()?.unwrap_or_default();
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(first)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Order, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    keys.push((k, map.next_value::<Order>()?));
                }
                Ok(Order(keys))
            }
        }
        d.deserialize_any(V)
    }
}

/// The order `raw`'s fields were written in (empty when it does not parse: names order).
fn written_order(raw: &[u8]) -> Order {
    serde_json::from_slice(raw).unwrap_or_default()
}

/// Puts the fields of `t` (objects at every level, list items included) in the order of
/// `order`; fields it does not name keep their order, after those it does.
fn reorder(t: &mut Inferred, order: &Order) {
    match t {
        Inferred::Object(fields) => {
            let at: std::collections::HashMap<&str, (usize, &Order)> = order
                .0
                .iter()
                .enumerate()
                .rev()
                .map(|(i, (k, o))| (k.as_str(), (i, o)))
                .collect();
            fields.sort_by_key(|(k, _)| at.get(k.as_str()).map_or(usize::MAX, |a| a.0));
            for (k, sub) in fields {
                if let Some((_, o)) = at.get(k.as_str()) {
                    reorder(sub, o);
                }
            }
        }
        Inferred::List(item) => reorder(item, order),
        _ => {}
    }
}

/// Whether `t` already holds `v` (widening by `v` would change nothing).
fn covers(t: &Inferred, v: &Value) -> bool {
    match (t, v) {
        (_, Value::Null) => true,
        (Inferred::Bool, Value::Bool(_)) | (Inferred::Text, Value::String(_)) => true,
        (Inferred::Int, Value::Number(n)) => n.is_i64(),
        (Inferred::Float, Value::Number(_)) => true,
        (Inferred::List(item), Value::Array(a)) => a.iter().all(|x| covers(item, x)),
        (Inferred::Object(fields), Value::Object(m)) => m
            .iter()
            .all(|(k, x)| fields.iter().any(|(f, t)| f == k && covers(t, x))),
        _ => false,
    }
}

/// Most fields of one object (record or nested) an inferred schema takes: past it a
/// record is refused rather than a schema of unbounded width built.
pub const MAX_FIELDS: usize = 1000;

/// Deepest nesting of a schema read back from disk (JSON parsing stops at 128 anyway).
pub const MAX_DEPTH: usize = 100;

/// Most fields an inferred schema has at all levels together: [`MAX_FIELDS`] bounds one
/// object, this the whole (nested objects widened by many records could otherwise grow
/// a schema — kept per partition and in every intent — without bound).
pub const MAX_NODES: usize = 10_000;

/// Checks one record for `schema`: a JSON object fitting the declared columns (or, for
/// `infer`, any JSON object). Returns the parsed record.
pub fn check(schema: &SchemaSpec, data: &[u8]) -> Result<Value, Misfit> {
    let v: Value = serde_json::from_slice(data).map_err(|e| Misfit(format!("not JSON: {e}")))?;
    let Value::Object(m) = &v else {
        return Err(Misfit(format!(
            "a record must be a JSON object, not {}",
            Inferred::of(&v)
        )));
    };
    if let SchemaSpec::Declared(cols) = schema {
        fits_fields(cols, m, "")?;
    }
    Ok(v)
}

fn fits_fields(
    cols: &[Column],
    m: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<(), Misfit> {
    for c in cols {
        let sub = if path.is_empty() {
            c.name.clone()
        } else {
            format!("{path}.{}", c.name)
        };
        fits(c, m.get(&c.name).unwrap_or(&Value::Null), &sub)?;
    }
    Ok(())
}

fn fits(c: &Column, v: &Value, path: &str) -> Result<(), Misfit> {
    let want = |what: &str| {
        Err(Misfit(format!(
            "field `{path}` must be {what}, not {}",
            Inferred::of(v)
        )))
    };
    if v.is_null() {
        return if c.nullable {
            Ok(())
        } else {
            Err(Misfit(format!(
                "field `{path}` is required (nullable = false) but missing or null"
            )))
        };
    }
    match (&c.ty, v) {
        (ColumnType::String, Value::String(_)) => Ok(()),
        (ColumnType::String, _) => want("a string"),
        (ColumnType::Boolean, Value::Bool(_)) => Ok(()),
        (ColumnType::Boolean, _) => want("a boolean"),
        (ColumnType::Int32, Value::Number(n))
            if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) =>
        {
            Ok(())
        }
        (ColumnType::Int32, _) => want("an integer within 32 bits"),
        (ColumnType::Int64, Value::Number(n)) if n.is_i64() => Ok(()),
        (ColumnType::Int64, _) => want("an integer within 64 bits"),
        (ColumnType::Float32 | ColumnType::Float64, Value::Number(_)) => Ok(()),
        (ColumnType::Float32 | ColumnType::Float64, _) => want("a number"),
        (ColumnType::Timestamp, Value::Number(n)) if n.is_i64() => Ok(()),
        (ColumnType::Timestamp, Value::String(s)) => {
            // The parser the Arrow decoder uses, in the column's zone (UTC).
            let utc: arrow_array::timezone::Tz = "+00:00"
                .parse()
                .map_err(|_| Misfit("no UTC time zone".into()))?;
            arrow_cast::parse::string_to_datetime(&utc, s)
                .map(|_| ())
                .map_err(|_| Misfit(format!("field `{path}` is not a timestamp: `{s}`")))
        }
        (ColumnType::Timestamp, _) => want("a timestamp (RFC 3339 text or milliseconds)"),
        (ColumnType::Date, Value::Number(n))
            if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()) =>
        {
            Ok(())
        }
        (ColumnType::Date, Value::String(s)) => {
            use arrow_cast::parse::Parser as _;
            arrow_array::types::Date32Type::parse(s)
                .map(|_| ())
                .ok_or_else(|| Misfit(format!("field `{path}` is not a date: `{s}`")))
        }
        (ColumnType::Date, _) => want("a date (YYYY-MM-DD or days)"),
        (ColumnType::Struct(fields), Value::Object(m)) => fits_fields(fields, m, path),
        (ColumnType::Struct(_), _) => want("an object"),
        (ColumnType::List(item), Value::Array(a)) => {
            for (i, x) in a.iter().enumerate() {
                fits(item, x, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (ColumnType::List(_), _) => want("an array"),
    }
}

/// The Arrow schema of declared columns.
pub fn declared_schema(cols: &[Column]) -> Schema {
    Schema::new(cols.iter().map(field_of).collect::<Vec<_>>())
}

fn field_of(c: &Column) -> Field {
    let t = match &c.ty {
        ColumnType::String => DataType::Utf8,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        // An offset, not a zone name: readers need no time zone database for it.
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
        ColumnType::Date => DataType::Date32,
        ColumnType::Struct(fields) => DataType::Struct(Fields::from(
            fields.iter().map(field_of).collect::<Vec<_>>(),
        )),
        ColumnType::List(item) => DataType::List(Arc::new(field_of(&Column {
            name: "item".into(),
            ty: item.ty.clone(),
            nullable: item.nullable,
        }))),
    };
    Field::new(&c.name, t, c.nullable)
}

/// The Arrow type an inferred field becomes (`None`: nothing to store, an empty object).
fn arrow_type(i: &Inferred) -> Option<DataType> {
    Some(match i {
        // Only nulls seen: text, the type any later value can be read as.
        Inferred::Null | Inferred::Text => DataType::Utf8,
        Inferred::Bool => DataType::Boolean,
        Inferred::Int => DataType::Int64,
        Inferred::Float => DataType::Float64,
        Inferred::Object(fields) => {
            let fs: Vec<Field> = fields
                .iter()
                .filter_map(|(k, v)| arrow_type(v).map(|t| Field::new(k, t, true)))
                .collect();
            if fs.is_empty() {
                return None;
            }
            DataType::Struct(Fields::from(fs))
        }
        Inferred::List(item) => DataType::List(Arc::new(Field::new(
            "item",
            arrow_type(item).unwrap_or(DataType::Utf8),
            true,
        ))),
    })
}

/// The Arrow schema of a buffer: declared, or inferred from its records.
pub fn buffer_schema(schema: &SchemaSpec, state: &BufferSchema) -> Schema {
    match (schema, &state.inferred) {
        (SchemaSpec::Declared(cols), _) => declared_schema(cols),
        (SchemaSpec::Infer, Some(Inferred::Object(fields))) => Schema::new(
            fields
                .iter()
                .filter_map(|(k, v)| arrow_type(v).map(|t| Field::new(k, t, true)))
                .collect::<Vec<_>>(),
        ),
        (SchemaSpec::Infer, _) => Schema::empty(),
    }
}

/// Writer properties: the pipeline's compression inside the file, row groups of
/// [`ROW_GROUP_ROWS`].
fn properties(codec: Codec) -> Result<parquet::file::properties::WriterProperties, ConvertError> {
    use parquet::basic::{Compression as P, GzipLevel, ZstdLevel};
    let c = match codec.compression {
        Compression::None => P::UNCOMPRESSED,
        Compression::Snappy => P::SNAPPY,
        Compression::Gzip => P::GZIP(GzipLevel::try_new(codec.level)?),
        Compression::Zstd => P::ZSTD(ZstdLevel::try_new(codec.level as i32)?),
    };
    Ok(parquet::file::properties::WriterProperties::builder()
        .set_compression(c)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// Converts the JSON lines of `input` (every one checked on the way in; `avg_record`
/// bytes each on average) into one Parquet file written to `out`. Returns the rows
/// written. Memory: one decoded batch of about [`BATCH_BYTES`] and one row group of at
/// most [`ROW_GROUP_BYTES`] encoded.
pub fn write(
    input: impl BufRead,
    schema: Schema,
    codec: Codec,
    avg_record: usize,
    out: impl Write + Send,
) -> Result<u64, ConvertError> {
    let schema = Arc::new(schema);
    let rows_per_batch = (BATCH_BYTES / avg_record.max(1)).clamp(1, BATCH_ROWS);
    let reader = arrow_json::ReaderBuilder::new(Arc::clone(&schema))
        .with_batch_size(rows_per_batch)
        .build(input)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(out, schema, Some(properties(codec)?))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        w.write(&batch)?;
        if w.in_progress_size() >= ROW_GROUP_BYTES {
            w.flush()?;
        }
    }
    w.close()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    /// The per-partition schemas stay under their cap, forgetting the least recently used.
    #[test]
    fn partition_schemas_forget_the_least_recently_used_past_the_cap() {
        let s = |n: &str| Inferred::Object(vec![(n.to_string(), Inferred::Int)]);
        let mut p = PartitionSchemas::new(
            std::collections::HashMap::from([("old".to_string(), s("a"))]),
            1,
        );
        assert_eq!(p.keep("old", &s("a")), (false, vec![]), "unchanged");
        assert_eq!(p.keep("old", &s("b")), (true, vec![]));
        let mut forgotten = Vec::new();
        for i in 0..MIN_CARRIED + MIN_CARRIED / 8 {
            if i == 2000 {
                // Used again: the oldest are others now.
                assert_eq!(p.get("old"), Some(s("b")));
            }
            let (changed, f) = p.keep(&format!("p{i}"), &s("x"));
            assert!(changed);
            forgotten.extend(f);
        }
        assert_eq!(p.len(), MIN_CARRIED);
        assert_eq!(forgotten.len(), MIN_CARRIED / 8 + 1);
        assert!(p.get("old").is_some() && p.get("p0").is_none() && p.get("p1250").is_none());
        assert!(p.get("p1251").is_some());
    }

    use super::*;

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            ty,
            nullable,
        }
    }

    #[test]
    fn declared_columns_refuse_what_does_not_fit_and_name_the_field() {
        let s = SchemaSpec::Declared(vec![
            col("id", ColumnType::String, false),
            col("n", ColumnType::Int32, true),
            col("at", ColumnType::Timestamp, true),
            col(
                "data",
                ColumnType::Struct(vec![col("x", ColumnType::Float64, false)]),
                true,
            ),
            col(
                "tags",
                ColumnType::List(Box::new(col("item", ColumnType::String, false))),
                true,
            ),
        ]);
        assert!(check(&s, br#"{"id":"a","n":1,"at":"2026-11-30T10:00:00Z","data":{"x":1},"tags":["a"],"extra":true}"#).is_ok());
        let bad = |data: &str, want: &str| {
            let e = check(&s, data.as_bytes()).unwrap_err();
            assert!(e.0.contains(want), "{data}: {e}");
        };
        bad(r#"{"n":1}"#, "field `id` is required");
        bad(r#"{"id":5}"#, "field `id` must be a string, not integer");
        bad(
            r#"{"id":"a","n":5000000000}"#,
            "field `n` must be an integer within 32 bits",
        );
        bad(
            r#"{"id":"a","at":"yesterday"}"#,
            "field `at` is not a timestamp",
        );
        bad(
            r#"{"id":"a","data":{"x":"1"}}"#,
            "field `data.x` must be a number, not string",
        );
        bad(
            r#"{"id":"a","tags":["a",null]}"#,
            "field `tags[1]` is required",
        );
        bad(r#"[1]"#, "must be a JSON object, not array");
        bad(r#"{"id":"a""#, "not JSON");
    }

    #[test]
    fn inference_widens_and_refuses_conflicts() {
        let mut b = BufferSchema::default();
        let j = |s: &'static str| (serde_json::from_str::<Value>(s).unwrap(), s.as_bytes());
        let take = |b: &mut BufferSchema, (v, raw): (Value, &[u8])| b.take(&v, raw);
        take(&mut b, j(r#"{"a":1,"b":null,"c":{"x":true}}"#)).unwrap();
        take(&mut b, j(r#"{"a":1.5,"b":"t","d":[1,2]}"#)).unwrap();
        take(&mut b, j(r#"{"c":{"y":"z"}}"#)).unwrap();
        // Covered records change nothing.
        let before = b.inferred.clone();
        take(&mut b, j(r#"{"a":2,"d":[],"c":{"x":null}}"#)).unwrap();
        assert_eq!(b.inferred, before);
        let e = take(&mut b, j(r#"{"a":"x"}"#)).unwrap_err();
        assert!(e.0.contains("field `a` holds number"), "{e}");
        let e = take(&mut b, j(r#"{"c":{"x":1}}"#)).unwrap_err();
        assert!(e.0.contains("field `c.x`"), "{e}");
        assert_eq!(
            b.inferred, before,
            "a refused record leaves the schema as it was"
        );
        let e = take(&mut b, j(r#"{"d":[1,"x"]}"#)).unwrap_err();
        assert!(e.0.contains("field `d[]`"), "{e}");
        let wide: serde_json::Map<String, Value> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), Value::Bool(true)))
            .collect();
        let e = BufferSchema::default()
            .take(&Value::Object(wide), b"")
            .unwrap_err();
        assert!(e.0.contains("more than 1000 fields"), "{e}");
        // The first record's order, not the names' order; later fields follow.
        let mut o = BufferSchema::default();
        take(&mut o, j(r#"{"z":1,"type":"t","a":{"y":1,"b":2}}"#)).unwrap();
        take(&mut o, j(r#"{"m":true}"#)).unwrap();
        let names: Vec<String> = buffer_schema(&SchemaSpec::Infer, &o)
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["z", "type", "a", "m"]);
        // Nested fields too, list items included; a later record's new fields follow in
        // its order.
        let mut n = BufferSchema::default();
        take(
            &mut n,
            j(r#"{"s":{"y":1,"b":{"q":1,"c":2}},"l":[{"z":1,"a":2},{"m":3}]}"#),
        )
        .unwrap();
        take(&mut n, j(r#"{"s":{"x":1,"d":2,"b":{"r":0}}}"#)).unwrap();
        assert_eq!(
            serde_json::to_string(n.inferred().unwrap()).unwrap(),
            r#"{"Object":[["s",{"Object":[["y","Int"],["b",{"Object":[["q","Int"],["c","Int"],["r","Int"]]}],["x","Int"],["d","Int"]]}],["l",{"List":{"Object":[["z","Int"],["a","Int"],["m","Int"]]}}]]}"#
        );
        for empty in ["{}", r#"{"a":{}}"#] {
            let t = infer(&serde_json::from_str(empty).unwrap(), "").unwrap();
            assert!(!has_column(&t), "{empty}");
        }
        assert!(has_column(
            &infer(&serde_json::from_str(r#"{"a":null}"#).unwrap(), "").unwrap()
        ));
        // Many records, each within MAX_FIELDS, cannot widen a schema past MAX_NODES.
        let mut big = BufferSchema::default();
        let mut refused = None;
        for i in 0..20 {
            let inner: serde_json::Map<String, Value> = (0..900)
                .map(|k| (format!("k{k}"), Value::Bool(true)))
                .collect();
            let rec = serde_json::json!({ format!("o{i}"): inner });
            if let Err(e) = big.take(&rec, b"") {
                refused = Some((i, e));
                break;
            }
        }
        let (i, e) = refused.unwrap();
        assert_eq!(i, 11, "{e}");
        assert!(e.0.contains("more than 10000 fields in all"), "{e}");
        assert!(big.inferred().unwrap().plausible());
        let schema = buffer_schema(&SchemaSpec::Infer, &b);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    }

    proptest::proptest! {
        /// Whatever order shards interleave in (each shard's records in order), the
        /// flush's decision refuses the same records and keeps the same schema; and the
        /// lines left for the writer are exactly the others.
        #[test]
        fn decisions_do_not_depend_on_how_shards_interleave(
            recs in proptest::collection::vec(
                (0u64..3, proptest::sample::select(vec![
                    r#"{"x":1}"#, r#"{"x":1.5}"#, r#"{"x":"t"}"#, r#"{"x":null}"#,
                    r#"{"x":[1]}"#, r#"{"x":["a"]}"#, r#"{"y":{"z":true}}"#, r#"{"y":{"z":2}}"#,
                    r#"{}"#, r#"{"y":{}}"#, r#"{"x":[1,"a"]}"#,
                ])),
                1..24,
            ),
            seed in proptest::prelude::any::<u64>(),
        ) {
            // Another interleaving: per shard, the same order; across shards, shuffled.
            let mut by_tag: std::collections::BTreeMap<u64, Vec<(usize, &str)>> = Default::default();
            for (i, (t, r)) in recs.iter().enumerate() {
                by_tag.entry(*t).or_default().push((i, *r));
            }
            let mut queues: Vec<std::collections::VecDeque<(usize, &str)>> =
                by_tag.into_values().map(Into::into).collect();
            let mut other = Vec::new();
            let mut x = seed | 1;
            while queues.iter().any(|q| !q.is_empty()) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                let live: Vec<usize> = (0..queues.len()).filter(|&q| !queues[q].is_empty()).collect();
                let q = live[(x % live.len() as u64) as usize];
                if let Some(r) = queues[q].pop_front() { other.push(r); }
            }
            let run = |order: &[(usize, u64, &str)]| {
                let lines: String = order.iter().map(|(_, _, r)| format!("{r}\n")).collect();
                let tags: Vec<u64> = order.iter().map(|(_, t, _)| *t).collect();
                // A partition without a schema yet, or one whose earlier object set `x`.
                let start = (seed % 2 == 1).then(|| Inferred::Object(vec![("x".into(), Inferred::Int)]));
                let d = decide(start, &tags, || {
                    Ok(Box::new(std::io::Cursor::new(lines.clone().into_bytes())))
                }).unwrap();
                let skip: Vec<usize> = d.refused.iter().map(|r| r.0).collect();
                let mut kept = String::new();
                std::io::Read::read_to_string(
                    &mut SkipLines::new(lines.as_bytes(), &skip), &mut kept).unwrap();
                let mut refused: Vec<usize> = d.refused.iter().map(|r| order[r.0].0).collect();
                refused.sort_unstable();
                let mut kept_ids: Vec<usize> = (0..order.len())
                    .filter(|i| !skip.contains(i)).map(|i| order[i].0).collect();
                kept_ids.sort_unstable();
                let expect: String = (0..order.len()).filter(|i| !skip.contains(i))
                    .map(|i| format!("{}\n", order[i].2)).collect();
                proptest::prop_assert_eq!(&kept, &expect);
                let fields = |t: &Option<Inferred>| {
                    let mut s = format!("{t:?}").into_bytes();
                    s.sort_unstable();
                    s
                };
                Ok((refused, kept_ids, fields(&d.schema.inferred().cloned())))
            };
            let arrival: Vec<(usize, u64, &str)> =
                recs.iter().enumerate().map(|(i, (t, r))| (i, *t, *r)).collect();
            let shuffled: Vec<(usize, u64, &str)> =
                other.iter().map(|&(i, r)| (i, recs[i].0, r)).collect();
            proptest::prop_assert_eq!(run(&arrival)?, run(&shuffled)?);
        }
    }

    #[test]
    fn lines_become_a_parquet_file_with_the_schema() {
        let s = SchemaSpec::Declared(vec![
            col("id", ColumnType::String, false),
            col("n", ColumnType::Int64, true),
            col("at", ColumnType::Timestamp, true),
        ]);
        let mut lines = Vec::new();
        for i in 0..1000 {
            lines.extend_from_slice(
                format!("{{\"id\":\"e{i}\",\"n\":{i},\"at\":\"2026-11-30T10:00:00Z\"}}\n")
                    .as_bytes(),
            );
        }
        let mut out = Vec::new();
        let codec = Codec {
            compression: Compression::Zstd,
            level: 3,
        };
        let rows = write(
            &lines[..],
            buffer_schema(&s, &BufferSchema::default()),
            codec,
            60,
            &mut out,
        )
        .unwrap();
        assert_eq!(rows, 1000);
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(out),
        )
        .unwrap()
        .build()
        .unwrap();
        let batches: Vec<_> = r.map(|b| b.unwrap()).collect();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1000);
        assert_eq!(
            batches[0].schema().field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()))
        );
    }
}
