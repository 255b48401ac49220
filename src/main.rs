//! The `dib` binary: parse, dispatch, report.
//!
//! Multi-call: invoked as `disk-image-create`, `ramdisk-image-create`,
//! `element-info` or `disk-image-get-kernel` (symlinks the install step makes)
//! it behaves as the matching subcommand, with DIB's command name in its help;
//! as `dib-oci-unpack` (a symlink in the outside hooks' `bin/`), as the
//! oci-base element's unpacker.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Command as ClapCommand, FromArgMatches, Parser};

use dib::cli::{
    Cli, Command, CreateArgs, ElementInfoArgs, GetKernelArgs, HelperCopyArgs, OciUnpackArgs,
};
use dib::commands;
use dib::config::Mode;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let argv_strings: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invoked_as = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dib::logging::init(&invoked_as);

    let command = match invoked_as.as_str() {
        "disk-image-create" => Command::Create(parse_as::<CreateArgs>("disk-image-create", &argv)),
        "ramdisk-image-create" => {
            Command::Ramdisk(parse_as::<CreateArgs>("ramdisk-image-create", &argv))
        }
        "element-info" => Command::ElementInfo(parse_as::<ElementInfoArgs>("element-info", &argv)),
        "disk-image-get-kernel" => {
            Command::GetKernel(parse_as::<GetKernelArgs>("disk-image-get-kernel", &argv))
        }
        "dib-oci-unpack" => Command::OciUnpack(parse_as::<OciUnpackArgs>("dib-oci-unpack", &argv)),
        "dib-helper-copy" => {
            Command::HelperCopy(parse_as::<HelperCopyArgs>("dib-helper-copy", &argv))
        }
        _ => Cli::parse_from(&argv).command,
    };

    let result = match &command {
        Command::Create(a) => {
            commands::create::run(Mode::Disk, a, argv_strings).map(|()| ExitCode::SUCCESS)
        }
        Command::Ramdisk(a) => {
            commands::create::run(Mode::Ramdisk, a, argv_strings).map(|()| ExitCode::SUCCESS)
        }
        Command::ElementInfo(a) => commands::element_info::run(a).map(|()| ExitCode::SUCCESS),
        Command::GetKernel(a) => commands::get_kernel::run(a).map(|()| ExitCode::SUCCESS),
        Command::Lint(a) => commands::lint::run(a),
        Command::RunParts(a) => commands::run_parts::run(a).map(|()| ExitCode::SUCCESS),
        Command::OciUnpack(a) => commands::oci_unpack::run(a).map(|()| ExitCode::SUCCESS),
        Command::HelperCopy(a) => commands::helper_copy::run(a).map(|()| ExitCode::SUCCESS),
        Command::SandboxSupervise => return code(dib::pipeline::supervise_main()),
        Command::SandboxInit => return code(dib::pipeline::init_main()),
    };
    match result {
        Ok(code) => code,
        // pid 1 already said what went wrong, in full.
        Err(e) if e.downcast_ref::<dib::pipeline::Reported>().is_some() => code(
            e.downcast_ref::<dib::pipeline::Reported>()
                .map_or(1, |r| r.0),
        ),
        Err(e) => {
            eprintln!("{invoked_as}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// An exit code from a process status (clamped into 1..=255 for failures).
fn code(c: i32) -> ExitCode {
    match c {
        0 => ExitCode::SUCCESS,
        c => ExitCode::from(u8::try_from(c).unwrap_or(1).max(1)),
    }
}

/// Parse the whole command line as one subcommand's arguments, under DIB's name.
fn parse_as<T: Args + FromArgMatches>(name: &'static str, argv: &[OsString]) -> T {
    let cmd = T::augment_args(
        ClapCommand::new(name)
            .version(env!("CARGO_PKG_VERSION"))
            .max_term_width(100),
    );
    let matches = cmd.get_matches_from(argv);
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
