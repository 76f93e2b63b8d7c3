//! The command line itself (issue 22): `zo-hpc --help` lists each command in one
//! line, the long text stays in `zo-hpc CMD --help`.
mod common;
use common::*;

#[test]
fn help_lists_each_command_in_one_line_and_keeps_the_long_text_per_command() {
    let o = zo(&["--help"]);
    assert_ok(&o);
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    let names: Vec<&str> = commands
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["prepare", "train", "eval", "export", "gradcheck", "report", "help"],
        "{help}"
    );
    for line in &commands {
        assert!(line.len() <= 100, "a command's line is a summary: {line:?}");
    }
    let o = zo(&["train", "--help"]);
    let long = String::from_utf8_lossy(&o.stdout);
    assert!(
        long.contains("--time-limit") && long.contains("continues along the identical trajectory"),
        "{long}"
    );
}
