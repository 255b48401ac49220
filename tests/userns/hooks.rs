//! How hooks run and what dib says of them: odd output, large hook trees,
//! hooks skipped with `-x`.

use libtest_mimic::Failed;

use crate::common::tier::{check, succeeded, Build};

pub fn odd_output_and_large_hook_trees_are_fine() -> Result<(), Failed> {
    let b = Build::new();
    // Not UTF-8, then more output: the hook must not die of SIGPIPE.
    b.f.file(
        "e/probe/install.d/10-latin1",
        "#!/bin/sh\nprintf 'caf\\351\\n'\nsleep 0.1\necho after\n",
        0o755,
    );
    // More hook files than fit in one environment string (128 KiB).
    for i in 0..1500 {
        b.f.file(
            &format!("e/probe/static/many/file-with-a-long-name-{i:05}"),
            "x\n",
            0o644,
        );
    }
    let o = b.run(&["tiny-os", "probe"], &[]);
    succeeded(&o)?;
    let err = String::from_utf8_lossy(&o.stderr);
    check(
        err.contains("| caf\u{fffd}\n") && err.contains("| after\n"),
        format!("stderr:\n{err}"),
    )?;
    b.assert_clean()
}

pub fn skipped_hooks_are_listed_with_x() -> Result<(), Failed> {
    let b = Build::new();
    b.f.file("e/probe/install.d/10-foo.sh", "#!/bin/sh\ntrue\n", 0o755);
    b.f.file("e/probe/install.d/20-notexec", "#!/bin/sh\ntrue\n", 0o644);
    let mut cmd = b.command(&["tiny-os", "probe"], &[]);
    cmd.arg("-x");
    let o = cmd.output()?;
    succeeded(&o)?;
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "| install.d: skipping 10-foo.sh: name has characters other than 0-9 A-Z a-z _ -\n",
        "| install.d: skipping 20-notexec: not executable\n",
    ] {
        check(
            err.contains(want),
            format!("{want:?} not in stderr:\n{err}"),
        )?;
    }
    Ok(())
}
