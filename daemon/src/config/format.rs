//! The record format keys of an object sink (`format`, `schema`): parsed from TOML into a
//! [`ParquetSpec`], each error at the key that caused it.

use super::{key, ConfigError, Seg, SourceFile};
use crate::spec::{Column, ColumnType, ParquetSpec, SchemaSpec};

/// Deepest nesting of structs and lists in a declared schema.
const MAX_DEPTH: usize = 16;

/// `format` and `schema` of a sink table; `delimiter_set` says whether `delimiter` was
/// given (it does not apply to Parquet).
pub(super) fn parse(
    src: &SourceFile,
    at: &dyn Fn(&[Seg]) -> Vec<Seg>,
    format: Option<&str>,
    schema: Option<&toml::Value>,
    delimiter_set: bool,
) -> Result<Option<ParquetSpec>, ConfigError> {
    let here = |rest: &[Seg]| {
        let mut p = vec![key("sink")];
        p.extend_from_slice(rest);
        at(&p)
    };
    match format {
        None | Some("json") => {
            if schema.is_some() {
                return Err(src.error_at_path(
                    &here(&[key("schema")]),
                    "schema applies to format = \"parquet\" only",
                ));
            }
            return Ok(None);
        }
        Some("parquet") => {}
        Some(other) => {
            return Err(src.error_at_path(
                &here(&[key("format")]),
                format!("format: unknown format `{other}` (use json or parquet)"),
            ))
        }
    }
    if delimiter_set {
        return Err(src.error_at_path(
            &here(&[key("delimiter")]),
            "delimiter does not apply to format = \"parquet\" (each record is a row)",
        ));
    }
    let schema = match schema {
        None => {
            return Err(src.error_at_path(
                &here(&[key("format")]),
                "format = \"parquet\" needs schema = \"infer\" or a list of columns ({ name, type, nullable })",
            ))
        }
        Some(toml::Value::String(s)) if s == "infer" => SchemaSpec::Infer,
        Some(toml::Value::Array(cols)) => {
            SchemaSpec::Declared(columns(src, &here, &[key("schema")], cols, 0)?)
        }
        Some(_) => {
            return Err(src.error_at_path(
                &here(&[key("schema")]),
                "schema must be \"infer\" or a list of columns ({ name, type, nullable })",
            ))
        }
    };
    Ok(Some(ParquetSpec { schema }))
}

fn columns(
    src: &SourceFile,
    here: &dyn Fn(&[Seg]) -> Vec<Seg>,
    path: &[Seg],
    cols: &[toml::Value],
    depth: usize,
) -> Result<Vec<Column>, ConfigError> {
    let err = |p: &[Seg], m: String| src.error_at_path(&here(p), m);
    if cols.is_empty() {
        return Err(err(
            path,
            format!("{}: needs at least one column", dotted(path)),
        ));
    }
    let mut out: Vec<Column> = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let mut p = path.to_vec();
        p.push(Seg::Index(i));
        let col = column(src, here, &p, c, true, depth)?;
        if out.iter().any(|o| o.name == col.name) {
            let mut pn = p.clone();
            pn.push(key("name"));
            return Err(err(
                &pn,
                format!("{}: column `{}` is declared twice", dotted(&pn), col.name),
            ));
        }
        out.push(col);
    }
    Ok(out)
}

/// One column (`named`), or a list's item (no name).
fn column(
    src: &SourceFile,
    here: &dyn Fn(&[Seg]) -> Vec<Seg>,
    path: &[Seg],
    v: &toml::Value,
    named: bool,
    depth: usize,
) -> Result<Column, ConfigError> {
    let err = |p: &[Seg], m: String| src.error_at_path(&here(p), m);
    let sub = |k: &str| {
        let mut p = path.to_vec();
        p.push(key(k));
        p
    };
    if depth >= MAX_DEPTH {
        return Err(err(
            path,
            format!("{}: nested more than {MAX_DEPTH} levels", dotted(path)),
        ));
    }
    let Some(t) = v.as_table() else {
        return Err(err(
            path,
            format!(
                "{}: a column is a table {{ name, type, nullable }}",
                dotted(path)
            ),
        ));
    };
    let allowed = ["name", "type", "nullable", "fields", "item"];
    if let Some(k) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(
            &sub(k),
            format!(
                "{}: unknown key (use name, type, nullable, fields, item)",
                dotted(&sub(k))
            ),
        ));
    }
    let name = match (t.get("name"), named) {
        (Some(toml::Value::String(s)), true) if !s.is_empty() => s.clone(),
        (Some(_), true) => {
            return Err(err(
                &sub("name"),
                format!("{}: must be a non-empty string", dotted(&sub("name"))),
            ))
        }
        (None, true) => return Err(err(path, format!("{}: missing `name`", dotted(path)))),
        (Some(_), false) => {
            return Err(err(
                &sub("name"),
                format!("{}: a list's item has no name", dotted(&sub("name"))),
            ))
        }
        (None, false) => "item".to_string(),
    };
    let nullable = match t.get("nullable") {
        None => true,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => {
            return Err(err(
                &sub("nullable"),
                format!("{}: must be true or false", dotted(&sub("nullable"))),
            ))
        }
    };
    let Some(toml::Value::String(ty)) = t.get("type") else {
        return Err(err(path, format!("{}: missing `type` (string, boolean, int32, int64, float32, float64, timestamp, date, struct, list)", dotted(path))));
    };
    let only = |k: &str, for_type: &str| -> Result<(), ConfigError> {
        if t.contains_key(k) && ty != for_type {
            return Err(err(
                &sub(k),
                format!("{}: only a {for_type} has `{k}`", dotted(&sub(k))),
            ));
        }
        Ok(())
    };
    only("fields", "struct")?;
    only("item", "list")?;
    let ty = match ty.to_ascii_lowercase().as_str() {
        "string" | "varchar" => ColumnType::String,
        "boolean" | "bool" => ColumnType::Boolean,
        "int32" | "int" | "integer" => ColumnType::Int32,
        "int64" | "bigint" | "long" => ColumnType::Int64,
        "float32" | "float" => ColumnType::Float32,
        "float64" | "double" => ColumnType::Float64,
        "timestamp" => ColumnType::Timestamp,
        "date" => ColumnType::Date,
        "struct" => match t.get("fields") {
            Some(toml::Value::Array(fs)) => ColumnType::Struct(columns(src, here, &sub("fields"), fs, depth + 1)?),
            _ => return Err(err(path, format!("{}: a struct needs `fields = [ ... ]`", dotted(path)))),
        },
        "list" | "array" => match t.get("item") {
            Some(item) => ColumnType::List(Box::new(column(src, here, &sub("item"), item, false, depth + 1)?)),
            None => return Err(err(path, format!("{}: a list needs `item = {{ type = ... }}`", dotted(path)))),
        },
        other => {
            return Err(err(&sub("type"), format!(
                "{}: unknown type `{other}` (use string, boolean, int32, int64, float32, float64, timestamp, date, struct, list)",
                dotted(&sub("type"))
            )))
        }
    };
    Ok(Column { name, ty, nullable })
}

/// `schema[1].fields[0].type`.
fn dotted(path: &[Seg]) -> String {
    let mut s = String::new();
    for p in path {
        match p {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}
