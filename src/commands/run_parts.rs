//! `dib run-parts --list DIR`.

use anyhow::{ensure, Context as _, Result};

use crate::cli::RunPartsArgs;
use crate::runparts::plan_dir;

pub fn run(args: &RunPartsArgs) -> Result<()> {
    ensure!(args.dir.is_dir(), "{:?} is not a directory", args.dir);
    let (run, skipped) = plan_dir(&args.dir).with_context(|| format!("reading {:?}", args.dir))?;
    if args.verbose {
        for (path, why) in &skipped {
            eprintln!("skipping {}: {why}", path.display());
        }
    }
    for path in run {
        println!("{}", path.display());
    }
    Ok(())
}
