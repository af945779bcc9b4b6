//! `generate man|bash|zsh|fish|elvish|powershell`, a hidden subcommand of both binaries: the man
//! page or a shell's completion script, from the same clap definition the binary parses with,
//! so neither can drift from the options. `scripts/gen-docs` writes them to `contrib/`, where a
//! test checks they are current; packages install them from there.

use std::io::Write;

use clap::ValueEnum;

/// What `generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page (roff).
    Man,
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// Writes `what` for the command `command` to stdout; a man page goes in `man_section` (8 for
/// the daemon, 1 for the tool).
pub fn print(mut command: clap::Command, what: Generated, man_section: &str) -> anyhow::Result<()> {
    let name = command.get_name().to_string();
    let mut out = std::io::stdout().lock();
    let shell = match what {
        Generated::Man => {
            clap_mangen::Man::new(command)
                .section(man_section.to_string())
                .render(&mut out)?;
            return Ok(out.flush()?);
        }
        Generated::Bash => clap_complete::Shell::Bash,
        Generated::Zsh => clap_complete::Shell::Zsh,
        Generated::Fish => clap_complete::Shell::Fish,
        Generated::Elvish => clap_complete::Shell::Elvish,
        Generated::Powershell => clap_complete::Shell::PowerShell,
    };
    clap_complete::generate(shell, &mut command, name, &mut out);
    Ok(out.flush()?)
}
