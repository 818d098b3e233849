//! Writing an answer: an aligned table for people, JSON lines or CSV for programs.

use crate::QueryError;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::TryStreamExt;
use std::io::Write;
use std::sync::Arc;

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table (at most [`MAX_TABLE_ROWS`] rows; use json or csv for more).
    Table,
    /// One JSON object per row (nulls left out, as S3 Select does).
    Json,
    /// CSV with a header line.
    Csv,
}

/// Rows an aligned table holds (it must see every row before printing the first).
pub const MAX_TABLE_ROWS: usize = 10_000;

/// A column name S3 Select would give: a path's last name (`s.data.n` → `n`), or `_N`
/// (1-based position) for any other expression.
fn s3_select_name(name: &str, i: usize) -> String {
    let simple = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    // DataFusion names a field access `s.data[n]`.
    let last = name.strip_suffix(']').and_then(|n| n.rsplit_once('['));
    match last {
        Some((path, field)) if simple(field) && !path.contains('(') => field.to_string(),
        _ if simple(name) => name.to_string(),
        _ => format!("_{}", i + 1),
    }
}

/// `batch` with every nested column (struct, list, map) as its JSON text: CSV has no
/// nesting, and JSON is how such a value reads back.
fn flattened(batch: RecordBatch) -> Result<RecordBatch, QueryError> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::DataType;
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        if !f.data_type().is_nested() {
            fields.push(f.as_ref().clone());
            columns.push(col.clone());
            continue;
        }
        // One column at a time through the JSON writer: `{"v":...}` per row.
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![f.as_ref().clone().with_name("v")])),
            vec![col.clone()],
        )?;
        let mut buf = Vec::new();
        {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(&one)?;
            w.finish()?;
        }
        let text: StringArray = buf
            .split(|b| *b == b'\n')
            .take(batch.num_rows())
            .map(|line| {
                serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("v").map(|x| x.to_string()))
            })
            .collect();
        fields.push(Field::new(f.name(), DataType::Utf8, true));
        columns.push(Arc::new(text));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn renamed(batch: RecordBatch, s3: bool) -> Result<RecordBatch, QueryError> {
    if !s3 {
        return Ok(batch);
    }
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| f.as_ref().clone().with_name(s3_select_name(f.name(), i)))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        batch.columns().to_vec(),
    )?)
}

/// Writes every batch of `stream` to `out`; returns the rows written.
pub async fn write(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: &mut dyn Write,
    s3_names: bool,
) -> Result<usize, QueryError> {
    let mut rows = 0;
    match format {
        OutputFormat::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut *out);
            while let Some(b) = stream.try_next().await? {
                rows += b.num_rows();
                w.write(&renamed(b, s3_names)?)?;
            }
            w.finish()?;
        }
        OutputFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            let mut any = false;
            while let Some(b) = stream.try_next().await? {
                rows += b.num_rows();
                any = true;
                w.write(&flattened(renamed(b, s3_names)?)?)?;
            }
            if !any {
                // No rows: still say which columns there were.
                let names: Vec<String> = stream
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        if s3_names {
                            s3_select_name(f.name(), i)
                        } else {
                            f.name().clone()
                        }
                    })
                    .collect();
                drop(w);
                writeln!(out, "{}", names.join(","))?;
            }
        }
        OutputFormat::Table => {
            let mut batches = Vec::new();
            let mut more = false;
            while let Some(b) = stream.try_next().await? {
                let room = MAX_TABLE_ROWS - rows;
                if b.num_rows() > room {
                    batches.push(renamed(b.slice(0, room), s3_names)?);
                    rows += room;
                    more = true;
                    break;
                }
                rows += b.num_rows();
                batches.push(renamed(b, s3_names)?);
                if rows == MAX_TABLE_ROWS {
                    break;
                }
            }
            if batches.is_empty() {
                batches.push(renamed(RecordBatch::new_empty(stream.schema()), s3_names)?);
            }
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)?;
            writeln!(out, "{text}")?;
            if more {
                writeln!(
                    out,
                    "(stopped at {MAX_TABLE_ROWS} rows; --format json or csv writes them all)"
                )?;
            }
        }
    }
    out.flush()?;
    Ok(rows)
}
