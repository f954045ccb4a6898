//! JSON string literals written by hand, for the access log's lines: the text between the
//! quotes, escaped as JSON requires (`"`, `\` and control characters) and nothing more.

use crate::contract::hex;

/// Every byte of a word.
const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The high bit of every byte of a word.
const HIGHS: u64 = ONES * 0x80;

/// Append `value` escaped (without its quotes).
pub fn write(out: &mut Vec<u8>, value: &str) {
    write_bytes(out, value.as_bytes());
}

/// Append `bytes` (UTF-8) escaped (without its quotes).
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if !needs_escaping(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut plain = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let mut control = *b"\\u0000";
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => {
                hex::encode_into(&[byte], &mut control[4..]);
                &control
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
}

/// Whether any byte is `"`, `\` or below 0x20: eight bytes at a time, with the tests of
/// "Bit Twiddling Hacks" (a byte below n: `(w - n·ONES) & !w & HIGHS`; a zero byte after
/// xor with the byte sought), which are exact for "any". The last bytes are tested as a
/// word too, filled out with a letter (short texts, such as most paths, are mostly last bytes).
fn needs_escaping(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    if words.any(|word| word_needs_escaping(word.try_into().unwrap_or_default())) {
        return true;
    }
    let rest = words.remainder();
    let mut last = [b'a'; 8];
    last[..rest.len()].copy_from_slice(rest);
    word_needs_escaping(last)
}

/// Whether any of eight bytes is `"`, `\` or below 0x20.
fn word_needs_escaping(word: [u8; 8]) -> bool {
    let w = u64::from_ne_bytes(word);
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'"')));
    let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGHS != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_judged_as_a_byte_at_a_time_would_judge_it() {
        let one_at_a_time = |bytes: &[u8]| bytes.iter().any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\');
        // Each byte value at each place of a word and of the tail, among bytes next to the
        // limits (0x1f/0x20, 0x21/0x22/0x23, 0x5b/0x5c/0x5d, 0x7f/0x80, 0xff), which is where
        // a word-wide test would go wrong by a borrow.
        for len in [1, 7, 8, 9, 16, 17] {
            for filler in [b' ', b'#', b'!', b'[', b']', 0x7f, 0x80, 0xa0, 0xff] {
                for place in 0..len {
                    for byte in 0..=255u8 {
                        let mut bytes = vec![filler; len];
                        bytes[place] = byte;
                        assert_eq!(needs_escaping(&bytes), one_at_a_time(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn escaped_text_reads_back_whole() {
        for text in ["", "plain text of more than eight bytes", "/\"q\"\\b\\\n\r\t\u{1}\u{1f}\u{7f}é€😀", "12345678\"", "1234567\u{0}"]
        {
            let mut out = vec![b'"'];
            write(&mut out, text);
            out.push(b'"');
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), text);
        }
    }
}
