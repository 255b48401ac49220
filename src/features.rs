//! What a build may ask for that this version of dib does not build.
//!
//! Every flag and output type of DIB's disk-image-create is parsed and
//! validated, but a few are not built yet. Rather than ignore one, a build
//! that asks for any of them fails before doing anything, listing each.

use crate::config::{BuildConfig, Mode};

/// Everything `config` asks for that this version cannot build, each with
/// why, in a stable order. `final_image` is false when the element set has
/// `no-final-image`: then no output is written and the output types need
/// nothing.
pub fn unsupported(config: &BuildConfig, final_image: bool) -> Vec<String> {
    let mut out = Vec::new();
    if final_image && config.mode != Mode::Ramdisk {
        for t in config.output_types.iter().filter(|t| !t.is_written()) {
            out.push(format!(
                "output type '{t}' (dib writes no OCI images; -t tar gives the tree)"
            ));
        }
    }
    out
}

/// Fail with everything unsupported listed, or succeed when there is none.
pub fn require(config: &BuildConfig, final_image: bool) -> anyhow::Result<()> {
    let missing = unsupported(config, final_image);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing.iter().map(|m| format!("  - {m}")).collect();
    anyhow::bail!(
        "not supported by this version of dib:\n{}",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{BlockBackend, CreateArgs};
    use crate::config::Env;

    fn config(args: CreateArgs) -> BuildConfig {
        let env: Env = [("HOME".to_string(), "/h".to_string())].into();
        BuildConfig::new(Mode::Disk, &args, &env, vec![]).unwrap()
    }

    #[test]
    fn everything_unsupported_is_listed_and_nothing_else() {
        let args = CreateArgs {
            elements: vec!["x".into()],
            types: vec!["qcow2".into(), "oci".into()],
            packages: vec!["vim".into()],
            block_backend: BlockBackend::Helper,
            uncompressed: true,
            trace: 2,
            no_tmpfs: true,
            root_label: Some("root".into()),
            ..Default::default()
        };
        let msg = require(&config(args.clone()), true)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "not supported by this version of dib:\n\
             \x20 - output type 'oci' (dib writes no OCI images; -t tar gives the tree)"
        );
        // Without a final image, output types ask for nothing.
        assert!(unsupported(&config(args.clone()), false).is_empty());
        let plain = CreateArgs {
            elements: vec!["x".into()],
            ..Default::default()
        };
        assert!(unsupported(&config(plain), true).is_empty());
    }
}
