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
            .map_err(|e| format!("the PEM block is damaged ({e})")),
    )
}

pub fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(
        pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).expect("PEM encoding of bytes cannot fail"),
    )
}
