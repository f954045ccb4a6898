//! The access log's line: one JSON object per request, and where lines go.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::{Record, RequestLine};
use crate::json_string;
use crate::settings::{AccessLogConfig, AccessLogTarget};

/// The lines' time: RFC 3339 in UTC to the millisecond. The text of a second is kept for
/// the lines that follow in the same second, as formatting a date costs as much as a
/// quarter of the line.
#[derive(Debug, Default)]
pub struct Clock {
    /// The second `text` writes (seconds since the epoch), and `YYYY-MM-DDTHH:MM:SS`.
    second: Option<(u64, [u8; 19])>,
}

impl Clock {
    /// Append `since_epoch` (a wall-clock time).
    fn write(&mut self, since_epoch: Duration, out: &mut Vec<u8>) {
        let second = since_epoch.as_secs();
        let text = match self.second {
            Some((kept, text)) if kept == second => text,
            _ => {
                let time = i64::try_from(second).ok().and_then(|s| jiff::Timestamp::from_second(s).ok()).unwrap_or(jiff::Timestamp::MAX);
                let mut text = [b'0'; 19];
                // `YYYY-MM-DDTHH:MM:SSZ` for every second from the epoch to year 9999.
                let written = time.to_string();
                text.copy_from_slice(&written.as_bytes()[..19]);
                self.second = Some((second, text));
                text
            }
        };
        out.extend_from_slice(&text);
        let [point, hundreds, tens, ones] = FRACTIONS[since_epoch.subsec_millis() as usize];
        out.extend_from_slice(&[point, hundreds, tens, ones, b'Z']);
    }
}

