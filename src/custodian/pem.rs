//! PEM or DER: files are accepted in either form, whatever their extension.

use zeroize::Zeroizing;

/// A PEM block: its label and DER.
pub type Block = (String, Zeroizing<Vec<u8>>);

/// The label and DER of the first PEM block in `bytes`, or `None` when the
/// bytes are not PEM (and so may be DER). Text before the block (OpenSSL's
/// "Bag Attributes", comments) is skipped.
pub fn decode_first_block(bytes: &[u8]) -> Option<Result<Block, String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find("-----BEGIN ")?;
    let block = &text[start..];
    let end_marker = block.find("-----END ")?;
    let end = block[end_marker..]
        .find("\n")
        .map(|i| end_marker + i + 1)
        .unwrap_or(block.len());
    let block = &block[..end];
    if block.contains("Proc-Type:") {
        return Some(Err("legacy-encrypted".into()));
    }
    Some(
        pem_rfc7468::decode_vec(block.as_bytes())
            .map(|(label, der)| (label.to_string(), Zeroizing::new(der)))
            .or_else(|strict| decode_other_line_length(block).ok_or(strict))
            .map_err(|e| format!("the PEM block is damaged ({e})")),
    )
}

/// A block that is well formed except that its Base64 lines are not 64
/// characters: `az keyvault security-domain init-recovery` writes the
/// exchange key with 65-character lines, and RFC 7468 (section 3) lets a
/// parser accept any line length. Everything else stays strict: matching
/// labels, nothing but Base64 between them, canonical padding.
fn decode_other_line_length(block: &str) -> Option<Block> {
    use base64::Engine as _;
    let mut lines = block.lines().map(|l| l.trim_end_matches('\r'));
    let label = lines.next()?.strip_prefix("-----BEGIN ")?.strip_suffix("-----")?;
    let mut body = Zeroizing::new(String::new());
    for line in lines.by_ref() {
        if let Some(end) = line.strip_prefix("-----END ") {
            if end.strip_suffix("-----")? != label {
                return None;
            }
            let der = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).ok()?;
            return Some((label.to_string(), Zeroizing::new(der)));
        }
        let line = line.trim_end();
        if !line.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) {
            return None;
        }
        body.push_str(line);
    }
    None
}

pub fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(
        pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).expect("PEM encoding of bytes cannot fail"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_another_length_are_read_but_nothing_else_is_relaxed() {
        let der: Vec<u8> = (0..200u8).collect();
        let strict = encode("CERTIFICATE", &der);
        let b64: String = strict.lines().filter(|l| !l.starts_with("-----")).collect();
        let wrap = |width: usize, begin: &str, end: &str| {
            let body: Vec<String> = b64
                .as_bytes()
                .chunks(width)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            format!("-----BEGIN {begin}-----\n{}\n-----END {end}-----\n", body.join("\n"))
        };
        // az's exchange key: 65-character lines.
        let (label, got) = decode_first_block(wrap(65, "CERTIFICATE", "CERTIFICATE").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!((label.as_str(), got.as_slice()), ("CERTIFICATE", der.as_slice()));
        assert!(decode_first_block(wrap(65, "CERTIFICATE", "PRIVATE KEY").as_bytes())
            .unwrap()
            .is_err());
        let damaged = wrap(65, "CERTIFICATE", "CERTIFICATE").replacen("-----\n", "-----\n*", 1);
        assert!(decode_first_block(damaged.as_bytes()).unwrap().is_err());
    }
}
