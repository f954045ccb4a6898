//! Request path normalisation: the one canonical form of a path that is routed, handed to
//! policies and forwarded upstream, so that no two components can read a path differently.

use std::borrow::Cow;

/// Why a request path was refused; each is answered with `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the request path must start with `/`")]
    NotAbsolute,
    /// `%2F` would be a slash to the upstream but not to the router.
    #[error("the request path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `%5C` is a path separator on some upstream servers.
    #[error("the request path contains an encoded backslash (%5C)")]
    EncodedBackslash,
    /// `%00` ends strings in some upstream servers.
    #[error("the request path contains an encoded NUL byte (%00)")]
    EncodedNul,
    /// A `%` not followed by two hexadecimal digits.
    #[error("the request path contains a malformed percent-escape")]
    MalformedEscape,
    /// A raw byte below 0x20, or DEL (0x7F).
    #[error("the request path contains a control character")]
    ControlCharacter,
    /// A raw `\`, a path separator on some upstream servers.
    #[error("the request path contains a backslash")]
    Backslash,
    /// A byte outside ASCII; a request line is ASCII, other characters are percent-encoded.
    #[error("the request path contains a non-ASCII character")]
    NonAscii,
    /// A raw `?` or `#`, which would end the path for the upstream.
    #[error("the request path contains a raw `{0}`")]
    Delimiter(char),
    /// A `.` or `..` segment followed by `;` parameters, which some upstream servers resolve
    /// as a dot segment (`/public/..;/admin`).
    #[error("the request path contains a dot segment with parameters")]
    DotSegmentWithParameters,
}

/// Normalises the path of a request-target (without its query).
///
/// - Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other
///   escapes are kept with upper-case hex digits.
/// - Characters that RFC 3986 does not allow raw in a path but that carry no meaning here
///   (space, `"`, `<`, `>`, `[`, `]`, `^`, backtick, `{`, `|`, `}`) are percent-encoded.
/// - Empty segments are removed (`//a///b` is `/a/b`) and dot segments resolved (RFC 3986
///   section 5.2.4); `..` above the root stays at the root.
/// - A trailing slash is kept; `/a/.` is `/a/` and `/a/..` is `/`.
/// - `;` is an ordinary character and case is preserved.
///
/// The input is returned borrowed when it is already normal. Errors are listed on
/// [`PathError`].
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let body = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut normal = true;
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let checked = check_segment(segment)?;
        // Every segment is checked, even once a rewrite is known to be needed, so that an
        // invalid path is always refused.
        if !checked.canonical || checked.dot || (segment.is_empty() && !last) {
            normal = false;
        }
    }
    if normal { Ok(Cow::Borrowed(raw)) } else { Ok(Cow::Owned(rebuild(body)?)) }
}

/// What [`check_segment`] found out about a valid segment.
struct CheckedSegment {
    /// Written exactly as its normal form.
    canonical: bool,
    /// `.` or `..` once decoded.
    dot: bool,
}

/// Validates one segment (the text between two slashes).
fn check_segment(segment: &str) -> Result<CheckedSegment, PathError> {
    let bytes = segment.as_bytes();
    let mut canonical = true;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (value, upper_case) = decode_escape(bytes, i)?;
            if is_unreserved(value) || !upper_case {
                canonical = false;
            }
            i += 3;
        } else {
            if classify(bytes[i])? == Class::Encode {
                canonical = false;
            }
            i += 1;
        }
    }

    let (name, has_parameters) = match segment.split_once(';') {
        Some((name, _)) => (name, true),
        None => (segment, false),
    };
    let is_dot = matches!(decoded_dots(name), Some(1 | 2));
    if is_dot && has_parameters {
        return Err(PathError::DotSegmentWithParameters);
    }
    Ok(CheckedSegment { canonical, dot: is_dot })
}