/// A number of thousandths (0 to 999) as a decimal fraction, `.ddd`: read from a table
/// rather than worked out digit by digit, which took three divisions (each of the line's
/// four times has one).
const FRACTIONS: [[u8; 4]; 1000] = {
    let mut fractions = [[b'.', b'0', b'0', b'0']; 1000];
    let mut n = 0;
    while n < 1000 {
        fractions[n] = [b'.', b'0' + (n / 100) as u8, b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    fractions
};

/// Each octet's decimal digits followed by a dot, and how many bytes that is.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut octets = [([0; 4], 0); 256];
    let mut octet = 0;
    while octet < 256 {
        let digits = [(octet / 100) as u8, (octet / 10 % 10) as u8, (octet % 10) as u8];
        let skip = if octet >= 100 {
            0
        } else if octet >= 10 {
            1
        } else {
            2
        };
        let mut text = [b'.'; 4];
        let mut i = skip;
        while i < 3 {
            text[i - skip] = b'0' + digits[i];
            i += 1;
        }
        octets[octet] = (text, (4 - skip) as u8);
        octet += 1;
    }
    octets
};

/// Append the line of `record`, whose request is `line`, answered `at` (since the Unix
/// epoch). Written by hand rather than through serde: the field names are constants, the
/// route's members are written once per route ([`crate::exchange::RouteInfo`]) and most
/// values need no escaping, which makes a line cost a fraction of what serde_json took (the
/// records thread's share of a request with the log on).
pub fn write(clock: &mut Clock, at: Duration, record: &Record, line: &RequestLine, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    clock.write(at, out);
    out.push(b'"');
    if let Some(id) = line.trace_id {
        let mut text = *b",\"trace_id\":\"00000000000000000000000000000000\"";
        text[13..45].copy_from_slice(&crate::contract::hex::encode_u128(u128::from_be_bytes(id)));
        out.extend_from_slice(&text);
    }
    out.extend_from_slice(b",\"client\":\"");
    match line.client {
        // Through `Display` an IPv4 address costs as much as the rest of the line; here each
        // octet is four bytes of a table (its digits and a dot) and how many of them count.
        IpAddr::V4(v4) => {
            let (mut text, mut len) = ([0u8; 16], 0);
            for octet in v4.octets() {
                let (digits, count) = OCTETS[usize::from(octet)];
                text[len..len + 4].copy_from_slice(&digits);
                len += usize::from(count);
            }
            out.extend_from_slice(&text[..len - 1]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
    // A method is a token, which holds nothing JSON escapes.
    out.extend_from_slice(b"\",\"method\":\"");
    out.extend_from_slice(line.method.as_str().as_bytes());
    out.extend_from_slice(b"\",\"path\":\"");
    json_string::write_bytes(out, line.path.as_bytes());
    // A status code has three digits (`http::StatusCode` holds 100 to 999).
    let status = record.status;
    out.extend_from_slice(b"\",\"status\":");
    out.extend_from_slice(&[b'0' + (status / 100 % 10) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8]);
    if let Some(route) = &record.route {
        out.extend_from_slice(route.log_members());
    }
    for (key, value) in [(&b",\"application\":\""[..], &record.application), (b",\"subscription\":\"", &record.subscription)] {
        if let Some(value) = value {
            out.extend_from_slice(key);
            json_string::write(out, value);
            out.push(b'"');
        }
    }
    // The durations and the line's end, written on the stack and appended at once.
    let mut tail = [0u8; TAIL];
    let mut at = millis(&mut tail, 0, b",\"duration_ms\":", record.duration);
    if let Some(upstream) = record.upstream {
        at = millis(&mut tail, at, b",\"upstream_ms\":", upstream);
    }
    at = millis(&mut tail, at, b",\"policy_ms\":", record.policy);
    tail[at..at + 2].copy_from_slice(b"}\n");
    out.extend_from_slice(&tail[..at + 2]);
}

/// The most a duration takes: a key of at most 16 bytes, u64::MAX µs (17 digits of
/// milliseconds), the point and 3 decimals.
const MILLIS: usize = 16 + 17 + 4;
/// The line's three durations and its end.
const TAIL: usize = 3 * MILLIS + 2;

/// Write `opening` (`,"key":`, at most 16 bytes) then milliseconds with microsecond
/// precision into `text` from `at`; returns where they end. Inlined, so that `opening` is a
/// constant.
#[inline(always)]
fn millis(text: &mut [u8], at: usize, opening: &[u8], duration: Duration) -> usize {
    debug_assert!(opening.len() <= 16, "a key of at most 16 bytes");
    // In u64 (585,000 years), not the u128 of `as_micros`, whose division is a call.
    let micros = duration.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(duration.subsec_micros()));
    let (whole, fraction) = (micros / 1000, (micros % 1000) as usize);
    text[at..at + opening.len()].copy_from_slice(opening);
    let digits = whole.checked_ilog10().map_or(1, |log| log as usize + 1);
    let point = at + opening.len() + digits;
    let mut rest = whole;
    for digit in text[point - digits..point].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text[point..point + 4].copy_from_slice(&FRACTIONS[fraction]);
    point + 4
}

/// Where the lines of `config` go (nowhere when it is `off`), a file relative to `base_dir`.
pub fn open(config: &AccessLogConfig, base_dir: &Path) -> anyhow::Result<Option<Box<dyn Write + Send>>> {
    Ok(Some(match &config.to {
        AccessLogTarget::Off => return Ok(None),
        AccessLogTarget::Stdout => Box::new(std::io::stdout()),
        AccessLogTarget::File(path) => {
            let path = base_dir.join(path);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| anyhow::anyhow!("access_log.to: cannot open {}: {e}", path.display()))?;
            Box::new(file)
        }
    }))
}

/// Write `buffer` out and empty it; a failure is logged once until writes succeed again.
pub fn flush(out: &mut Box<dyn Write + Send>, buffer: &mut Vec<u8>, failing: bool) -> bool {
    let result = out.write_all(buffer).and_then(|()| out.flush());
    buffer.clear();
    match result {
        Ok(()) => false,
        Err(error) => {
            if !failing {
                tracing::error!(%error, "cannot write the access log; its lines are lost until it can");
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::{at, record};

    #[test]
    fn any_text_comes_back_whole_from_its_line() {
        let mut hostile = record(200);
        let mut line = hostile.line.take().unwrap();
        let path = "/\"quoted\"\\back\\slash\n\r\t\u{1}\u{1f}\u{7f}é€😀";
        line.path = crate::records::PathText::new(path);
        hostile.application = Some(String::from("\\\""));
        line.trace_id = None;
        hostile.upstream = None;
        hostile.duration = Duration::from_micros(12_345_678);
        let mut out = Vec::new();
        write(&mut Clock::default(), at(), &hostile, &line, &mut out);
        let written: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(written["path"], path);
        // Paths up to INLINE_PATH bytes are kept in the record, longer ones on the heap: both whole.
        let longest = crate::records::INLINE_PATH;
        for path in ["/".repeat(longest), format!("/{}\"", "x".repeat(longest - 1))] {
            line.path = crate::records::PathText::new(&path);
            out.clear();
            write(&mut Clock::default(), at(), &hostile, &line, &mut out);
            let written: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written["path"], path);
        }
        assert_eq!(written["application"], "\\\"");
        assert_eq!(written["duration_ms"], 12_345.678);
        assert!(written.get("trace_id").is_none() && written.get("upstream_ms").is_none(), "{written}");
        for client in ["0.0.0.0", "255.255.255.255", "192.168.10.7", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"] {
            line.client = client.parse().unwrap();
            out.clear();
            write(&mut Clock::default(), at(), &hostile, &line, &mut out);
            let written: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written["client"], client);
        }
    }

    #[test]
    fn durations_are_written_in_milliseconds_to_the_microsecond() {
        let written = |opening: &[u8], duration| {
            let mut text = [b'-'; MILLIS + 1];
            let end = millis(&mut text, 1, opening, duration);
            assert_eq!(text[0], b'-', "nothing before where it starts");
            String::from_utf8(text[1..end].to_vec()).unwrap()
        };
        for (micros, text) in
            [(0, "0.000"), (7, "0.007"), (999, "0.999"), (1_000, "1.000"), (10_250, "10.250"), (u64::MAX, "18446744073709551.615")]
        {
            assert_eq!(written(b"", Duration::from_micros(micros)), text);
        }
        assert_eq!(written(b"", Duration::MAX), "18446744073709551.615", "saturates");
        assert_eq!(
            written(b",\"duration_ms\":", Duration::MAX),
            ",\"duration_ms\":18446744073709551.615",
            "the longest key with the most digits"
        );
        // Three of the longest, after what was there, and the line's end still fit.
        let mut tail = [b'-'; TAIL];
        let mut at = 0;
        for _ in 0..3 {
            at = millis(&mut tail, at, b",\"upstream_ms\":", Duration::MAX);
        }
        assert!(at + 2 <= TAIL);
        assert_eq!(String::from_utf8(tail[..at].to_vec()).unwrap(), ",\"upstream_ms\":18446744073709551.615".repeat(3));
    }

    #[test]
    fn the_time_of_lines_follows_the_clock_across_seconds() {
        let mut clock = Clock::default();
        for (at_ms, text) in [
            (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
            (1_700_000_000_999, "2023-11-14T22:13:20.999Z"),
            (1_700_000_001_000, "2023-11-14T22:13:21.000Z"),
            (1_700_000_000_005, "2023-11-14T22:13:20.005Z"),
            (0, "1970-01-01T00:00:00.000Z"),
        ] {
            let mut out = Vec::new();
            clock.write(Duration::from_millis(at_ms), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn a_line_is_one_json_object() {
        let mut out = Vec::new();
        let record = record(200);
        write(&mut Clock::default(), at(), &record, record.line.as_ref().unwrap(), &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"time": "2023-11-14T22:13:20.123Z", "trace_id": "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b", "client": "10.0.0.7",
                "method": "GET", "path": "/pets/v1/items/\"1\"", "status": 200, "api": "pets", "api_version": "v1",
                "operation": "GET /items/{id}", "application": "app-1", "duration_ms": 2.5, "upstream_ms": 1.25, "policy_ms": 0.04})
        );
    }
}
