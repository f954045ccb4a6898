//! Hex as both planes write it: lower-case, two digits a byte. Module digests, API key
//! hashes, configuration versions and stored secrets all use it.

use sha2::{Digest, Sha256};

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` in lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|&byte| digits(byte)).map(char::from).collect()
}

/// `bytes` in lower-case hex, written over the first `2 × bytes.len()` bytes of `out`
/// (which must be that long), for a caller that keeps the text on its stack.
pub fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (&byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&digits(byte));
    }
}

fn digits(byte: u8) -> [u8; 2] {
    [DIGITS[usize::from(byte >> 4)], DIGITS[usize::from(byte & 0x0f)]]
}

/// The 32 hex digits of `value` (a W3C trace id), most significant first.
pub fn encode_u128(value: u128) -> [u8; 32] {
    let mut text = [0u8; 32];
    text[..16].copy_from_slice(&encode_u64((value >> 64) as u64));
    text[16..].copy_from_slice(&encode_u64(value as u64));
    text
}

/// The 16 hex digits of `value`, most significant first: its nibbles spread one to a byte,
/// then made digits all at once, with neither a table nor a loop. Ids are written so for
/// every request (`traceparent`), where a table of digit pairs took fewer instructions but
/// its lines and the unrolled loop's missed the caches (callgrind's cache model). Never
/// inlined: a request writes three words, and one copy of the code misses the instruction
/// cache once where three inlined copies missed it three times.
#[inline(never)]
pub fn encode_u64(value: u64) -> [u8; 16] {
    const ONES: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
    let mut x = u128::from(value);
    x = (x | (x << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & (0x0f * ONES);
    // Byte k now holds nibble k (0 the lowest); a byte from 10 up gets `a` - `9` - 1 more.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u128::from(b'0') * ONES + letters * u128::from(b'a' - b'9' - 1)).to_be_bytes()
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
        for value in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX, 0xfedc_ba98_7654_3210, 0x9a9a_0f0f_a0a0_f0f0] {
            assert_eq!(encode_u64(value), *format!("{value:016x}").as_bytes());
            let wide = u128::from(value) << 64 | u128::from(!value);
            assert_eq!(encode_u128(wide), *format!("{wide:032x}").as_bytes());
        }
        assert!(is_sha256(&sha256(b"x")) && !is_sha256("abc"));
        let digest = sha256(b"x");
        assert_eq!(decode_sha256(&digest.to_uppercase()).map(|d| d.to_vec()), decode(&digest));
        assert_eq!(decode_sha256(&digest[..62]), None);
        assert_eq!(decode_sha256(&format!("{}zz", &digest[..62])), None);
        assert_eq!(decode_sha256(&format!("{}é", &digest[..62])), None);
    }
}
