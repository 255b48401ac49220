//! `element-info` output: the expanded element list, and the eval-able bash of
//! `--env` that DIB's `disk-image-create` and many elements consume.
//!
//! The `--env` text matches DIB's `_output_env_vars` line for line, so
//! scripts written against DIB keep working; the differences are that the order
//! is sorted (DIB's is a Python set's) and that names and paths needing quotes
//! are quoted, where DIB would emit broken shell.

use std::fmt::Write as _;

use crate::elements::Resolution;

/// The default output: expanded names, space-separated, sorted.
pub fn names_line(res: &Resolution) -> String {
    res.names().collect::<Vec<_>>().join(" ")
}

/// The three values of `--env`: `IMAGE_ELEMENT`, `IMAGE_ELEMENT_YAML`, and
/// the double-quoted argument of `get_image_element_array`'s echo. Builds
/// export the same values to hooks.
pub fn env_script_parts(res: &Resolution) -> (String, String, String) {
    let mut yaml = String::new();
    let mut array = String::new();
    for e in &res.elements {
        let path = e.path.to_string_lossy();
        // Same shape as PyYAML's safe_dump of a flat mapping: `key: value\n`.
        let _ = writeln!(yaml, "{}: {}", yaml_scalar(&e.name), yaml_scalar(&path));
        // See shell_word for why these words hold no whitespace.
        let _ = write!(array, "[{}]={} ", shell_word(&e.name), shell_word(&path));
    }
    (names_line(res), yaml, double_quote(&array))
}

/// `export IMAGE_ELEMENT=...`, `export IMAGE_ELEMENT_YAML=...` and the exported
/// function `get_image_element_array`.
pub fn env_script(res: &Resolution) -> String {
    let (names, yaml, array) = env_script_parts(res);
    let mut out = String::new();
    let _ = writeln!(out, "export IMAGE_ELEMENT={}", single_quote(&names));
    let _ = writeln!(out, "export IMAGE_ELEMENT_YAML={}", single_quote(&yaml));
    let _ = writeln!(
        out,
        "function get_image_element_array {{\n  echo {array}\n}};\nexport -f get_image_element_array;"
    );
    out
}

/// A bash single-quoted string; `'` is written `'\''`.
pub fn single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A bash double-quoted string with `\`, `"`, `$` and `` ` `` escaped.
fn double_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Characters that need no quoting in a shell word or a YAML plain scalar.
fn is_plain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+')
}

/// One shell word that survives being word-split and re-parsed: consumers run
/// `eval declare -A a=($(get_image_element_array))`, where the unquoted
/// `$(...)` is split on whitespace *before* eval sees any quotes. So a word
/// that needs quoting becomes `$'...'` with every byte outside the plain set
/// escaped, and holds no whitespace for the split to act on.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| is_plain_char(c) || matches!(c, ',' | ':' | '=' | '@' | '%'))
    {
        return s.to_string();
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        if is_plain_char(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('\'');
    out
}

/// A YAML scalar: plain when it cannot be read as anything but this string,
/// else double-quoted with escapes (single quotes would fold newlines).
fn yaml_scalar(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && s.chars().all(is_plain_char)
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::ResolvedElement;
    use std::collections::BTreeMap;

    fn res(items: &[(&str, &str)]) -> Resolution {
        Resolution {
            elements: items
                .iter()
                .map(|(n, p)| ResolvedElement {
                    name: n.to_string(),
                    path: p.into(),
                })
                .collect(),
            provided: BTreeMap::new(),
        }
    }

    #[test]
    fn env_script_matches_dib_shape() {
        let r = res(&[("base", "/e/base"), ("debian", "/e/debian")]);
        assert_eq!(
            env_script(&r),
            "export IMAGE_ELEMENT='base debian'\n\
             export IMAGE_ELEMENT_YAML='base: /e/base\ndebian: /e/debian\n'\n\
             function get_image_element_array {\n  echo \"[base]=/e/base [debian]=/e/debian \"\n};\n\
             export -f get_image_element_array;\n"
        );
    }

    #[test]
    fn yaml_scalars() {
        let cases = [
            ("/a/b-c_d.e", "/a/b-c_d.e"),
            ("base", "base"),
            ("a b", r#""a b""#),
            ("yes", r#""yes""#),
            ("1.5", r#""1.5""#),
            ("0x10", r#""0x10""#),
            ("2020-01-01", r#""2020-01-01""#),
            ("-x", r#""-x""#),
            ("it's \"q\" \\", r#""it's \"q\" \\""#),
            ("a\nb", r#""a\nb""#),
        ];
        for (input, want) in cases {
            assert_eq!(yaml_scalar(input), want, "{input:?}");
            let back: String = serde_yaml_ng::from_str(&yaml_scalar(input)).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/a/b"), "/a/b");
        assert_eq!(shell_word("a b"), r"$'a\x20b'");
        assert_eq!(shell_word("it's\n"), r"$'it\x27s\x0a'");
        assert_eq!(shell_word("é"), r"$'\xc3\xa9'");
    }
}
