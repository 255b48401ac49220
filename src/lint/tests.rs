use std::path::Path;

use super::scripts::{has_order_prefix, interpreter, set_flags};
use super::shell::heredoc_delimiter;
use super::text::{check_defaults, check_indent};

#[test]
fn set_flag_spellings() {
    assert_eq!(
        set_flags("set -eu -o pipefail\n"),
        (true, true, true, false)
    );
    assert_eq!(set_flags("set -euo pipefail\n"), (true, true, true, false));
    assert_eq!(
        set_flags("set -e\nset -u\nset -o pipefail\n"),
        (true, true, true, false)
    );
    assert_eq!(
        set_flags("set -o errexit -o nounset\n"),
        (true, true, false, false)
    );
    assert_eq!(set_flags("  set -x\n"), (false, false, false, true));
    assert_eq!(
        set_flags("# set -eu\necho set -e\n"),
        (false, false, false, false)
    );
}

#[test]
fn interpreters() {
    assert_eq!(interpreter("#!/bin/bash"), Some("bash"));
    assert_eq!(interpreter("#!/usr/bin/env bash"), Some("bash"));
    assert_eq!(interpreter("#! /bin/sh -e"), Some("sh"));
    assert_eq!(interpreter("#!/usr/bin/env -S python3 -u"), Some("python3"));
    assert_eq!(interpreter("echo hi"), None);
}

#[test]
fn heredocs() {
    assert_eq!(heredoc_delimiter("cat <<EOF > x").as_deref(), Some("EOF"));
    assert_eq!(heredoc_delimiter("cat <<-'END'").as_deref(), Some("END"));
    assert_eq!(heredoc_delimiter("cat << \"X_1\"").as_deref(), Some("X_1"));
    assert_eq!(heredoc_delimiter("grep x <<< \"$y\""), None);
    assert_eq!(heredoc_delimiter("echo hi"), None);
    assert_eq!(
        heredoc_delimiter("cat <<END-OF-TEXT").as_deref(),
        Some("END-OF-TEXT")
    );
    assert_eq!(heredoc_delimiter("cat <<\\EOF").as_deref(), Some("EOF"));
    assert_eq!(heredoc_delimiter("x=$(( 1 << 2 ))"), None);
    assert_eq!(heredoc_delimiter("echo hi # x << 2"), None);
    assert_eq!(heredoc_delimiter("echo '<<EOF'"), None);
}

#[test]
fn order_prefix() {
    assert!(has_order_prefix("10-foo"));
    assert!(has_order_prefix("100-foo"));
    assert!(!has_order_prefix("1-foo"));
    assert!(!has_order_prefix("foo"));
    assert!(!has_order_prefix("10foo"));
}

#[test]
fn indentation_skips_content_lines() {
    let text = "#!/bin/bash\nx=$(( 1 << 2 ))\n   odd\nawk '\n  { print }\n'\ncat <<\\EOF\n  body\nEOF\ncat <<END-X\n  body\nEND-X\n  odd\n";
    let mut out = Vec::new();
    check_indent(Path::new("s"), text, &mut out);
    let lines: Vec<_> = out.iter().map(|f| f.line.unwrap()).collect();
    assert_eq!(lines, vec![3, 13]);
}

#[test]
fn indentation() {
    let text =
        "#!/bin/bash\nif x; then\n    y\n  z\nfi\ncat <<EOF\n  free\nEOF\nfoo \\\n   --bar\n";
    let mut out = Vec::new();
    check_indent(Path::new("s"), text, &mut out);
    let lines: Vec<_> = out.iter().map(|f| f.line.unwrap()).collect();
    assert_eq!(lines, vec![4]);
}

#[test]
fn defaults() {
    let text = "export DIB_RELEASE=${DIB_RELEASE:-bookworm}\nexport RELEASE=${RELEASE:-x}\nFOO=\"${FOO:=y}\"\nexport DISTRO_NAME=debian\n";
    let mut out = Vec::new();
    check_defaults(Path::new("e"), text, &mut out);
    let got: Vec<_> = out
        .iter()
        .map(|f| (f.line.unwrap(), f.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                2,
                "overridable default 'RELEASE' should be DIB_-prefixed (DIB_RELEASE)"
            ),
            (
                3,
                "overridable default 'FOO' should be DIB_-prefixed (DIB_FOO)"
            ),
        ]
    );
}
