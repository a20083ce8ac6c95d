//! Bytes as users type them (`--send 'EHLO x\r\n'`) and bytes as users read them (banners).

/// Why an escaped string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    /// A backslash followed by something that is not a known escape.
    #[error("invalid escape '\\{0}' at byte {1}: use \\r \\n \\t \\0 \\\\ or \\xHH")]
    Unknown(String, usize),
    /// `\x` not followed by two hex digits.
    #[error("invalid escape at byte {0}: \\x needs two hex digits")]
    BadHex(usize),
    /// A lone backslash at the end.
    #[error("dangling backslash at the end")]
    Dangling,
}

/// Decodes `\r \n \t \0 \\ \xHH` escapes into bytes; every other character stands for its UTF-8
/// bytes.
pub fn parse_escapes(text: &str) -> Result<Vec<u8>, EscapeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = bytes.get(i + 1) else {
            return Err(EscapeError::Dangling);
        };
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = bytes.get(i + 2..i + 4).ok_or(EscapeError::BadHex(i))?;
                let s = std::str::from_utf8(hex).map_err(|_| EscapeError::BadHex(i))?;
                let v = u8::from_str_radix(s, 16).map_err(|_| EscapeError::BadHex(i))?;
                out.push(v);
                i += 4;
                continue;
            }
            _ => {
                let ch = text[i + 1..].chars().next().unwrap_or('?');
                return Err(EscapeError::Unknown(ch.to_string(), i));
            }
        }
        i += 2;
    }
    Ok(out)
}

/// Renders bytes for people: printable ASCII as is, `\r \n \t` as escapes, everything else as
/// `\xHH`; at most `max_chars` characters of output, with `...` when cut.
pub fn printable(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(max_chars) + 3);
    for &b in bytes {
        let piece: &str;
        let hex;
        match b {
            b'\r' => piece = "\\r",
            b'\n' => piece = "\\n",
            b'\t' => piece = "\\t",
            b'\\' => piece = "\\\\",
            0x20..=0x7e => {
                if out.len() + 1 > max_chars {
                    out.push_str("...");
                    return out;
                }
                out.push(b as char);
                continue;
            }
            _ => {
                hex = format!("\\x{b:02x}");
                piece = &hex;
            }
        }
        if out.len() + piece.len() > max_chars {
            out.push_str("...");
            return out;
        }
        out.push_str(piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes() {
        let table: &[(&str, &[u8])] = &[
            ("PING\\r\\n", b"PING\r\n"),
            ("a\\tb", b"a\tb"),
            ("\\x00\\xff\\x7F", &[0, 0xff, 0x7f]),
            ("back\\\\slash", b"back\\slash"),
            ("nul\\0", b"nul\0"),
            ("", b""),
            ("héllo", "héllo".as_bytes()),
        ];
        for (text, want) in table {
            assert_eq!(parse_escapes(text).as_deref(), Ok(*want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_escapes() {
        assert_eq!(
            parse_escapes("a\\q"),
            Err(EscapeError::Unknown("q".into(), 1))
        );
        assert_eq!(parse_escapes("\\x4"), Err(EscapeError::BadHex(0)));
        assert_eq!(parse_escapes("\\xzz"), Err(EscapeError::BadHex(0)));
        assert_eq!(parse_escapes("end\\"), Err(EscapeError::Dangling));
        assert!(parse_escapes("\\é").is_err());
    }

    #[test]
    fn printable_escapes_and_caps() {
        assert_eq!(printable(b"220 mx ESMTP\r\n", 100), "220 mx ESMTP\\r\\n");
        assert_eq!(printable(&[0, 0xff, b'a'], 100), "\\x00\\xffa");
        assert_eq!(printable(b"abcdef", 3), "abc...");
        assert!(printable(&[0u8; 1000], 64).len() <= 67);
    }
}