/// Writes the normal form of a path whose segments `check_segment` accepted, `body` being
/// the path after its leading `/`.
fn rebuild(body: &str) -> Result<String, PathError> {
    // `out` holds `/seg1/seg2` without a trailing slash; segments never contain `/`, so the
    // parent of the last segment starts at the last `/`.
    let mut out = String::with_capacity(body.len() + 1);
    let mut trailing_slash = false;
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        trailing_slash = false;
        if segment.is_empty() {
            trailing_slash = last;
            continue;
        }
        let start = out.len();
        out.push('/');
        write_segment(segment, &mut out)?;
        match &out[start + 1..] {
            "." => {
                out.truncate(start);
                trailing_slash = last;
            }
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
                trailing_slash = last;
            }
            _ => {}
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Appends the normal form of one segment to `out`.
fn write_segment(segment: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let (value, _) = decode_escape(bytes, i)?;
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                push_escape(value, out);
            }
            i += 3;
        } else {
            match classify(byte)? {
                Class::Keep => out.push(char::from(byte)),
                Class::Encode => push_escape(byte, out),
            }
            i += 1;
        }
    }
    Ok(())
}

/// How a raw (not percent-encoded) byte is treated.
#[derive(PartialEq, Eq)]
enum Class {
    Keep,
    Encode,
}

fn classify(byte: u8) -> Result<Class, PathError> {
    match byte {
        0x00..=0x1F | 0x7F => Err(PathError::ControlCharacter),
        0x80..=0xFF => Err(PathError::NonAscii),
        b'\\' => Err(PathError::Backslash),
        b'?' | b'#' => Err(PathError::Delimiter(char::from(byte))),
        b' ' | b'"' | b'<' | b'>' | b'[' | b']' | b'^' | b'`' | b'{' | b'|' | b'}' => Ok(Class::Encode),
        _ => Ok(Class::Keep),
    }
}

