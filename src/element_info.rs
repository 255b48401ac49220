//! `element-info` output: the expanded element list, and the eval-able bash of
//! `--env` that DIB's `disk-image-create` and many elements consume.
//!
//! The `--env` text matches DIB's `_output_env_vars` line for line (SPEC §2), so
//! scripts written against DIB keep working; the differences are that the order
//! is sorted (DIB's is a Python set's) and that names and paths needing quotes
//! are quoted, where DIB would emit broken shell.

use std::fmt::Write as _;

use crate::elements::Resolution;

/// The default output: expanded names, space-separated, sorted.
pub fn names_line(res: &Resolution) -> String {
    res.names().collect::<Vec<_>>().join(" ")
}

/// `export IMAGE_ELEMENT=...`, `export IMAGE_ELEMENT_YAML=...` and the exported
/// function `get_image_element_array`.
pub fn env_script(res: &Resolution) -> String {
    let mut yaml = String::new();
    let mut array = String::new();
    for e in &res.elements {
        let path = e.path.to_string_lossy();
        // Same shape as PyYAML's safe_dump of a flat mapping: `key: value\n`.
        let _ = writeln!(yaml, "{}: {}", yaml_scalar(&e.name), yaml_scalar(&path));
        // Consumers run `eval declare -A a=($(get_image_element_array))`:
        // the words are re-parsed by eval, so shell quoting survives.
        let _ = write!(array, "[{}]={} ", shell_word(&e.name), shell_word(&path));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "export IMAGE_ELEMENT={}",
        single_quote(&names_line(res))
    );
    let _ = writeln!(out, "export IMAGE_ELEMENT_YAML={}", single_quote(&yaml));
    let _ = writeln!(
        out,
        "function get_image_element_array {{\n  echo {}\n}};\nexport -f get_image_element_array;",
        double_quote(&array)
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

fn is_plain(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | '+')
                || extra.contains(&c)
        })
}

/// One shell word: unquoted when it needs nothing, single-quoted otherwise.
pub fn shell_word(s: &str) -> String {
    if is_plain(s, &[',', ':', '=', '@', '%']) {
        s.to_string()
    } else {
        single_quote(s)
    }
}

/// A YAML scalar: plain when unambiguous, else single-quoted (`'` doubled).
fn yaml_scalar(s: &str) -> String {
    let ambiguous = s.starts_with(['-', '.', '+'])
        || matches!(
            s.to_ascii_lowercase().as_str(),
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "~"
        )
        || s.parse::<f64>().is_ok();
    if is_plain(s, &[]) && !ambiguous {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
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
        assert_eq!(yaml_scalar("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(yaml_scalar("a b"), "'a b'");
        assert_eq!(yaml_scalar("yes"), "'yes'");
        assert_eq!(yaml_scalar("1.5"), "'1.5'");
        assert_eq!(yaml_scalar("it's"), "'it''s'");
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/a/b"), "/a/b");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
