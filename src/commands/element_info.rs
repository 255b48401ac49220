//! `dib element-info` / `element-info`.

use anyhow::Result;

use crate::cli::ElementInfoArgs;
use crate::config::{process_env, Arch};
use crate::element_info::{env_script, names_line};
use crate::elements::resolve;

pub fn run(args: &ElementInfoArgs) -> Result<()> {
    let env = process_env();
    // Like DIB's element-info, the build's ARCH decides vm's default block device.
    let arch = Arch::from_env(&env)?;
    let set = super::load_elements(&env)?;
    let resolution = resolve(&set, &args.elements, arch.as_str())?;
    if args.env {
        print!("{}", env_script(&resolution));
    } else {
        println!("{}", names_line(&resolution));
    }
    Ok(())
}
