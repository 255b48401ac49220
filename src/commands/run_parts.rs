//! `dib run-parts --list DIR`.

use anyhow::{ensure, Context as _, Result};

use crate::cli::RunPartsArgs;
use crate::runparts::plan_dir;

pub fn run(args: &RunPartsArgs) -> Result<()> {
    ensure!(args.dir.is_dir(), "{:?} is not a directory", args.dir);
    let plan = plan_dir(&args.dir).with_context(|| format!("reading {:?}", args.dir))?;
    if args.verbose {
        for (path, why) in &plan.skipped {
            eprintln!("skipping {}: {why}", path.display());
        }
    }
    for path in plan.run {
        println!("{}", path.display());
    }
    Ok(())
}
