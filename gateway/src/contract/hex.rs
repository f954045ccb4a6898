//! Hex as both planes write it: lower-case, two digits a byte. Module digests, API key
//! hashes, configuration versions and stored secrets all use it.

use sha2::{Digest, Sha256};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` in lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&byte| PAIRS[usize::from(byte)]).map(char::from).collect()
}

/// The two digits of every byte: one load a byte instead of two shifts, masks and loads
/// (trace ids are written on the request path).
const PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

/// `bytes` in lower-case hex, written over the first `2 × bytes.len()` bytes of `out`
/// (which must be that long), for a caller that keeps the text on its stack.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (&byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
}

/// The bytes of hex text (either case); `None` when it is not an even number of hex digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes().chunks_exact(2).map(byte).collect()
}

/// A sha256 written as 64 hex digits (either case), decoded without allocating.
pub fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    decode_array(text)
}

/// Exactly `N` bytes written as `2 × N` hex digits (either case), decoded without allocating.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (slot, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *slot = byte(pair)?;
    }
    Some(bytes)
}

/// The byte two hex digits write.
fn byte(pair: &[u8]) -> Option<u8> {
    let high = (pair[0] as char).to_digit(16)?;
    let low = (pair[1] as char).to_digit(16)?;
    Some((high * 16 + low) as u8)
}

/// The sha256 of `bytes`, in hex: how policy modules and client certificates are named.
pub fn sha256(bytes: &[u8]) -> String {
    encode(&Sha256::digest(bytes))
}

/// Whether `text` is a sha256 written as 64 hex digits (either case).
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let mut text = *b"-------";
        encode_into(&[0x0f, 0xa5, 0xff], &mut text[..6]);
        assert_eq!(&text, b"0fa5ff-");
        assert_eq!(decode("000FA5ff"), Some(vec![0x00, 0x0f, 0xa5, 0xff]));
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(sha256(b"").len(), 64);
        assert!(is_sha256(&sha256(b"x")) && !is_sha256("abc"));
        let digest = sha256(b"x");
        assert_eq!(decode_sha256(&digest.to_uppercase()).map(|d| d.to_vec()), decode(&digest));
        assert_eq!(decode_sha256(&digest[..62]), None);
        assert_eq!(decode_sha256(&format!("{}zz", &digest[..62])), None);
        assert_eq!(decode_sha256(&format!("{}é", &digest[..62])), None);
    }
}
