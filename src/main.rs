//! The `packager` command: parse, dispatch, render errors, exit code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
