//! Which flags apply where: the client flags (`--coordinator`, `--token-file`, `--tls`,
//! `--tls-ca`) serve every command but those that start their own coordinator.

use super::Cli;
use clap::CommandFactory;

/// The flags of a client (id and name), which every command but `local` and `bench` is.
const CLIENT_FLAGS: [(&str, &str); 4] = [
    ("coordinator", "coordinator"),
    ("token_file", "token-file"),
    ("tls", "tls"),
    ("tls_ca", "tls-ca"),
];

/// Commands that start their own coordinator: the client flags do nothing there.
const SELF_CONTAINED: [&str; 2] = ["local", "bench"];

/// The command line: the client flags are global (`drover --coordinator X status` and
/// `drover status --coordinator X` both work), except for the commands that start their own
/// coordinator, where they would do nothing: those get hidden flags of the same names, which
/// keep the global ones out of their help (clap propagates a global flag only to subcommands
/// without one of their own) and let [`parse`] refuse them with a reason.
pub(super) fn command() -> clap::Command {
    let mut command = Cli::command();
    for name in SELF_CONTAINED {
        command = command.mut_subcommand(name, |sub| {
            sub.args(CLIENT_FLAGS.map(|(id, long)| hidden_flag(id, long)))
        });
    }
    command
}

/// A client flag, hidden, for a command where it does nothing.
fn hidden_flag(id: &'static str, long: &'static str) -> clap::Arg {
    let action = if id == "tls" {
        clap::ArgAction::SetTrue
    } else {
        clap::ArgAction::Set
    };
    clap::Arg::new(id).long(long).hide(true).action(action)
}

/// Parses the command line; a client flag given to a command that starts its own coordinator is
/// refused rather than silently ignored (set in the environment, it is ignored: it is there for
/// the other commands).
pub(super) fn parse(
    command: clap::Command,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Cli, clap::Error> {
    use clap::parser::ValueSource;
    use clap::FromArgMatches;
    let mut command = command;
    let matches = command.try_get_matches_from_mut(args)?;
    if let Some((name, sub)) = matches.subcommand() {
        if SELF_CONTAINED.contains(&name) {
            for (id, long) in CLIENT_FLAGS {
                if sub.value_source(id) == Some(ValueSource::CommandLine) {
                    return Err(command.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "--{long} does nothing with `drover {name}`, which starts its own coordinator"
                        ),
                    ));
                }
            }
        }
    }
    Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(command(), args.iter().map(std::ffi::OsString::from))
    }

    fn help_of(name: &str) -> String {
        let mut command = command();
        // Global flags reach the subcommands when the command is built.
        command.build();
        command
            .find_subcommand_mut(name)
            .expect("a subcommand")
            .render_help()
            .to_string()
    }

    #[test]
    fn cancel_without_a_target_names_both_ways_to_give_one() {
        let error = parse_args(&["drover", "cancel"]).err().expect("refused");
        let text = error.to_string();
        assert!(text.contains("--batch") && text.contains("--job"), "{text}");
        assert!(parse_args(&["drover", "cancel", "--job", "3"]).is_ok());
        assert!(parse_args(&["drover", "cancel", "--batch", "1", "--job", "3"]).is_err());
    }

    #[test]
    fn results_and_follow_take_their_flags_and_the_client_flags() {
        for args in [
            &["drover", "results"][..],
            &[
                "drover", "results", "--batch", "3", "--after", "12", "--follow", "--json",
            ],
            &["drover", "results", "--follow", "--coordinator", "h:1"],
            &["drover", "submit", "jobs.jsonl", "--follow", "--json"],
            &["drover", "submit", "jobs.jsonl", "--wait", "--follow"],
        ] {
            assert!(parse_args(args).is_ok(), "{args:?}");
        }
        assert!(help_of("results").contains("--tls-ca"));
        // A cursor is a number; --after and --follow are not run's or job's.
        for args in [
            &["drover", "results", "--after", "abc"][..],
            &["drover", "job", "3", "--follow"],
            &["drover", "run", "--after", "3", "--", "true"],
        ] {
            assert!(parse_args(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn commands_with_their_own_coordinator_list_no_client_flags() {
        for name in SELF_CONTAINED {
            let help = help_of(name);
            for flag in ["--coordinator", "--token-file", "--tls", "--tls-ca"] {
                assert!(
                    !help.contains(flag),
                    "`{name} --help` lists {flag}:\n{help}"
                );
            }
        }
        let help = help_of("status");
        assert!(
            help.contains("--coordinator") && help.contains("--tls-ca"),
            "{help}"
        );
        // Before or after the command, for the commands they serve.
        assert!(parse_args(&["drover", "--coordinator", "h:1", "status"]).is_ok());
        assert!(parse_args(&["drover", "status", "--coordinator", "h:1"]).is_ok());
        for (flag, value) in [("--coordinator", Some("h:1")), ("--tls", None)] {
            let mut args = vec!["drover", "local", flag];
            args.extend(value);
            args.push("jobs.jsonl");
            let error = parse_args(&args).err().expect("refused");
            assert!(
                error
                    .to_string()
                    .contains(&format!("{flag} does nothing with `drover local`")),
                "{error}"
            );
        }
        assert!(parse_args(&["drover", "local", "jobs.jsonl"]).is_ok());
    }
}
