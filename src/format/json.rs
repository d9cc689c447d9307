//! JSON in and out. In: the one strict reader every JSON document of the
//! project goes through. Out: the two styles the format uses, compact (the
//! service's security-domain file) and Python's default `", "` / `": "`
//! separators (what the Azure CLI writes for restore blobs).

use serde::de::DeserializeOwned;
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

/// Parses exactly one JSON document into `T`, as Python's `json.load` (what
/// the Azure CLI reads with) does: trailing whitespace is allowed, anything
/// else after the document is refused, so two readers never see different
/// contents in one file. A wrong field is named by its path.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("at {path}: {inner}")
        }
    })?;
    de.end().map_err(|e| {
        format!(
            "there is data after the JSON document (line {}, column {}); a file holds exactly one document",
            e.line(),
            e.column()
        )
    })?;
    Ok(value)
}

/// [`from_slice`] for text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    from_slice(text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_document_and_trailing_whitespace_only() {
        type V = serde_json::Value;
        assert!(super::from_slice::<V>(b"{\"a\": 1} \t\r\n").is_ok());
        for trailing in [&b"{} {}"[..], b"{}x", b"{}\n{\"a\":1}", b"[1]]", b"{}\x00", b"{}\x0c"] {
            let err = super::from_slice::<V>(trailing).unwrap_err();
            assert!(err.contains("data after the JSON document"), "{err}");
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct S {
            a: u8,
        }
        assert!(super::from_slice::<S>(br#"{"a": "x"}"#)
            .unwrap_err()
            .starts_with("at a:"));
    }

    #[test]
    fn python_separators() {
        let v = serde_json::json!({"a": [1, 2], "b": {"c": "d"}});
        assert_eq!(super::to_python_style(&v), r#"{"a": [1, 2], "b": {"c": "d"}}"#);
    }
}
