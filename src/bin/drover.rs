//! `drover`: the command-line client.

fn main() -> std::process::ExitCode {
    drover::cli::main()
}
