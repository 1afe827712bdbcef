//! How commands print what they read: a table for people (the default), or JSON with
//! `-o json` for scripts, as kubectl and faas-cli do. Errors go to standard error as one
//! line, with a non-zero exit (see `main`).

use clap::{Args, ValueEnum};

/// `-o table|json`.
#[derive(Args, Clone, Copy)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// An output format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header line.
    Table,
    /// Indented JSON.
    Json,
}

/// A table: a header and rows of cells, printed with each column as wide as its widest
/// cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&'static str]) -> Self {
        Self { header: header.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, a line per row, columns two spaces apart.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                }
            }
            out.trim_end().to_string()
        };
        let mut text = line(self.header.clone());
        for row in &self.rows {
            text.push('\n');
            text.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        text
    }
}

/// Prints `value` as `format` asks: JSON as it is, or the table `table` makes of it.
pub fn print(format: Format, value: &serde_json::Value, table: impl FnOnce(&serde_json::Value) -> Table) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value).expect("JSON values serialize")),
        Format::Table => println!("{}", table(value).render()),
    }
}

/// A JSON value as a table cell: strings bare, nothing as `-`.
pub fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) if s.is_empty() => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&["NAME", "CELL"]);
        t.row(vec!["echo".into(), "cell-1".into()]);
        t.row(vec!["a-much-longer-name".into(), "cell-22".into()]);
        assert_eq!(t.render(), "NAME                CELL\necho                cell-1\na-much-longer-name  cell-22");
        assert_eq!(Table::new(&["ONLY"]).render(), "ONLY");
        assert_eq!(cell(&serde_json::json!(null)), "-");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }
}
