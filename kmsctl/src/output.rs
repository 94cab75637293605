//! `--output table|json`: JSON as kmsd answered it, or a table of chosen
//! fields.

use serde_json::Value;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// A field as table text: strings bare, arrays joined, null empty.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows of `columns` (header, field), or the JSON.
pub fn rows(v: &Value, out: Output, columns: &[(&str, &str)]) {
    if out == Output::Json {
        println!("{v}");
        return;
    }
    let empty = vec![];
    let items = v.as_array().unwrap_or(&empty);
    let table: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|(_, f)| cell(&i[*f])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, (h, _))| {
            table
                .iter()
                .map(|r| r[c].len())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| h.to_string()).collect());
    for r in table {
        line(r);
    }
}

/// One object as `field  value` lines, or the JSON.
pub fn object(v: &Value, out: Output) {
    if out == Output::Json {
        println!("{v}");
        return;
    }
    if let Some(o) = v.as_object() {
        let w = o.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, x) in o {
            println!("{k:<w$}  {}", cell(x));
        }
    } else {
        println!("{}", cell(v));
    }
}
