//! `dib lint`: report findings, exit 1 when there are any.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{ensure, Context as _, Result};

use crate::cli::LintArgs;
use crate::config::process_env;
use crate::lint::{is_element_dir, lint_element};

pub fn run(args: &LintArgs) -> Result<ExitCode> {
    // Search path entries are directories of elements by definition; an
    // argument may be either, and is guessed from its contents.
    let (roots, guess) = if args.dirs.is_empty() {
        let env = process_env();
        (super::load_elements(&env)?.search_path().to_vec(), false)
    } else {
        (args.dirs.clone(), true)
    };
    let mut elements = Vec::new();
    for root in roots {
        ensure!(
            root.is_dir(),
            "{root:?} is not a directory: give element directories or directories of elements"
        );
        if guess && is_element_dir(&root) {
            elements.push(root);
            continue;
        }
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .with_context(|| format!("reading {root:?}"))?
            .filter_map(|d| d.ok())
            .filter(|d| !d.file_name().to_string_lossy().starts_with('.'))
            .map(|d| d.path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        elements.extend(subdirs);
    }
    let mut total = 0;
    for el in &elements {
        for f in lint_element(el)? {
            println!("{f}");
            total += 1;
        }
    }
    eprintln!(
        "dib lint: {total} finding(s) in {} element(s)",
        elements.len()
    );
    Ok(if total == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
