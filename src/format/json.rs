//! JSON output in the two styles the format uses: compact (the service's
//! security-domain file) and Python's default `", "` / `": "` separators (what
//! the Azure CLI writes for restore blobs).

use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};
use std::io;

struct PythonStyle;

impl Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `json.dumps(value)` as Python writes it by default.
pub fn to_python_style<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    value
        .serialize(&mut Serializer::with_formatter(&mut out, PythonStyle))
        .expect("in-memory serialisation of plain data cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_separators() {
        let v = serde_json::json!({"a": [1, 2], "b": {"c": "d"}});
        assert_eq!(super::to_python_style(&v), r#"{"a": [1, 2], "b": {"c": "d"}}"#);
    }
}
