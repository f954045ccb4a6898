//! Strings that match a pattern of the subset the document uses: anchors, literals,
//! classes (ranges, negation, `\d \w \s \S`), `.`, groups with alternation, and the
//! quantifiers `? * + {n} {m,} {m,n}`. A pattern outside it fails the test, naming it.

use rand::Rng;
use rand::rngs::StdRng;

/// Alternatives, each a sequence of pieces.
pub struct Pattern(Vec<Vec<Piece>>);

struct Piece {
    node: Node,
    min: usize,
    max: usize,
}

enum Node {
    Literal(char),
    Class { ranges: Vec<(char, char)>, negated: bool },
    Group(Pattern),
}

/// What a negated class or `.` picks from.
const PRINTABLE: &str = " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~é";

pub fn parse(pattern: &str) -> Result<Pattern, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut at = 0;
    let parsed = alternatives(&chars, &mut at)?;
    if at != chars.len() {
        return Err(format!("an unmatched `)` at {at}"));
    }
    Ok(parsed)
}

fn alternatives(chars: &[char], at: &mut usize) -> Result<Pattern, String> {
    let mut all = vec![Vec::new()];
    while *at < chars.len() {
        let node = match chars[*at] {
            ')' => break,
            '|' => {
                *at += 1;
                all.push(Vec::new());
                continue;
            }
            '^' | '$' => {
                *at += 1;
                continue;
            }
            '(' => {
                *at += 1;
                if chars[*at..].starts_with(&['?', ':']) {
                    *at += 2;
                }
                let inner = alternatives(chars, at)?;
                if chars.get(*at) != Some(&')') {
                    return Err("an unclosed `(`".to_owned());
                }
                *at += 1;
                Node::Group(inner)
            }
            '[' => class(chars, at)?,
            '.' => {
                *at += 1;
                Node::Class { ranges: vec![('\n', '\n')], negated: true }
            }
            '\\' => {
                let escaped = *chars.get(*at + 1).ok_or("a trailing `\\`")?;
                *at += 2;
                match shorthand(escaped) {
                    Some((ranges, negated)) => Node::Class { ranges, negated },
                    None => Node::Literal(escape(chars, at, escaped)?),
                }
            }
            c @ ('*' | '+' | '?' | '{') => return Err(format!("a quantifier `{c}` with nothing before it")),
            c => {
                *at += 1;
                Node::Literal(c)
            }
        };
        let (min, max) = quantifier(chars, at)?;
        all.last_mut().expect("a sequence").push(Piece { node, min, max });
    }
    Ok(Pattern(all))
}

fn shorthand(c: char) -> Option<(Vec<(char, char)>, bool)> {
    let word = vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
    let space = vec![(' ', ' '), ('\t', '\t'), ('\n', '\n'), ('\r', '\r')];
    Some(match c {
        'd' => (vec![('0', '9')], false),
        'D' => (vec![('0', '9')], true),
        'w' => (word, false),
        'W' => (word, true),
        's' => (space, false),
        'S' => (space, true),
        _ => return None,
    })
}

/// The character an escape stands for, reading the two hex digits of `\xHH` after `at`.
fn escape(chars: &[char], at: &mut usize, escaped: char) -> Result<char, String> {
    if escaped != 'x' {
        return Ok(escaped);
    }
    let hex: String = chars.get(*at..*at + 2).ok_or("a short `\\x`")?.iter().collect();
    *at += 2;
    u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or_else(|| format!("a bad escape `\\x{hex}`"))
}

fn class(chars: &[char], at: &mut usize) -> Result<Node, String> {
    *at += 1;
    let negated = chars.get(*at) == Some(&'^');
    if negated {
        *at += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(*at).ok_or("an unclosed `[`")?;
        if c == ']' && !first {
            *at += 1;
            break;
        }
        first = false;
        let low = if c == '\\' {
            let escaped = *chars.get(*at + 1).ok_or("a trailing `\\`")?;
            *at += 2;
            if let Some((more, false)) = shorthand(escaped) {
                ranges.extend(more);
                continue;
            }
            escape(chars, at, escaped)?
        } else {
            *at += 1;
            c
        };
        if chars.get(*at) == Some(&'-') && chars.get(*at + 1).is_some_and(|c| *c != ']') {
            let mut high = chars[*at + 1];
            *at += 2;
            if high == '\\' {
                let escaped = *chars.get(*at).ok_or("a trailing `\\`")?;
                *at += 1;
                high = escape(chars, at, escaped)?;
            }
            ranges.push((low, high));
        } else {
            ranges.push((low, low));
        }
    }
    Ok(Node::Class { ranges, negated })
}

fn quantifier(chars: &[char], at: &mut usize) -> Result<(usize, usize), String> {
    let bounds = match chars.get(*at) {
        Some('?') => (0, 1),
        Some('*') => (0, 24),
        Some('+') => (1, 24),
        Some('{') => {
            let end = chars[*at..].iter().position(|c| *c == '}').ok_or("an unclosed `{`")? + *at;
            let inside: String = chars[*at + 1..end].iter().collect();
            let number = |text: &str| text.trim().parse::<usize>().map_err(|_| format!("a bad repetition `{{{inside}}}`"));
            let bounds = match inside.split_once(',') {
                None => (number(&inside)?, number(&inside)?),
                Some((low, "")) => (number(low)?, number(low)? + 4),
                Some((low, high)) => (number(low)?, number(high)?),
            };
            *at = end;
            bounds
        }
        _ => return Ok((1, 1)),
    };
    *at += 1;
    if chars.get(*at) == Some(&'?') {
        *at += 1;
    }
    Ok(bounds)
}

impl Pattern {
    pub fn generate(&self, rng: &mut StdRng) -> String {
        let mut out = String::new();
        self.write(rng, &mut out);
        out
    }

    fn write(&self, rng: &mut StdRng, out: &mut String) {
        let sequence = &self.0[rng.gen_range(0..self.0.len())];
        for piece in sequence {
            for _ in 0..rng.gen_range(piece.min..=piece.max) {
                match &piece.node {
                    Node::Literal(c) => out.push(*c),
                    Node::Group(inner) => inner.write(rng, out),
                    Node::Class { ranges, negated: false } => {
                        let (low, high) = ranges[rng.gen_range(0..ranges.len())];
                        let c = rng.gen_range(u32::from(low)..=u32::from(high));
                        out.push(char::from_u32(c).unwrap_or(low));
                    }
                    Node::Class { ranges, negated: true } => {
                        let allowed: Vec<char> =
                            PRINTABLE.chars().filter(|c| !ranges.iter().any(|(low, high)| (low..=high).contains(&c))).collect();
                        out.push(allowed[rng.gen_range(0..allowed.len())]);
                    }
                }
            }
        }
    }
}
