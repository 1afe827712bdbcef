//! A CSV file whose errors name the file, the line and the column.

use std::fmt::Display;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use csv::StringRecord;

use crate::error::{Error, Result};

/// An open CSV file with a header row.
pub(super) struct CsvFile {
    pub path: PathBuf,
    reader: csv::Reader<File>,
    pub headers: StringRecord,
}

/// One data row and the line it starts on.
pub(super) struct Row {
    pub line: u64,
    pub record: StringRecord,
}

impl CsvFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(file);
        let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
        if headers.is_empty() || headers.iter().all(str::is_empty) {
            return Err(Error::file(path, "is empty: expected a header row"));
        }
        Ok(Self { path: path.to_path_buf(), reader, headers })
    }

    /// Index of the column called `name`.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.headers.iter().position(|h| h == name).ok_or_else(|| {
            let have: Vec<&str> = self.headers.iter().take(8).collect();
            let more = if self.headers.len() > 8 { ", …" } else { "" };
            Error::file(&self.path, format!("has no column {name:?} (its columns: {}{more})", have.join(", ")))
        })
    }

    /// Every data row, in order.
    pub fn rows(&mut self) -> impl Iterator<Item = Result<Row>> + '_ {
        let path = self.path.clone();
        self.reader.records().map(move |r| {
            let record = r.map_err(|e| csv_error(&path, e))?;
            let line = record.position().map_or(0, |p| p.line());
            Ok(Row { line, record })
        })
    }

    /// Field `idx` of `row`, parsed; a bad value names the line and the column.
    pub fn field<T>(&self, row: &Row, idx: usize) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text = row.record.get(idx).unwrap_or("");
        text.parse().map_err(|e| Error::Line {
            path: self.path.clone(),
            line: row.line,
            message: format!("column {:?}: {text:?} is not valid ({e})", &self.headers[idx]),
        })
    }

    /// Field `idx` of `row` as a finite number of at least zero.
    pub fn non_negative(&self, row: &Row, idx: usize) -> Result<f64> {
        let value: f64 = self.field(row, idx)?;
        if value.is_finite() && value >= 0.0 {
            Ok(value)
        } else {
            Err(self.line_error(row, format!("column {:?}: {value} is not a number of at least 0", &self.headers[idx])))
        }
    }

    pub fn line_error(&self, row: &Row, message: impl Into<String>) -> Error {
        Error::Line { path: self.path.clone(), line: row.line, message: message.into() }
    }
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    match e.position() {
        Some(pos) => Error::Line { path: path.to_path_buf(), line: pos.line(), message: e.to_string() },
        None => Error::file(path, e.to_string()),
    }
}
