//! One pipeline's objects as a table: the data columns inferred from the objects, plus
//! one column per partition key and time folder of its prefix, and folder pruning —
//! filters on those columns drop objects before any is opened.

use crate::layout::{ColumnKind, Layout, PartValue};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, filter_partitioned_file};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{
    CsvSource, FileGroup, FileScanConfigBuilder, FileSource, JsonSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a table's scans did (for the report after a query).
#[derive(Debug, Default)]
pub struct ScanStats {
    /// Objects of the table found by listing.
    pub listed: AtomicUsize,
    /// Objects left after partition pruning (handed to the readers).
    pub scanned: AtomicUsize,
}

/// Objects sampled for the JSON schema, and records read from each.
pub const SAMPLE_OBJECTS: usize = 32;
/// Records read from each sampled object.
pub const SAMPLE_RECORDS: usize = 1000;
/// Most bytes read from one sampled object.
const SAMPLE_BYTES: usize = 8 << 20;

/// An object of the table, with its column values.
#[derive(Debug, Clone)]
pub struct LakeObject {
    /// Where it is.
    pub meta: ObjectMeta,
    /// One value per layout column.
    pub values: Vec<PartValue>,
}

impl LakeObject {
    fn is_parquet(&self) -> bool {
        self.meta.location.as_ref().ends_with(".parquet")
    }
}

/// Lists the table's objects: everything under the layout's fixed start whose key
/// matches the layout (error output, temp files and other pipelines' objects do not).
pub async fn list_objects(
    store: &dyn ObjectStore,
    root: &Path,
    layout: &Layout,
) -> object_store::Result<Vec<LakeObject>> {
    // Listing goes by whole folders: start at the last `/` of the fixed part.
    let fixed_dir = match layout.fixed.rfind('/') {
        Some(i) => &layout.fixed[..i],
        None => "",
    };
    let start = Path::from(format!("{root}/{fixed_dir}"));
    let root_str = root.as_ref();
    let metas: Vec<ObjectMeta> = store.list(Some(&start)).try_collect().await?;
    let mut out = Vec::new();
    for meta in metas {
        let full = meta.location.as_ref();
        let rel = if root_str.is_empty() {
            full
        } else {
            match full
                .strip_prefix(root_str)
                .and_then(|r| r.strip_prefix('/'))
            {
                Some(r) => r,
                None => continue,
            }
        };
        if let Some(values) = layout.parse(rel) {
            out.push(LakeObject { meta, values });
        }
    }
    out.sort_by(|a, b| a.meta.location.cmp(&b.meta.location));
    Ok(out)
}

/// Which objects a table reads.
#[derive(Debug, Clone)]
pub enum Objects {
    /// A pipeline's: everything under `root` its prefix layout matches.
    Layout {
        /// The lake's root in the store.
        root: Path,
        /// The prefix layout.
        layout: Layout,
    },
    /// One object (S3 Select's `s3object`).
    Single(ObjectMeta),
}

impl Objects {
    /// The layout whose columns the table adds (none for one object).
    pub fn layout(&self) -> Option<&Layout> {
        match self {
            Objects::Layout { layout, .. } => Some(layout),
            Objects::Single(_) => None,
        }
    }

    /// The objects, with their column values.
    pub async fn list(&self, store: &dyn ObjectStore) -> object_store::Result<Vec<LakeObject>> {
        match self {
            Objects::Layout { root, layout } => list_objects(store, root, layout).await,
            Objects::Single(meta) => Ok(vec![LakeObject {
                meta: meta.clone(),
                values: Vec::new(),
            }]),
        }
    }
}

/// How a table's objects are read.
#[derive(Debug, Clone)]
pub enum Format {
    /// NDJSON, or Parquet for objects named `.parquet`.
    Auto,
    /// JSON: one document per object (an array's elements are the records), or lines.
    Json {
        /// Whether the object is one JSON array.
        array: bool,
    },
    /// CSV with these options.
    Csv(Box<datafusion::common::config::CsvOptions>),
}

/// The table.
#[derive(Debug)]
pub struct LakeTable {
    url: ObjectStoreUrl,
    /// The objects, listed once when the table was registered: every scan of a query
    /// sees the same lake, and a lake on S3 is listed once per query, not per scan.
    listed: Vec<LakeObject>,
    format: Format,
    file_schema: SchemaRef,
    part_fields: Vec<FieldRef>,
    schema: SchemaRef,
    stats: Arc<ScanStats>,
}

/// The columns a layout adds.
pub fn partition_fields(layout: &Layout) -> Vec<FieldRef> {
    layout
        .columns
        .iter()
        .map(|(name, kind)| {
            let t = match kind {
                ColumnKind::Key => DataType::Utf8,
                ColumnKind::Time { .. } => DataType::Int32,
            };
            Arc::new(Field::new(name, t, false))
        })
        .collect()
}

/// A column value as DataFusion holds it.
pub fn scalar(v: &PartValue) -> ScalarValue {
    match v {
        PartValue::Text(s) => ScalarValue::Utf8(Some(s.clone())),
        PartValue::Number(n) => ScalarValue::Int32(Some(*n)),
    }
}

impl LakeTable {
    /// A table over the `listed` objects of the store registered at `url` (wrapped to
    /// decompress), whose objects have `data_schema` (fields named like a layout
    /// column are dropped: the folder's value stands for them).
    pub fn new(
        url: ObjectStoreUrl,
        objects: &Objects,
        listed: Vec<LakeObject>,
        format: Format,
        data_schema: &Schema,
        stats: Arc<ScanStats>,
    ) -> LakeTable {
        let part_fields = objects.layout().map(partition_fields).unwrap_or_default();
        let file_fields: Vec<FieldRef> = data_schema
            .fields()
            .iter()
            .filter(|f| !part_fields.iter().any(|c| c.name() == f.name()))
            .cloned()
            .collect();
        let file_schema = Arc::new(Schema::new(file_fields.clone()));
        let mut all = file_fields;
        all.extend(part_fields.iter().cloned());
        LakeTable {
            url,
            listed,
            format,
            file_schema,
            part_fields,
            schema: Arc::new(Schema::new(all)),
            stats,
        }
    }

    fn part_names(&self) -> Vec<&str> {
        self.part_fields.iter().map(|f| f.name().as_str()).collect()
    }
}

#[async_trait::async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let names = self.part_names();
        Ok(filters
            .iter()
            .map(|f| {
                if expr_applicable_for_cols(&names, f) {
                    // Evaluated exactly on each object's folder values.
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let names = self.part_names();
        let part_filters: Vec<Expr> = filters
            .iter()
            .filter(|f| expr_applicable_for_cols(&names, f))
            .cloned()
            .collect();
        let objects = self.listed.clone();
        self.stats
            .listed
            .fetch_add(objects.len(), Ordering::Relaxed);
        let part_schema = DFSchema::try_from(Schema::new(self.part_fields.clone()))?;
        let mut json = Vec::new();
        let mut parquet = Vec::new();
        for o in objects {
            let parquet_object = matches!(self.format, Format::Auto) && o.is_parquet();
            let mut pf = PartitionedFile::from(o.meta);
            pf.partition_values = o.values.iter().map(scalar).collect();
            if let Some(pf) = filter_partitioned_file(pf, &part_filters, &part_schema)? {
                if parquet_object {
                    parquet.push(pf);
                } else {
                    json.push(pf);
                }
            }
        }
        self.stats
            .scanned
            .fetch_add(json.len() + parquet.len(), Ordering::Relaxed);
        let groups = state.config().target_partitions().max(1);
        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(self.part_fields.clone())
            .build();
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for (files, parquet) in [(json, false), (parquet, true)] {
            if files.is_empty() {
                continue;
            }
            let source: Arc<dyn FileSource> = match (&self.format, parquet) {
                (Format::Auto, true) => Arc::new(ParquetSource::new(table_schema.clone())),
                (Format::Auto, false) => Arc::new(JsonSource::new(table_schema.clone())),
                (Format::Json { array }, _) => {
                    Arc::new(JsonSource::new(table_schema.clone()).with_newline_delimited(!array))
                }
                (Format::Csv(o), _) => Arc::new(
                    CsvSource::new(table_schema.clone()).with_csv_options(o.as_ref().clone()),
                ),
            };
            let mut split: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups.min(files.len())];
            let n = split.len();
            for (i, f) in files.into_iter().enumerate() {
                split[i % n].push(f);
            }
            let config = FileScanConfigBuilder::new(self.url.clone(), source)
                .with_file_groups(split.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(DataSourceExec::from_data_source(config));
        }
        Ok(match plans.len() {
            0 => {
                let schema = match projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => Arc::clone(&self.schema),
                };
                Arc::new(EmptyExec::new(schema))
            }
            1 => plans.remove(0),
            _ => UnionExec::try_new(plans)?,
        })
    }
}

/// Reads the first records of up to [`SAMPLE_OBJECTS`] NDJSON objects (one per folder
/// first, so every partition's shape counts) and infers their schema.
pub async fn infer_json_schema(
    store: &dyn ObjectStore,
    objects: &[LakeObject],
) -> Result<Schema, crate::QueryError> {
    let mut picked: Vec<&LakeObject> = Vec::new();
    let mut seen_dirs = std::collections::HashSet::new();
    for o in objects.iter().filter(|o| !o.is_parquet()) {
        let loc = o.meta.location.as_ref();
        let dir = loc.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        if seen_dirs.insert(dir.to_string()) {
            picked.push(o);
            if picked.len() == SAMPLE_OBJECTS {
                break;
            }
        }
    }
    let mut sample = Vec::new();
    for o in picked {
        sample.extend_from_slice(&read_head(store, &o.meta.location).await?);
    }
    if sample.is_empty() {
        return Ok(Schema::empty());
    }
    let (schema, _) =
        datafusion::arrow::json::reader::infer_json_schema(std::io::Cursor::new(&sample), None)
            .map_err(|e| crate::QueryError::Schema(e.to_string()))?;
    Ok(in_record_order(schema, &sample))
}

/// `a` and `b` as one table schema: columns of either, in `a`'s order then `b`'s new
/// ones; where they disagree on a type, one both convert to — integers and floats meet
/// as 64-bit floats, structs and lists merge inside, anything else becomes text (DataFusion
/// casts each object's column to the table's type as it reads). Never fails.
pub fn merge_lenient(a: &Schema, b: &Schema) -> Schema {
    let mut fields: Vec<Field> = a.fields().iter().map(|f| f.as_ref().clone()).collect();
    for fb in b.fields() {
        match fields.iter_mut().find(|f| f.name() == fb.name()) {
            Some(f) => {
                let t = merge_type(f.data_type(), fb.data_type());
                *f = Field::new(f.name(), t, f.is_nullable() || fb.is_nullable());
            }
            None => fields.push(fb.as_ref().clone().with_nullable(true)),
        }
    }
    // A column missing from some objects is null there.
    for f in fields.iter_mut() {
        if b.field_with_name(f.name()).is_err() || a.field_with_name(f.name()).is_err() {
            *f = f.clone().with_nullable(true);
        }
    }
    Schema::new(fields)
}

fn merge_type(a: &DataType, b: &DataType) -> DataType {
    use DataType::*;
    if a == b {
        return a.clone();
    }
    match (a, b) {
        (Null, t) | (t, Null) => t.clone(),
        (x, y) if x.is_numeric() && y.is_numeric() => Float64,
        (Struct(fa), Struct(fb)) => {
            let sa = Schema::new(fa.clone());
            let sb = Schema::new(fb.clone());
            Struct(merge_lenient(&sa, &sb).fields().clone())
        }
        (List(ia), List(ib)) => List(Arc::new(Field::new(
            ia.name(),
            merge_type(ia.data_type(), ib.data_type()),
            true,
        ))),
        _ => Utf8,
    }
}

/// `schema`'s columns in the order their names first appear in the records of `json`
/// (inference sorts them; `SELECT *` should read like the records).
pub fn in_record_order(schema: Schema, json: &[u8]) -> Schema {
    struct Keys<'a>(
        &'a mut Vec<String>,
        &'a mut std::collections::HashSet<String>,
    );
    impl<'de> serde::de::Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(k) = map.next_key::<String>()? {
                if self.1.insert(k.clone()) {
                    self.0.push(k);
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(())
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for Keys<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    let (mut order, mut seen) = (Vec::new(), std::collections::HashSet::new());
    let mut de = serde_json::Deserializer::from_slice(json);
    // Objects one after another (NDJSON); anything else ends the walk.
    while serde::de::DeserializeSeed::deserialize(Keys(&mut order, &mut seen), &mut de).is_ok() {}
    let rank: std::collections::HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    fields.sort_by_key(|f| rank.get(f.name().as_str()).copied().unwrap_or(usize::MAX));
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The first [`SAMPLE_RECORDS`] complete lines of an object (decompressed).
async fn read_head(store: &dyn ObjectStore, location: &Path) -> Result<Vec<u8>, crate::QueryError> {
    let mut stream = store.get(location).await?.into_stream();
    let mut buf = Vec::new();
    let mut newlines = 0;
    while let Some(chunk) = stream.try_next().await? {
        // Counted per chunk: a rescan of the whole buffer would be quadratic.
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        buf.extend_from_slice(&chunk);
        if newlines >= SAMPLE_RECORDS || buf.len() >= SAMPLE_BYTES {
            break;
        }
    }
    // Whole lines only: a cut record would infer wrong.
    let mut lines = 0;
    let mut end = 0;
    for (i, b) in buf.iter().enumerate() {
        if *b == b'\n' {
            lines += 1;
            end = i + 1;
            if lines == SAMPLE_RECORDS {
                break;
            }
        }
    }
    if end == 0 && !buf.is_empty() && buf.len() < SAMPLE_BYTES {
        // One record without a final delimiter.
        end = buf.len();
        buf.push(b'\n');
        end += 1;
    }
    buf.truncate(end);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_that_disagree_on_a_type_merge_into_one_both_convert_to() {
        let s = |fields: Vec<Field>| Schema::new(fields);
        let a = s(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("id", DataType::Utf8, false),
            Field::new("x", DataType::Int64, true),
        ]);
        let b = s(vec![
            Field::new("n", DataType::Float64, true),
            Field::new("id", DataType::Utf8, false),
            Field::new("x", DataType::Utf8, true),
            Field::new("new", DataType::Boolean, false),
        ]);
        let m = merge_lenient(&a, &b);
        let got: Vec<(String, DataType, bool)> = m
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("n".into(), DataType::Float64, true),
                ("id".into(), DataType::Utf8, false),
                ("x".into(), DataType::Utf8, true),
                ("new".into(), DataType::Boolean, true),
            ]
        );
    }

    #[test]
    fn columns_follow_the_records_order() {
        let json = b"{\"b\":1,\"a\":{\"z\":1,\"y\":2},\"c\":\"x\"}\n{\"d\":true,\"b\":2}\n";
        let (schema, _) = datafusion::arrow::json::reader::infer_json_schema(
            std::io::Cursor::new(&json[..]),
            None,
        )
        .unwrap();
        let names: Vec<String> = in_record_order(schema, json)
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["b", "a", "c", "d"]);
    }
}