/// Decodes the escape starting at `bytes[at]` (a `%`): its value, and whether its hex digits
/// are upper case. Escapes that no path may contain are refused here.
fn decode_escape(bytes: &[u8], at: usize) -> Result<(u8, bool), PathError> {
    let digit = |offset: usize| bytes.get(at + offset).copied().and_then(hex_value);
    let (Some(high), Some(low)) = (digit(1), digit(2)) else {
        return Err(PathError::MalformedEscape);
    };
    let value = high * 16 + low;
    match value {
        b'/' => return Err(PathError::EncodedSlash),
        b'\\' => return Err(PathError::EncodedBackslash),
        0 => return Err(PathError::EncodedNul),
        _ => {}
    }
    let upper_case = !bytes[at + 1..at + 3].iter().any(u8::is_ascii_lowercase);
    Ok((value, upper_case))
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn push_escape(value: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(value >> 4)]));
    out.push(char::from(HEX[usize::from(value & 0x0F)]));
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The number of dots `text` decodes to if it decodes to dots only (`.`, `%2e`, `%2E`).
fn decoded_dots(text: &str) -> Option<usize> {
    let mut rest = text.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
    }
    Some(dots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(input, expected normal form)`.
    const NORMALISED: &[(&str, &str)] = &[
        ("/", "/"),
        ("/a", "/a"),
        ("/a/", "/a/"),
        ("/A", "/A"),
        ("/a/b/c", "/a/b/c"),
        ("//", "/"),
        ("///", "/"),
        ("//admin", "/admin"),
        ("//a///b", "/a/b"),
        ("/a//", "/a/"),
        ("/a/./b", "/a/b"),
        ("/./a", "/a"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/b/../c", "/a/c"),
        ("/.", "/"),
        ("/..", "/"),
        ("/../a", "/a"),
        ("/../../a/../../b", "/b"),
        ("/x/../admin", "/admin"),
        ("/x/./../admin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/%2E%2E/admin", "/admin"),
        ("/x/%2e%2e/admin", "/admin"),
        ("/x/.%2e/admin", "/admin"),
        ("/x/%2e./admin", "/admin"),
        ("/x/%2e/admin", "/x/admin"),
        ("/...", "/..."),
        ("/a/.../b", "/a/.../b"),
        ("/.a/..b/a.", "/.a/..b/a."),
        ("/%7e", "/~"),
        ("/%7Euser", "/~user"),
        ("/%41%62%2D%5f", "/Ab-_"),
        ("/%3a", "/%3A"),
        ("/%3A", "/%3A"),
        ("/a%3bb", "/a%3Bb"),
        ("/%25", "/%25"),
        ("/%252e%252e/x", "/%252e%252e/x"),
        ("/%c3%a9", "/%C3%A9"),
        ("/a;b", "/a;b"),
        ("/a;b/c;d=e", "/a;b/c;d=e"),
        ("/;/a", "/;/a"),
        ("/a/...;x", "/a/...;x"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/a b", "/a%20b"),
        ("/{id}", "/%7Bid%7D"),
        ("/a|b^c", "/a%7Cb%5Ec"),
        ("/\"[x]<y>`", "/%22%5Bx%5D%3Cy%3E%60"),
    ];

    /// `(input, expected error)`.
    const REFUSED: &[(&str, PathError)] = &[
        ("", PathError::NotAbsolute),
        ("a/b", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("http://example.com/a", PathError::NotAbsolute),
        ("/a%2Fb", PathError::EncodedSlash),
        ("/a%2fb", PathError::EncodedSlash),
        ("/%2e%2e%2fadmin", PathError::EncodedSlash),
        ("/a%5Cb", PathError::EncodedBackslash),
        ("/a%5cb", PathError::EncodedBackslash),
        ("/a%00", PathError::EncodedNul),
        ("/a\\b", PathError::Backslash),
        ("/..\\admin", PathError::Backslash),
        ("/a\0b", PathError::ControlCharacter),
        ("/a\r\nb", PathError::ControlCharacter),
        ("/a\tb", PathError::ControlCharacter),
        ("/a\x7fb", PathError::ControlCharacter),
        ("/a%zz", PathError::MalformedEscape),
        ("/a%G1", PathError::MalformedEscape),
        ("/a%4", PathError::MalformedEscape),
        ("/a%", PathError::MalformedEscape),
        ("/a%%41", PathError::MalformedEscape),
        ("/é", PathError::NonAscii),
        ("/a\u{ff0f}b", PathError::NonAscii),
        ("/a?b", PathError::Delimiter('?')),
        ("/a#b", PathError::Delimiter('#')),
        ("/public/..;/admin", PathError::DotSegmentWithParameters),
        ("/public/.;x/admin", PathError::DotSegmentWithParameters),
        ("/public/%2e%2e;/admin", PathError::DotSegmentWithParameters),
        // An invalid segment is refused even after one that needs rewriting.
        ("//a/%2F", PathError::EncodedSlash),
    ];

    #[test]
    fn normalises_tricky_paths() {
        for (input, expected) in NORMALISED {
            assert_eq!(normalize_path(input).as_deref(), Ok(*expected), "input {input:?}");
        }
    }

    #[test]
    fn refuses_tricky_paths() {
        for (input, expected) in REFUSED {
            assert_eq!(normalize_path(input), Err(*expected), "input {input:?}");
        }
    }

    #[test]
    fn borrows_a_normal_path() {
        for (_, normal) in NORMALISED {
            assert!(matches!(normalize_path(normal), Ok(Cow::Borrowed(_))), "{normal:?}");
        }
        assert!(matches!(normalize_path("//a"), Ok(Cow::Owned(_))));
        assert!(matches!(normalize_path("/%3a"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        // Every path of up to four pieces from an alphabet of tricky pieces: its normal form
        // is normal (returned borrowed, unchanged) and keeps its meaning.
        const PIECES: &[&str] = &["/", ".", "..", "%2e", "%2E", "a", "%7e", "%3a", ";", "%41", " ", "%"];
        let mut paths = vec![String::from("/")];
        for _ in 0..4 {
            let longer: Vec<String> = paths.iter().flat_map(|path| PIECES.iter().map(move |piece| format!("{path}{piece}"))).collect();
            paths.extend(longer);
        }
        for path in &paths {
            let Ok(normal) = normalize_path(path) else {
                continue;
            };
            let again = normalize_path(&normal).expect("a normal path is valid");
            assert!(matches!(again, Cow::Borrowed(_)), "{path:?} gave {normal:?}, not normal");
            assert!(!normal.contains("//"), "{path:?} gave {normal:?}");
            assert!(normal.split('/').all(|segment| segment != "." && segment != ".."), "{path:?} gave {normal:?}");
        }
    }
}
